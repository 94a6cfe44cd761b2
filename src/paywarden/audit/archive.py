"""Retention (PCI DSS v4.0.1 10.5.1): keep 12 months, the latest 3 online.

Entries older than ``online_days`` move from the store to segment files
``<home>/audit-archive/<service>/<service>-<first seq>-<stop seq>.jsonl.gz``,
one per calendar month (UTC) at most. A segment is the entries' exact leaf
bytes, one per line (compact JSON never contains a raw newline), gzip'ed
deterministically. Beside it, ``….manifest.json`` holds:

- ``first_seq``/``stop_seq``/``count``, the first and last entry times;
- ``file_sha256`` of the ``.jsonl.gz``;
- ``frontier_before`` and ``frontier_after``: the Merkle compact range (the
  perfect-subtree roots) of the whole log at ``first_seq`` and ``stop_seq``,
  so the segment alone recomputes the log's root at ``stop_seq`` and chains to
  the segment before it and to the online log after it;
- ``leaves_root``: the RFC 9162 root of just this segment's leaves;
- ``key_id`` and an Ed25519 ``signature`` over ``b"paywarden-archive-v1\\x00" ||``
  the canonical JSON of every other field.

The online log keeps verifying from its first online entry: the node cache is
not archived, and the last manifest's ``frontier_after`` is where it starts.
Segments whose last entry is older than ``retention_days`` lose their data
file (the manifest stays, so the chain of roots is still checkable); that
deletion is itself an audit entry, ``audit.archive.deleted``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from paywarden.audit import merkle
from paywarden.audit.entry import Actor, canonical_json, format_time, time_micros
from paywarden.audit.errors import AuditError
from paywarden.audit.log import AuditLog
from paywarden.audit.signing import ARCHIVE_DOMAIN
from paywarden.audit.store import ADMIN_LOCK, AuditStore, archives, as_bytes, entries
from paywarden.core.files import atomic_write

FORMAT = "paywarden-audit-archive/v1"
ONLINE_DAYS = 90
RETENTION_DAYS = 365
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def archive_dir(home: Path, service: str) -> Path:
    return home / "audit-archive" / service


def _from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _frontier_json(cr: merkle.CompactRange) -> dict[str, Any]:
    return {"size": cr.size, "hashes": [h.hex() for h in cr.hashes]}


def frontier_from_json(data: dict[str, Any]) -> merkle.CompactRange:
    return merkle.CompactRange(int(data["size"]), [bytes.fromhex(h) for h in data["hashes"]])


@dataclass(frozen=True)
class Manifest:
    data: dict[str, Any]  # every field, the signature included

    @property
    def first_seq(self) -> int:
        return int(self.data["first_seq"])

    @property
    def stop_seq(self) -> int:
        return int(self.data["stop_seq"])

    @property
    def file(self) -> str:
        return str(self.data["file"])

    def signed_payload(self) -> bytes:
        body = {k: v for k, v in self.data.items() if k != "signature"}
        return ARCHIVE_DOMAIN + canonical_json(body)

    def signature(self) -> bytes:
        return bytes.fromhex(self.data["signature"])

    @property
    def key_id(self) -> str:
        return str(self.data["key_id"])

    def to_text(self) -> str:
        return json.dumps(self.data, sort_keys=True, indent=2) + "\n"

    @classmethod
    def from_text(cls, text: str) -> Manifest:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError("not a Paywarden audit archive manifest")
        return cls(data)


def segment_bytes(bodies: list[bytes]) -> bytes:
    """The ``.jsonl.gz`` bytes: deterministic (no name, mtime 0)."""
    raw = b"".join(body + b"\n" for body in bodies)
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw)
    return out.getvalue()


def read_segment(path: Path) -> list[bytes]:
    """The leaf bytes in a segment file, in order; ``ValueError`` if unreadable."""
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ValueError(
            f"{path.name} is not a readable gzip file ({type(exc).__name__})"
        ) from None
    if raw and not raw.endswith(b"\n"):
        raise ValueError(f"{path.name} is truncated (no final newline)")
    return raw.split(b"\n")[:-1] if raw else []


@dataclass(frozen=True)
class RetentionResult:
    archived: list[Manifest]
    deleted: list[str]


def run_retention(
    log: AuditLog,
    directory: Path,
    *,
    online_days: int = ONLINE_DAYS,
    retention_days: int = RETENTION_DAYS,
    max_segment_entries: int = 1_000_000,
    actor: Actor | None = None,
) -> RetentionResult:
    """Archive what is older than ``online_days``; delete segments older than
    ``retention_days``. Needs the signing key (manifests are signed)."""
    signer = log.signer
    if signer is None:
        raise AuditError("archiving needs the audit signing key")
    who = actor or Actor.system(f"paywarden-{log.service}")
    now = log.now()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = log.store
    size, _ = log.catch_up()
    cutoff = time_micros(now - timedelta(days=online_days))
    with store.reading() as conn:
        st = AuditStore.read_state(conn)
        first_online = st["first_online"][0]
        cut = conn.execute(select(func.min(entries.c.seq)).where(entries.c.time >= cutoff)).scalar()
    cut = min(int(cut) if cut is not None else st["next_seq"][0], size)
    made: list[Manifest] = []
    pos = first_online
    while pos < cut:
        manifest = _archive_segment(log, directory, pos, cut, max_segment_entries, now)
        made.append(manifest)
        pos = manifest.stop_seq
    if made:
        log.record(
            event="audit.archived",
            outcome="success",
            actor=who,
            details={
                "first_seq": made[0].first_seq,
                "stop_seq": made[-1].stop_seq,
                "segments": [{"file": m.file, "sha256": m.data["file_sha256"]} for m in made],
            },
        )
    deleted = _expire(log, directory, now - timedelta(days=retention_days), who)
    return RetentionResult(made, deleted)


def _archive_segment(
    log: AuditLog, directory: Path, start: int, cut: int, max_entries: int, now: datetime
) -> Manifest:
    store = log.store
    with store.reading() as conn:
        rows = conn.execute(
            select(entries.c.seq, entries.c.leaf_hash, entries.c.body, entries.c.time)
            .where(entries.c.seq >= start, entries.c.seq < min(cut, start + max_entries))
            .order_by(entries.c.seq)
        ).all()
    if not rows:
        raise AuditError(f"entry {start} is missing; run `paywarden audit verify`")
    month = _from_micros(int(rows[0][3])).strftime("%Y-%m")
    bodies: list[bytes] = []
    leaves: list[bytes] = []
    last_time = int(rows[0][3])
    for seq, leaf, raw, micros in rows:
        if _from_micros(int(micros)).strftime("%Y-%m") != month:
            break
        body = as_bytes(raw)
        # Archive only what verifies: the row is in place, its body matches its
        # leaf hash and the node cache (the tree the signed heads commit to).
        if seq != start + len(bodies) or merkle.leaf_hash(body) != as_bytes(leaf):
            raise AuditError(f"entry {start + len(bodies)} does not verify; archiving stopped")
        bodies.append(body)
        leaves.append(as_bytes(leaf))
        last_time = int(micros)
    stop = start + len(bodies)
    before = _frontier_at(log, start)
    after = before.copy()
    for leaf in leaves:
        after.append(leaf)
    expected = _frontier_at(log, stop)
    if after.hashes != expected.hashes:
        raise AuditError(f"entries {start}..{stop - 1} do not match the node cache; not archived")
    name = f"{log.service}-{start:012d}-{stop:012d}.jsonl.gz"
    blob = segment_bytes(bodies)
    atomic_write(directory / name, blob)
    fields: dict[str, Any] = {
        "format": FORMAT,
        "service": log.service,
        "file": name,
        "first_seq": start,
        "stop_seq": stop,
        "count": len(bodies),
        "first_time": format_time(_from_micros(int(rows[0][3]))),
        "last_time": format_time(_from_micros(last_time)),
        "file_sha256": hashlib.sha256(blob).hexdigest(),
        "leaves_root": merkle.root(leaves).hex(),
        "frontier_before": _frontier_json(before),
        "frontier_after": _frontier_json(after),
        "root_after": after.root().hex(),
        "created": format_time(now),
    }
    assert log.signer is not None
    key_id, _ = log.signer.current_key()
    fields["key_id"] = key_id
    _, signature = log.signer.sign_manifest(canonical_json(fields))
    manifest = Manifest({**fields, "signature": signature.hex()})
    atomic_write(directory / _manifest_name(name), manifest.to_text().encode("utf-8"))
    with store.writing(ADMIN_LOCK) as conn:
        conn.execute(
            insert(archives).values(
                first_seq=start,
                stop_seq=stop,
                first_time=int(rows[0][3]),
                last_time=last_time,
                file=name,
                sha256=fields["file_sha256"],
                manifest=manifest.to_text(),
                created=time_micros(now) // 1000,
                deleted=None,
            )
        )
        conn.execute(delete(entries).where(entries.c.seq >= start, entries.c.seq < stop))
        AuditStore.set_state(conn, "first_online", stop)
    return manifest


def _manifest_name(file: str) -> str:
    return file.removesuffix(".jsonl.gz") + ".manifest.json"


def manifest_path(directory: Path, file: str) -> Path:
    return directory / _manifest_name(file)


def _frontier_at(log: AuditLog, size: int) -> merkle.CompactRange:
    coords = merkle.perfect_subtrees(0, size)
    with log.store.reading() as conn:
        found = AuditStore.get_nodes(conn, coords)
    if len(found) != len(coords):
        raise AuditError(f"the node cache lacks the frontier at {size}")
    return merkle.CompactRange(size, [found[c] for c in coords])


def _expire(log: AuditLog, directory: Path, older_than: datetime, who: Actor) -> list[str]:
    limit = time_micros(older_than)
    with log.store.reading() as conn:
        rows = conn.execute(
            select(archives.c.first_seq, archives.c.stop_seq, archives.c.file, archives.c.sha256)
            .where(archives.c.deleted.is_(None), archives.c.last_time < limit)
            .order_by(archives.c.first_seq)
        ).all()
    deleted: list[str] = []
    for first, stop, file, sha in rows:
        # Record first: if the entry cannot be written, nothing is deleted.
        log.record(
            event="audit.archive.deleted",
            outcome="success",
            actor=who,
            reason="retention period (PCI DSS 10.5.1) elapsed",
            details={"file": file, "first_seq": first, "stop_seq": stop, "sha256": sha},
        )
        (directory / file).unlink(missing_ok=True)
        with log.store.writing(ADMIN_LOCK) as conn:
            conn.execute(
                update(archives)
                .where(archives.c.first_seq == first)
                .values(deleted=time_micros(log.now()) // 1000)
            )
        deleted.append(str(file))
    return deleted


@dataclass(frozen=True)
class SegmentRecord:
    first_seq: int
    stop_seq: int
    file: str
    sha256: str
    manifest: Manifest
    deleted: bool


def segments(store: AuditStore) -> list[SegmentRecord]:
    with store.reading() as conn:
        rows = conn.execute(
            select(
                archives.c.first_seq,
                archives.c.stop_seq,
                archives.c.file,
                archives.c.sha256,
                archives.c.manifest,
                archives.c.deleted,
            ).order_by(archives.c.first_seq)
        ).all()
    return [
        SegmentRecord(
            int(a), int(b), str(f), str(sha), Manifest.from_text(str(m)), deleted is not None
        )
        for a, b, f, sha, m, deleted in rows
    ]


def archived_bodies(store: AuditStore, directory: Path) -> Iterator[tuple[int, bytes]]:
    """``(seq, leaf bytes)`` of every archived entry whose file still exists."""
    for seg in segments(store):
        if seg.deleted:
            continue
        for i, body in enumerate(read_segment(directory / seg.file)):
            yield seg.first_seq + i, body
