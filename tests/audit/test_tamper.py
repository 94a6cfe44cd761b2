"""Tamper drills on a real SQLite file: each change is named, by seq, by verify."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from paywarden.audit import verifier as standalone
from paywarden.audit.store import AuditStore
from paywarden.audit.verify import VerifyReport, verify_store
from tests.audit.conftest import LogFactory, spec

N = 700  # > two 256-leaf blocks, so localisation through the node cache is exercised


@pytest.fixture
def built(make_log: LogFactory, db_path: Path) -> Path:
    log = make_log(lifecycle=False)
    log.record_many(spec(i) for i in range(300))
    log.sign_tree_head()
    log.record_many(spec(i) for i in range(300, N))
    log.sign_tree_head()
    log.close()
    return db_path


@contextmanager
def tamper(path: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(path)
    try:
        yield db
        db.commit()
    finally:
        db.close()


def verify(path: Path, **kw: object) -> VerifyReport:
    store = AuditStore(f"sqlite:///{path}")
    try:
        return verify_store(store, service="gateway", **kw)  # type: ignore[arg-type]
    finally:
        store.dispose()


def body(db: sqlite3.Connection, seq: int) -> bytes:
    return bytes(db.execute("SELECT body FROM audit_entries WHERE seq=?", (seq,)).fetchone()[0])


def test_an_untouched_log_verifies(built: Path) -> None:
    report = verify(built)
    assert report.ok, report.findings
    assert report.entries_checked == N and report.heads_checked == 2


def test_an_updated_body_is_named(built: Path) -> None:
    with tamper(built) as db:
        b = body(db, 123)
        db.execute(
            "UPDATE audit_entries SET body=? WHERE seq=123",
            (b.replace(b'"i":123', b'"i":124'),),
        )
    report = verify(built)
    assert report.bad_seqs() == [123]
    assert {f.kind for f in report.findings if f.seq == 123} == {"leaf_hash"}
    assert any(f.kind == "head_root" for f in report.findings)


def test_a_deleted_row_is_named(built: Path) -> None:
    with tamper(built) as db:
        db.execute("DELETE FROM audit_entries WHERE seq=450")
    report = verify(built)
    assert report.bad_seqs() == [450]
    assert report.findings[0].kind == "missing"
    # The node cache's leaf keeps the tree going: the heads still verify.
    assert not any(f.kind == "head_root" for f in report.findings)


def test_swapped_bodies_are_named(built: Path) -> None:
    with tamper(built) as db:
        a, b = body(db, 10), body(db, 20)
        db.execute("UPDATE audit_entries SET body=? WHERE seq=10", (b,))
        db.execute("UPDATE audit_entries SET body=? WHERE seq=20", (a,))
    report = verify(built)
    assert report.bad_seqs() == [10, 20]
    moved = {f.seq: f.message for f in report.findings if f.kind == "moved"}
    assert "entry 20's" in moved[10] and "entry 10's" in moved[20]


def test_an_inserted_row_is_named(built: Path) -> None:
    with tamper(built) as db:
        copy = body(db, 5)
        db.execute(
            "INSERT INTO audit_entries (seq, leaf_hash, body, time) VALUES (?, ?, ?, 0)",
            (N, hashlib.sha256(b"\x00" + copy).digest(), copy),
        )
    report = verify(built)
    assert report.bad_seqs() == [N]
    kinds = {f.kind for f in report.findings}
    assert {"moved", "beyond_cursor"} <= kinds


def test_a_row_inserted_by_shifting_the_rest_is_named(built: Path) -> None:
    with tamper(built) as db:
        forged = body(db, 650)
        for seq in range(N - 1, 689, -1):  # make room at 690
            db.execute("UPDATE audit_entries SET seq=? WHERE seq=?", (seq + 1, seq))
        db.execute(
            "INSERT INTO audit_entries (seq, leaf_hash, body, time) VALUES (690, ?, ?, 0)",
            (hashlib.sha256(b"\x00" + forged).digest(), forged),
        )
    report = verify(built)
    assert report.bad_seqs() == list(range(690, N + 1))
    shifted = [f for f in report.findings if f.seq == 695 and f.kind == "moved"]
    assert "entry 694's" in shifted[0].message


def test_a_rewritten_body_and_leaf_hash_are_named_exactly(built: Path) -> None:
    with tamper(built) as db:
        b = body(db, 77).replace(b'"outcome":"success"', b'"outcome":"failure"')
        db.execute(
            "UPDATE audit_entries SET body=?, leaf_hash=? WHERE seq=77",
            (b, hashlib.sha256(b"\x00" + b).digest()),
        )
    report = verify(built)
    assert report.bad_seqs() == [77]
    assert [f.kind for f in report.findings if f.seq is not None] == ["rewritten"]


def test_a_rewrite_in_the_unsigned_tail_is_named(make_log: LogFactory, db_path: Path) -> None:
    log = make_log(lifecycle=False)
    log.record_many(spec(i) for i in range(40))
    log.catch_up()  # in the node cache, but no signed head yet
    log.close()
    with tamper(db_path) as db:
        b = body(db, 33).replace(b'"i":33', b'"i":3')
        db.execute(
            "UPDATE audit_entries SET body=?, leaf_hash=? WHERE seq=33",
            (b, hashlib.sha256(b"\x00" + b).digest()),
        )
    report = verify(db_path)
    assert report.bad_seqs() == [33]


def test_a_rewrite_of_entries_and_node_cache_is_bounded_by_the_signed_heads(
    built: Path,
) -> None:
    with tamper(built) as db:
        b = body(db, 500).replace(b'"i":500', b'"i":5')
        leaf = hashlib.sha256(b"\x00" + b).digest()
        db.execute("UPDATE audit_entries SET body=?, leaf_hash=? WHERE seq=500", (b, leaf))
        db.execute("UPDATE audit_nodes SET hash=? WHERE level=0 AND idx=500", (leaf,))
        db.execute("DELETE FROM audit_nodes WHERE level > 0")  # hide the higher levels too
    report = verify(built)
    ranged = [f for f in report.findings if f.kind == "rewritten_range"]
    assert len(ranged) == 1
    assert "seq 300..699" in ranged[0].message  # between the head at 300 and the head at 700


def test_a_range_verification_checks_only_that_range(built: Path) -> None:
    with tamper(built) as db:
        db.execute("DELETE FROM audit_entries WHERE seq=20")
    assert verify(built, start=100, stop=400).ok
    assert verify(built, start=0, stop=50).bad_seqs() == [20]


def test_a_saved_tree_head_detects_rewritten_history(make_log: LogFactory, db_path: Path) -> None:
    log = make_log(lifecycle=False)
    log.record_many(spec(i) for i in range(50))
    saved = log.sign_tree_head().to_json()  # the auditor keeps this copy
    key = {saved["key_id"]: bytes.fromhex(_key_hex(log))}
    log.close()
    # The attacker holds the DB *and* the signing key: rewrites seq 10, rebuilds
    # every derived table and re-signs. Every row and head is self-consistent.
    with tamper(db_path) as db:
        b = body(db, 10).replace(b'"i":10', b'"i":11')
        db.execute(
            "UPDATE audit_entries SET body=?, leaf_hash=? WHERE seq=10",
            (b, hashlib.sha256(b"\x00" + b).digest()),
        )
        db.execute("DELETE FROM audit_nodes")
        db.execute("DELETE FROM audit_tree_heads")
        db.execute("UPDATE audit_state SET value=0 WHERE name='tree_size'")
        db.execute(
            "UPDATE audit_state SET hash=? WHERE name='tree_size'", (hashlib.sha256(b"").digest(),)
        )
    forged_log = make_log(lifecycle=False)
    forged_log.record_many(spec(i) for i in range(50, 60))
    forged_log.sign_tree_head()
    assert verify_store(forged_log.store, service="gateway").ok  # self-consistent forgery
    proof = forged_log.consistency_proof(50).to_json()
    with pytest.raises(standalone.VerificationError, match="history was rewritten"):
        standalone.cmd_consistency(proof, key, saved)


def _key_hex(log: object) -> str:
    from paywarden.audit.signing import load_public_keys

    with getattr(log, "store").reading() as conn:  # noqa: B009
        (info,) = load_public_keys(conn).values()
    return info.public_key.hex()
