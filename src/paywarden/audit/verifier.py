"""Standalone verifier for Paywarden audit logs.

Imports only the Python standard library and ``cryptography``: the RFC 9162
hashing and proof checks are inlined, so this one file can be copied to an
auditor's machine and run there, trusting nothing from Paywarden's code base.
(Inlining is deliberate: it is an independent second implementation, and the
test suite checks it agrees with :mod:`paywarden.audit.merkle`.)

Usage (exit status 0 = verified, 1 = not verified or unusable input)::

    python -m paywarden.audit.verifier sth --head head.json --key pub.pem
    python -m paywarden.audit.verifier inclusion --proof proof.json --key pub.pem
    python -m paywarden.audit.verifier consistency --proof proof.json --key pub.pem \\
        [--old-head saved-head.json]
    python -m paywarden.audit.verifier log --entries export.jsonl --head head.json --key pub.pem
    python -m paywarden.audit.verifier archive --segment seg.jsonl.gz \\
        --manifest seg.manifest.json --key pub.pem

``--key`` is a PEM public key, a file holding the raw key in hex, or the JSON
written by ``paywarden audit keys export-public``; repeat it for several keys.
Input formats are those ``paywarden audit proof|sth|export`` write. Signed
message layouts: ``b"paywarden-sth-v1\\0" || service || 0x00 || u64be(tree_size)
|| u64be(timestamp_ms) || root(32) || key_id(8)``; archive manifests:
``b"paywarden-archive-v1\\0" || canonical JSON without "signature"``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

EMPTY_ROOT = hashlib.sha256(b"").digest()
_U64 = struct.Struct(">Q")


class VerificationError(Exception):
    """The input does not verify; the message says why."""


# ------------------------------------------------------------ RFC 9162


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes | None:
    """RFC 9162 §2.1.3.2."""
    if not 0 <= index < size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def consistent(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2 (plus: equal sizes need equal roots, size 0 is trivially consistent)."""
    if not 0 <= old <= new:
        return False
    if old == new:
        return not proof and old_root == new_root
    if old == 0:
        return not proof and old_root == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if old & (old - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


class Frontier:
    """Compact range: perfect-subtree roots of a tree of ``size`` leaves."""

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != bin(size).count("1"):
            raise VerificationError("a frontier needs one hash per set bit of its size")
        self.size = size
        self.hashes = list(hashes)

    def append(self, leaf: bytes) -> None:
        h, n = leaf, self.size
        while n & 1:
            h = node_hash(self.hashes.pop(), h)
            n >>= 1
        self.hashes.append(h)
        self.size += 1

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        acc = self.hashes[-1]
        for h in reversed(self.hashes[:-1]):
            acc = node_hash(h, acc)
        return acc


# ----------------------------------------------------------------- keys


def key_id_for(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).digest()[:8].hex()


def load_keys(paths: Sequence[str]) -> dict[str, bytes]:
    keys: dict[str, bytes] = {}
    for path in paths:
        data = Path(path).read_bytes().strip()
        raws: list[bytes] = []
        if data.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
            if not isinstance(key, Ed25519PublicKey):
                raise VerificationError(f"{path}: not an Ed25519 public key")
            raws.append(
                key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            )
        elif data.startswith(b"{"):
            for item in json.loads(data)["keys"]:
                raws.append(bytes.fromhex(item["public_key"]))
        else:
            raws.append(bytes.fromhex(data.decode("ascii")))
        for raw in raws:
            if len(raw) != 32:
                raise VerificationError(f"{path}: an Ed25519 public key is 32 bytes")
            keys[key_id_for(raw)] = raw
    return keys


def _ed25519_ok(public_raw: bytes, message: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


# ----------------------------------------------------------- tree heads


def sth_message(head: dict[str, Any]) -> bytes:
    root = bytes.fromhex(head["root_hash"])
    kid = bytes.fromhex(head["key_id"])
    if len(root) != 32 or len(kid) != 8:
        raise VerificationError("tree head has a malformed root hash or key id")
    return (
        b"paywarden-sth-v1\x00"
        + str(head["service"]).encode("ascii")
        + b"\x00"
        + _U64.pack(int(head["tree_size"]))
        + _U64.pack(int(head["timestamp_ms"]))
        + root
        + kid
    )


def check_head(head: dict[str, Any], keys: dict[str, bytes]) -> None:
    key = keys.get(str(head.get("key_id")))
    if key is None:
        raise VerificationError(f"no public key given for key id {head.get('key_id')}")
    if not _ed25519_ok(key, sth_message(head), bytes.fromhex(head["signature"])):
        raise VerificationError(f"tree head of size {head['tree_size']}: signature does not verify")


def _head_or_skip(
    head: dict[str, Any] | None, keys: dict[str, bytes] | None, what: str
) -> list[str]:
    if head is None:
        return [f"note: no signed tree head for the {what} tree in the proof"]
    if keys is None:
        return [f"WARNING: the {what} tree head's signature was NOT checked (--no-signature)"]
    check_head(head, keys)
    return [f"{what} tree head signature verifies (key {head['key_id']})"]


# ------------------------------------------------------------- commands


def _read_json(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise VerificationError(f"{path}: cannot read JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise VerificationError(f"{path}: expected a JSON object")
    return data


def cmd_sth(head: dict[str, Any], keys: dict[str, bytes]) -> list[str]:
    check_head(head, keys)
    return [
        f"tree head verifies: service {head['service']}, size {head['tree_size']}, "
        f"root {head['root_hash']}, key {head['key_id']}"
    ]


def cmd_inclusion(proof: dict[str, Any], keys: dict[str, bytes] | None) -> list[str]:
    index, size = int(proof["leaf_index"]), int(proof["tree_size"])
    leaf = bytes.fromhex(proof["leaf_hash"])
    out: list[str] = []
    entry = proof.get("entry")
    if entry is not None:
        body = str(entry).encode("utf-8")
        if leaf_hash(body) != leaf:
            raise VerificationError("the entry's bytes do not hash to the proof's leaf hash")
        if json.loads(body).get("seq") != index:
            raise VerificationError("the entry's seq is not the proof's leaf index")
        out.append("entry bytes match the leaf hash and index")
    path = [bytes.fromhex(p) for p in proof["proof"]]
    root = bytes.fromhex(proof["root_hash"])
    if root_from_inclusion(leaf, index, size, path) != root:
        raise VerificationError(f"leaf {index} is NOT included in the tree of size {size}")
    head = proof.get("tree_head")
    if head is not None and (int(head["tree_size"]) != size or head["root_hash"] != root.hex()):
        raise VerificationError("the proof's root is not the signed tree head's root")
    out.extend(_head_or_skip(head, keys, "the"))
    out.append(f"leaf {index} is included in the tree of size {size}")
    return out


def cmd_consistency(
    proof: dict[str, Any], keys: dict[str, bytes] | None, saved: dict[str, Any] | None
) -> list[str]:
    old, new = int(proof["old_size"]), int(proof["new_size"])
    old_root, new_root = bytes.fromhex(proof["old_root"]), bytes.fromhex(proof["new_root"])
    out: list[str] = []
    if saved is not None:
        if keys is not None:
            check_head(saved, keys)
        if int(saved["tree_size"]) != old:
            raise VerificationError(
                f"your saved head has size {saved['tree_size']}, the proof starts at {old}"
            )
        if saved["root_hash"] != old_root.hex():
            raise VerificationError(
                f"history was rewritten: the log's root at size {old} is not the one in your "
                "saved tree head"
            )
        out.append(f"old root matches your saved tree head of size {old}")
    path = [bytes.fromhex(p) for p in proof["proof"]]
    if not consistent(old, new, old_root, new_root, path):
        raise VerificationError(f"the tree of size {new} does NOT extend the tree of size {old}")
    for name, size, root in (("old", old, old_root), ("new", new, new_root)):
        head = proof.get(f"{name}_head")
        if head is not None and (int(head["tree_size"]) != size or head["root_hash"] != root.hex()):
            raise VerificationError(f"the {name} root is not the {name} signed tree head's root")
        if head is not None or saved is None or name == "new":
            out.extend(_head_or_skip(head, keys, name))
    out.append(f"the tree of size {new} is an append-only extension of the tree of size {old}")
    return out


def _body_seq_problems(lines: list[bytes], first: int, label: str) -> list[str]:
    bad: list[str] = []
    for i, body in enumerate(lines):
        try:
            seq = json.loads(body).get("seq")
        except ValueError:
            bad.append(f"{label} line {i + 1}: not JSON")
            continue
        if seq != first + i:
            bad.append(f"{label} line {i + 1}: holds seq {seq}, expected {first + i}")
    return bad


def _read_lines(path: str) -> list[bytes]:
    raw = Path(path).read_bytes()
    if path.endswith(".gz"):
        raw = gzip.decompress(raw)
    return raw.split(b"\n")[:-1] if raw.endswith(b"\n") else raw.split(b"\n") if raw else []


def cmd_log(
    lines: list[bytes], head: dict[str, Any], keys: dict[str, bytes] | None, start: Frontier
) -> list[str]:
    out = _head_or_skip(head, keys, "the")
    size = int(head["tree_size"])
    bad = _body_seq_problems(lines, start.size, "entry")
    if bad:
        raise VerificationError("; ".join(bad[:20]) + (" …" if len(bad) > 20 else ""))
    if start.size + len(lines) < size:
        raise VerificationError(
            f"the export ends at {start.size + len(lines)}, the tree head covers {size} entries"
        )
    frontier = Frontier(start.size, start.hashes)
    for body in lines[: size - start.size]:
        frontier.append(leaf_hash(body))
    if frontier.root() != bytes.fromhex(head["root_hash"]):
        raise VerificationError(
            f"the entries do not produce the signed root of size {size}: the log was altered"
        )
    out.append(f"entries {start.size}..{size - 1} reproduce the signed root of size {size}")
    if start.size + len(lines) > size:
        out.append(f"note: {start.size + len(lines) - size} later entries are not covered")
    return out


def cmd_archive(
    segment: bytes, manifest: dict[str, Any], keys: dict[str, bytes] | None
) -> list[str]:
    out: list[str] = []
    payload = {k: v for k, v in manifest.items() if k != "signature"}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if keys is not None:
        key = keys.get(str(manifest.get("key_id")))
        if key is None or not _ed25519_ok(
            key,
            b"paywarden-archive-v1\x00" + canonical.encode("utf-8"),
            bytes.fromhex(manifest["signature"]),
        ):
            raise VerificationError("the manifest's signature does not verify")
        out.append(f"manifest signature verifies (key {manifest['key_id']})")
    else:
        out.append("WARNING: the manifest's signature was NOT checked (--no-signature)")
    if hashlib.sha256(segment).hexdigest() != manifest["file_sha256"]:
        raise VerificationError("the segment file is not the one the manifest describes")
    raw = gzip.decompress(segment)
    lines = raw.split(b"\n")[:-1]
    first = int(manifest["first_seq"])
    bad = _body_seq_problems(lines, first, "segment")
    if bad or len(lines) != int(manifest["count"]):
        raise VerificationError("; ".join(bad[:20]) or "entry count differs from the manifest")
    before, after = manifest["frontier_before"], manifest["frontier_after"]
    frontier = Frontier(int(before["size"]), [bytes.fromhex(h) for h in before["hashes"]])
    leaves = Frontier()
    for body in lines:
        h = leaf_hash(body)
        frontier.append(h)
        leaves.append(h)
    if [h.hex() for h in frontier.hashes] != after["hashes"] or frontier.size != after["size"]:
        raise VerificationError("the segment's entries do not produce the manifest's frontier")
    if leaves.root().hex() != manifest["leaves_root"]:
        raise VerificationError("the segment's entries do not produce the manifest's leaves root")
    out.append(
        f"segment {first}..{int(manifest['stop_seq']) - 1} verifies; log root at "
        f"{frontier.size} is {frontier.root().hex()}"
    )
    return out


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        sys.stderr.write(f"error: {message}\n")
        raise SystemExit(1)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m paywarden.audit.verifier", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def keyed(q: argparse.ArgumentParser, *, optional: bool = True) -> None:
        q.add_argument("--key", action="append", default=[], help="public key file (repeatable)")
        if optional:
            q.add_argument(
                "--no-signature", action="store_true", help="check the hashes only (not advised)"
            )

    q = sub.add_parser("sth", help="verify a signed tree head")
    q.add_argument("--head", required=True)
    keyed(q, optional=False)
    q = sub.add_parser("inclusion", help="verify an inclusion proof")
    q.add_argument("--proof", required=True)
    keyed(q)
    q = sub.add_parser("consistency", help="verify a consistency proof")
    q.add_argument("--proof", required=True)
    q.add_argument("--old-head", help="a tree head you saved earlier: the proof must start from it")
    keyed(q)
    q = sub.add_parser("log", help="verify exported entries (JSON Lines) against a tree head")
    q.add_argument("--entries", required=True)
    q.add_argument("--head", required=True)
    q.add_argument(
        "--from-manifest", help="an archive manifest whose frontier_after precedes the export"
    )
    keyed(q)
    q = sub.add_parser("archive", help="verify an archive segment against its signed manifest")
    q.add_argument("--segment", required=True)
    q.add_argument("--manifest", required=True)
    keyed(q)
    return p


def run(argv: Sequence[str] | None = None) -> tuple[int, list[str]]:
    args = _parser().parse_args(argv)
    try:
        keys: dict[str, bytes] | None = load_keys(args.key) if args.key else None
        if keys is None and not getattr(args, "no_signature", False):
            raise VerificationError("give --key (or --no-signature to check hashes only)")
        if args.command == "sth":
            assert keys is not None
            lines = cmd_sth(_read_json(args.head), keys)
        elif args.command == "inclusion":
            lines = cmd_inclusion(_read_json(args.proof), keys)
        elif args.command == "consistency":
            saved = _read_json(args.old_head) if args.old_head else None
            lines = cmd_consistency(_read_json(args.proof), keys, saved)
        elif args.command == "log":
            start = Frontier()
            if args.from_manifest:
                after = _read_json(args.from_manifest)["frontier_after"]
                start = Frontier(int(after["size"]), [bytes.fromhex(h) for h in after["hashes"]])
            lines = cmd_log(_read_lines(args.entries), _read_json(args.head), keys, start)
        else:
            lines = cmd_archive(Path(args.segment).read_bytes(), _read_json(args.manifest), keys)
    except VerificationError as exc:
        return 1, [f"NOT VERIFIED: {exc}"]
    except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        return 1, [f"NOT VERIFIED: unusable input ({type(exc).__name__}: {exc})"]
    return 0, [*lines, "VERIFIED"]


def main(argv: Sequence[str] | None = None) -> int:
    status, lines = run(argv)
    stream = sys.stdout if status == 0 else sys.stderr
    stream.write("\n".join(lines) + "\n")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
