"""Full verification of an audit store (and its archives), naming each bad entry.

What is checked, from nothing but the stored bytes and the public keys:

1. every signed tree head's signature (with the public key its ``key_id`` names);
2. every row: its leaf hash recomputed from the stored body equals the stored
   ``leaf_hash`` (else the body or the hash was edited), and the ``seq`` inside
   the body equals the row's position (else the row was moved, swapped or copied);
3. the sequence is dense: a gap is a deleted row, a row past the append cursor
   was inserted behind the log's back;
4. the tree: the root recomputed over the bodies at every signed head's size
   equals the signed root;
5. archives: file hash against the signed manifest, every line as in 2., and the
   Merkle frontiers chaining segment to segment and on to the online log.

Localisation. An attacker who rewrites a body *and* its leaf hash leaves every
row consistent; only the tree notices. Verification keeps the subtrees it
recomputes at level ≥ 8 (blocks of 256 leaves) and compares them with the node
cache, which recorded each leaf when it was appended: a differing block is
re-read and compared leaf by leaf, which names the exact ``seq``. If the node
cache was rewritten as well, the signed heads still disagree and bound the
change between the last head that verifies and the first that does not.

Speed: rows are streamed in chunks; the stored bytes are hashed, and ``seq`` is
checked by comparing the fixed-position bytes :func:`~paywarden.audit.entry.finish`
wrote (JSON is parsed only to describe a bad row).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import and_, func, select

from paywarden.audit import merkle
from paywarden.audit.archive import (
    Manifest,
    frontier_from_json,
    manifest_path,
    read_segment,
    segments,
)
from paywarden.audit.crypto import verify_signature
from paywarden.audit.entry import TIME_LEN, Entry, seq_tail
from paywarden.audit.signing import PublicKeyInfo, TreeHead, load_public_keys, load_tree_heads
from paywarden.audit.store import AuditStore, as_bytes, entries, nodes

CHECK_LEVEL = 8  # blocks of 256 leaves
CHUNK = 50_000
_END_LEN = len(b'","v":1}') + TIME_LEN

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Finding:
    seq: int | None
    kind: str
    message: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.message}" if self.seq is not None else self.message


@dataclass
class VerifyReport:
    service: str
    start: int
    stop: int
    entries_checked: int = 0
    archived_checked: int = 0
    heads_checked: int = 0
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def bad_seqs(self) -> list[int]:
        return sorted({f.seq for f in self.findings if f.seq is not None})


def _describe_body(body: bytes) -> str:
    try:
        claimed = Entry.from_body(body).seq
    except ValueError:
        return "its body is not a valid entry"
    return f"its body is entry {claimed}'s"


class _Walker:
    """Feeds recomputed leaves into a frontier; checks heads as sizes are reached."""

    def __init__(
        self,
        service: str,
        frontier: merkle.CompactRange,
        heads: dict[int, list[TreeHead]],
        report: VerifyReport,
    ) -> None:
        self.service = service
        self.stack = list(frontier.hashes)
        self.size = frontier.size
        self.heads = heads
        self.report = report
        self.computed: dict[tuple[int, int], bytes] = {}
        self.broken_at: int | None = None
        self.good_sizes: list[int] = []
        self.bad_sizes: list[int] = []

    def frontier(self) -> merkle.CompactRange:
        return merkle.CompactRange(self.size, self.stack)

    def reset(self, frontier: merkle.CompactRange) -> None:
        self.stack = list(frontier.hashes)
        self.size = frontier.size

    def check_heads(self) -> None:
        for head in self.heads.get(self.size, ()):
            self.report.heads_checked += 1
            if merkle.fold(self.stack) == head.root_hash:
                self.good_sizes.append(self.size)
            else:
                self.bad_sizes.append(self.size)
                self.report.findings.append(
                    Finding(
                        None,
                        "head_root",
                        f"signed tree head of size {self.size} (key {head.key_id}, "
                        f"timestamp {head.timestamp_ms}) does not match the entries",
                    )
                )

    def feed(self, rows: Iterable[tuple[int, bytes, bytes | None]]) -> None:
        """``(seq, body, stored leaf hash or None)`` in order, positions already checked."""
        sha256 = hashlib.sha256
        stack = self.stack
        size = self.size
        computed = self.computed
        heads = self.heads
        check = CHECK_LEVEL
        for _seq, leaf, _stored in rows:
            h = leaf
            n = size
            level = 0
            while n & 1:
                h = sha256(b"\x01" + stack.pop() + h).digest()
                n >>= 1
                level += 1
                if level >= check:
                    computed[level, size >> level] = h
            stack.append(h)
            size += 1
            if size in heads:
                self.size = size
                self.check_heads()
        self.size = size


def verify_store(
    store: AuditStore,
    *,
    service: str,
    start: int | None = None,
    stop: int | None = None,
    archive_directory: Path | None = None,
    progress: Progress | None = None,
) -> VerifyReport:
    """Re-verify the log (or ``[start, stop)``) and name every bad entry.

    A full run (no ``start``) also verifies the archives in ``archive_directory``.
    A range run trusts the node cache for what lies before ``start``.
    """
    with store.reading() as conn:
        st = AuditStore.read_state(conn)
        keys = load_public_keys(conn)
        heads = load_tree_heads(conn, service)
        max_seq = conn.execute(select(func.max(entries.c.seq))).scalar()
    next_seq = st["next_seq"][0]
    first_online = st["first_online"][0]
    table_stop = max(next_seq, int(max_seq) + 1 if max_seq is not None else 0)
    full = start is None
    lo = first_online if start is None else max(start, 0)
    hi = table_stop if stop is None else min(stop, table_stop)
    report = VerifyReport(service=service, start=0 if full else lo, stop=hi)

    by_size: dict[int, list[TreeHead]] = {}
    for head in heads:
        key = keys.get(head.key_id)
        if key is None:
            report.findings.append(
                Finding(
                    None,
                    "head_key",
                    f"tree head of size {head.tree_size}: unknown key {head.key_id}",
                )
            )
            continue
        if not verify_signature(key.public_key, head.message(), head.signature):
            report.findings.append(
                Finding(
                    None,
                    "head_signature",
                    f"tree head of size {head.tree_size} (key {head.key_id}): bad signature",
                )
            )
            continue
        if head.tree_size > next_seq:
            report.findings.append(
                Finding(
                    None,
                    "head_beyond_log",
                    f"tree head of size {head.tree_size} covers more entries than the log "
                    f"has ({next_seq}): entries were removed from the end",
                )
            )
            continue
        by_size.setdefault(head.tree_size, []).append(head)

    total = max(hi - lo, 0)
    walker: _Walker
    if full:
        walker = _Walker(service, merkle.CompactRange(), by_size, report)
        if 0 in by_size:
            walker.check_heads()
        _verify_archives(store, service, archive_directory, walker, report, keys, lo)
    else:
        walker = _Walker(service, _cached_frontier(store, lo, report), by_size, report)
        if lo > 0:
            report.notes.append(f"entries before {lo} are trusted through the node cache")
    _verify_online(store, service, lo, hi, next_seq, walker, report, progress, total)
    _localise(store, lo, hi, walker, report)
    signed = max((h.tree_size for h in heads), default=0)
    if hi > signed and stop is None:
        report.notes.append(
            f"{hi - max(signed, lo)} entries after the last signed tree head (size {signed}) "
            "are not yet covered by a signature"
        )
    return report


def _cached_frontier(store: AuditStore, size: int, report: VerifyReport) -> merkle.CompactRange:
    coords = merkle.perfect_subtrees(0, size)
    with store.reading() as conn:
        found = AuditStore.get_nodes(conn, coords)
    if len(found) != len(coords):
        report.findings.append(
            Finding(None, "node_cache", f"the node cache lacks the frontier at size {size}")
        )
        return merkle.CompactRange()
    return merkle.CompactRange(size, [found[c] for c in coords])


def _verify_online(
    store: AuditStore,
    service: str,
    lo: int,
    hi: int,
    next_seq: int,
    walker: _Walker,
    report: VerifyReport,
    progress: Progress | None,
    total: int,
) -> None:
    sha256 = hashlib.sha256
    findings = report.findings
    expected = lo
    done = 0
    service_b = service.encode("ascii")
    pos = lo
    while pos < hi:
        end = min(pos + CHUNK, hi)
        with store.reading() as conn:
            rows = conn.execute(
                select(entries.c.seq, entries.c.leaf_hash, entries.c.body)
                .where(entries.c.seq >= pos, entries.c.seq < end)
                .order_by(entries.c.seq)
            ).all()
        batch: list[tuple[int, bytes, bytes | None]] = []
        for seq, stored, raw in rows:
            if seq != expected:
                walker.feed(batch)
                batch = []
                _missing(store, expected, seq, walker, report)
                expected = seq
            body = as_bytes(raw)
            leaf = sha256(b"\x00" + body).digest()
            if leaf != stored:
                findings.append(
                    Finding(
                        seq,
                        "leaf_hash",
                        "stored leaf_hash differs from the hash of the stored body "
                        "(the body or the leaf hash was edited)",
                    )
                )
            cut = len(body) - _END_LEN
            tail = b',"seq":%d,"service":"%s","time":"' % (seq, service_b)
            if body[cut - len(tail) : cut] != tail:
                findings.append(
                    Finding(
                        seq,
                        "moved",
                        f"row {seq} does not hold entry {seq}: {_describe_body(body)} "
                        "(moved, swapped, copied or rewritten)",
                    )
                )
            if seq >= next_seq:
                findings.append(
                    Finding(seq, "beyond_cursor", "row lies past the append cursor: inserted")
                )
            batch.append((seq, leaf, stored))
            expected = seq + 1
        walker.feed(batch)
        done += len(rows)
        report.entries_checked += len(rows)
        pos = end
        if progress is not None:
            progress(min(end - lo, total), total)
    if expected < hi:
        _missing(store, expected, hi, walker, report)


def _missing(
    store: AuditStore, first: int, stop: int, walker: _Walker, report: VerifyReport
) -> None:
    """Rows ``[first, stop)`` are absent. Name them; keep the tree going with
    the leaves the node cache recorded, so the rest of the log still verifies."""
    for seq in range(first, stop):
        report.findings.append(Finding(seq, "missing", "row is missing (deleted)"))
    if walker.broken_at is not None:
        return
    coords = [(0, seq) for seq in range(first, stop)]
    with store.reading() as conn:
        found = AuditStore.get_nodes(conn, coords[:100_000])
    if len(found) != len(coords):
        walker.broken_at = first
        report.notes.append(
            f"the node cache lacks the leaves of the missing rows from {first}: "
            "later tree heads cannot be checked"
        )
        walker.heads = {}
        return
    walker.feed((seq, found[0, seq], None) for seq in range(first, stop))


def _localise(store: AuditStore, lo: int, hi: int, walker: _Walker, report: VerifyReport) -> None:
    """Compare recomputed subtrees with the node cache; drill into differing blocks."""
    if hi <= lo:
        return
    block = 1 << CHECK_LEVEL
    with store.reading() as conn:
        cached = {
            (int(level), int(idx)): as_bytes(h)
            for level, idx, h in conn.execute(
                select(nodes.c.level, nodes.c.idx, nodes.c.hash).where(nodes.c.level >= CHECK_LEVEL)
            )
        }
    suspicious: set[int] = set()
    odd_nodes: list[tuple[int, int]] = []
    for (level, idx), h in walker.computed.items():
        if cached.get((level, idx), h) == h:
            continue
        if level == CHECK_LEVEL:
            suspicious.add(idx)
        else:
            odd_nodes.append((level, idx))
    for level, idx in odd_nodes:
        span = range(idx << (level - CHECK_LEVEL), (idx + 1) << (level - CHECK_LEVEL))
        if not suspicious.intersection(span):
            report.findings.append(
                Finding(None, "node_cache", f"node cache entry ({level}, {idx}) is corrupted")
            )
    # The last, incomplete block has no level-8 node yet: always compare it.
    suspicious.add((hi - 1) // block)
    if walker.bad_sizes:
        suspicious.update((s - 1) // block for s in walker.bad_sizes if s > lo)
    named = {f.seq for f in report.findings if f.seq is not None}
    for b in sorted(suspicious):
        _drill(store, max(b * block, lo), min((b + 1) * block, hi), named, report)
    _narrow_heads(walker, report)


def _drill(store: AuditStore, lo: int, hi: int, named: set[int], report: VerifyReport) -> None:
    if hi <= lo:
        return
    with store.reading() as conn:
        rows = conn.execute(
            select(entries.c.seq, entries.c.body).where(entries.c.seq >= lo, entries.c.seq < hi)
        ).all()
        cached = {
            int(idx): as_bytes(h)
            for idx, h in conn.execute(
                select(nodes.c.idx, nodes.c.hash).where(
                    and_(nodes.c.level == 0, nodes.c.idx >= lo, nodes.c.idx < hi)
                )
            )
        }
    for row_seq, body in rows:
        seq = int(row_seq)
        if seq in named or seq not in cached:
            continue
        if merkle.leaf_hash(as_bytes(body)) != cached[seq]:
            named.add(seq)
            report.findings.append(
                Finding(
                    seq,
                    "rewritten",
                    "entry rewritten: body and leaf_hash agree with each other, but not with "
                    "the leaf the node cache recorded when it was appended",
                )
            )


def _narrow_heads(walker: _Walker, report: VerifyReport) -> None:
    if not walker.bad_sizes:
        return
    first_bad = min(walker.bad_sizes)
    explained = any(f.seq is not None and f.seq < first_bad for f in report.findings)
    if explained:
        return
    good = [s for s in walker.good_sizes if s < first_bad]
    low = max(good, default=report.start)
    report.findings.append(
        Finding(
            None,
            "rewritten_range",
            f"history was rewritten together with the node cache: the change lies in "
            f"seq {low}..{first_bad - 1} (between the last tree head that verifies and "
            "the first that does not)",
        )
    )


def _verify_archives(
    store: AuditStore,
    service: str,
    directory: Path | None,
    walker: _Walker,
    report: VerifyReport,
    keys: dict[str, PublicKeyInfo],
    first_online: int,
) -> None:
    segs = segments(store)
    if not segs:
        if first_online:
            report.findings.append(
                Finding(None, "archive_missing", f"entries before {first_online} are gone")
            )
        return
    started = False
    for seg in segs:
        m = seg.manifest
        info = keys.get(m.key_id)
        if info is None or not verify_signature(info.public_key, m.signed_payload(), m.signature()):
            report.findings.append(
                Finding(None, "archive_manifest", f"archive {seg.file}: manifest signature invalid")
            )
            return
        before = frontier_from_json(m.data["frontier_before"])
        after = frontier_from_json(m.data["frontier_after"])
        if not started:
            if before.size != 0:
                report.notes.append(
                    f"entries before {before.size} were deleted by retention; verification "
                    "starts from the signed frontier of the oldest remaining segment"
                )
            walker.reset(before)
            started = True
        elif walker.frontier().hashes != before.hashes or walker.size != before.size:
            report.findings.append(
                Finding(
                    None,
                    "archive_chain",
                    f"archive {seg.file}: does not continue the previous segment's tree",
                )
            )
            walker.reset(before)
        if seg.deleted:
            report.notes.append(
                f"entries {seg.first_seq}..{seg.stop_seq - 1} ({seg.file}) were deleted by "
                "retention; verification continues from the signed frontier after them"
            )
            walker.reset(after)
            continue
        if directory is None:
            report.notes.append(f"archive {seg.file} not read (no archive directory given)")
            walker.reset(after)
            continue
        _verify_segment(store, service, directory, seg.file, seg.first_seq, m, walker, report)
        if walker.frontier().hashes != after.hashes or walker.size != after.size:
            report.findings.append(
                Finding(
                    None,
                    "archive_chain",
                    f"archive {seg.file}: its entries do not produce the signed frontier",
                )
            )
            walker.reset(after)
    if walker.size != first_online:
        report.findings.append(
            Finding(None, "archive_chain", "the archives do not end where the online log begins")
        )


def _verify_segment(
    store: AuditStore,
    service: str,
    directory: Path,
    file: str,
    first: int,
    manifest: Manifest,
    walker: _Walker,
    report: VerifyReport,
) -> None:
    path = directory / file
    disk_manifest = manifest_path(directory, file)
    if disk_manifest.exists() and disk_manifest.read_text(encoding="utf-8") != manifest.to_text():
        report.findings.append(
            Finding(None, "archive_manifest", f"archive {file}: manifest file was edited")
        )
    try:
        blob = path.read_bytes()
    except OSError:
        report.findings.append(Finding(None, "archive_file", f"archive {file}: file is missing"))
        walker.reset(frontier_from_json(manifest.data["frontier_after"]))
        return
    if hashlib.sha256(blob).hexdigest() != manifest.data["file_sha256"]:
        report.findings.append(
            Finding(None, "archive_file", f"archive {file}: file differs from its signed manifest")
        )
    try:
        bodies = read_segment(path)
    except ValueError as exc:
        report.findings.append(Finding(None, "archive_file", f"archive {file}: {exc}"))
        walker.reset(frontier_from_json(manifest.data["frontier_after"]))
        return
    expected_count = int(manifest.data["count"])
    if len(bodies) != expected_count:
        report.findings.append(
            Finding(
                None,
                "archive_file",
                f"archive {file}: {len(bodies)} lines, the manifest says {expected_count}",
            )
        )
    with store.reading() as conn:
        cached = {
            int(idx): as_bytes(h)
            for idx, h in conn.execute(
                select(nodes.c.idx, nodes.c.hash).where(
                    nodes.c.level == 0, nodes.c.idx >= first, nodes.c.idx < first + len(bodies)
                )
            )
        }
    leaves: list[tuple[int, bytes, bytes | None]] = []
    for i, body in enumerate(bodies):
        seq = first + i
        leaf = merkle.leaf_hash(body)
        tail = seq_tail(seq, service)
        cut = len(body) - _END_LEN
        if body[cut - len(tail) : cut] != tail:
            report.findings.append(
                Finding(
                    seq, "archive_entry", f"archive {file} line {i + 1}: {_describe_body(body)}"
                )
            )
        elif seq in cached and cached[seq] != leaf:
            report.findings.append(
                Finding(
                    seq,
                    "archive_entry",
                    f"archive {file} line {i + 1}: entry differs from the one appended",
                )
            )
        leaves.append((seq, leaf, None))
    walker.feed(leaves)
    report.archived_checked += len(bodies)
