"""Retention: archive segments with signed manifests, verification across them."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from paywarden.audit import verifier as standalone
from paywarden.audit.archive import manifest_path, run_retention, segments
from paywarden.audit.log import AuditLog
from paywarden.audit.signing import load_public_keys
from paywarden.audit.verify import verify_store
from tests.audit.conftest import Clock, LogFactory, spec


def _fill(log: AuditLog, clock: Clock, months: int, per_month: int) -> None:
    for m in range(months):
        log.record_many(spec(m * 100 + i) for i in range(per_month))
        log.sign_tree_head()
        clock.advance(days=31)


def _keys(log: AuditLog) -> dict[str, bytes]:
    with log.store.reading() as conn:
        return {k: v.public_key for k, v in load_public_keys(conn).items()}


@pytest.fixture
def archived(make_log: LogFactory, clock: Clock, tmp_path: Path) -> tuple[AuditLog, Path]:
    log = make_log()
    _fill(log, clock, months=6, per_month=30)
    directory = tmp_path / "audit-archive" / "gateway"
    result = run_retention(log, directory)
    assert len(result.archived) >= 3
    return log, directory


def test_old_entries_move_to_signed_segments_and_everything_still_verifies(
    archived: tuple[AuditLog, Path],
) -> None:
    log, directory = archived
    segs = segments(log.store)
    first_online = segs[-1].stop_seq
    online = log.entries()
    assert online[0].seq == first_online
    report = verify_store(log.store, service="gateway", archive_directory=directory)
    assert report.ok, report.findings
    assert report.archived_checked == first_online
    assert report.entries_checked == log.size() - first_online
    # Every head, archived ranges included, was recomputed and checked.
    assert report.heads_checked == len(log.tree_heads())
    # Proofs still work for archived entries (the node cache is kept).
    proof = log.inclusion_proof(3).to_json()
    assert proof["entry"] is None
    standalone.cmd_inclusion(proof, _keys(log))
    archived_event = [e for e in online if e.event == "audit.archived"]
    assert archived_event and archived_event[0].details["stop_seq"] == first_online


def test_a_segment_verifies_alone_with_the_standalone_verifier(
    archived: tuple[AuditLog, Path],
) -> None:
    log, directory = archived
    seg = segments(log.store)[1]
    manifest = json.loads(manifest_path(directory, seg.file).read_text())
    out = standalone.cmd_archive((directory / seg.file).read_bytes(), manifest, _keys(log))
    assert any("verifies" in line for line in out)
    tampered = dict(manifest, count=manifest["count"] + 1)
    with pytest.raises(standalone.VerificationError, match="signature"):
        standalone.cmd_archive((directory / seg.file).read_bytes(), tampered, _keys(log))


def test_a_tampered_archive_file_is_named(archived: tuple[AuditLog, Path]) -> None:
    log, directory = archived
    seg = segments(log.store)[0]
    path = directory / seg.file
    lines = gzip.decompress(path.read_bytes()).split(b"\n")
    lines[4] = lines[4].replace(b'"outcome":"success"', b'"outcome":"failure"')
    path.write_bytes(gzip.compress(b"\n".join(lines)))
    report = verify_store(log.store, service="gateway", archive_directory=directory)
    kinds = {f.kind for f in report.findings}
    assert "archive_file" in kinds
    assert report.bad_seqs() == [seg.first_seq + 4]
    assert any(seg.file in str(f) for f in report.findings)


def test_segments_past_retention_are_deleted_and_the_deletion_recorded(
    archived: tuple[AuditLog, Path], clock: Clock
) -> None:
    log, directory = archived
    first = segments(log.store)[0]
    clock.advance(days=365)
    result = run_retention(log, directory)
    assert first.file in result.deleted
    assert not (directory / first.file).exists()
    assert manifest_path(directory, first.file).exists()  # the chain of roots stays
    deletions = [e for e in log.entries() if e.event == "audit.archive.deleted"]
    assert {d.details["file"] for d in deletions} == set(result.deleted)
    report = verify_store(log.store, service="gateway", archive_directory=directory)
    assert report.ok, report.findings
    assert any("deleted by retention" in n for n in report.notes)


def test_archiving_needs_the_signing_key(make_log: LogFactory, tmp_path: Path) -> None:
    log = make_log(signer=None)
    from paywarden.audit.errors import AuditError

    with pytest.raises(AuditError):
        run_retention(log, tmp_path / "a")
