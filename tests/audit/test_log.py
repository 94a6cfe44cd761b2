"""AuditLog: durable group-committed appends, heads, proofs, keys, failures."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from paywarden.audit import merkle
from paywarden.audit import verifier as standalone
from paywarden.audit.entry import Actor, Entry, Origin, Resource
from paywarden.audit.errors import AuditEntryError, AuditWriteError
from paywarden.audit.signing import TreeHead
from paywarden.audit.verify import verify_store
from tests.audit.conftest import Clock, LogFactory, spec


def test_record_returns_dense_seqs_and_lifecycle_entries(make_log: LogFactory) -> None:
    log = make_log()
    seqs = [log.record(**spec(i)) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]  # seq 0 is audit.started
    events = [en.event for en in log.entries()]
    assert events[0] == "audit.started"
    log.close()
    entries = [Entry.from_body(b) for _, b in _rows(log)]
    assert entries[-1].event == "audit.stopped"
    assert [en.seq for en in entries] == list(range(len(entries)))
    # Closing signs a head over everything, including audit.stopped.
    head = log.latest_tree_head()
    assert head is not None and head.tree_size == len(entries)


def _rows(log: object) -> list[tuple[int, bytes]]:
    path = Path(str(getattr(log, "store").url).removeprefix("sqlite:///"))  # noqa: B009
    db = sqlite3.connect(path)
    try:
        return [
            (s, bytes(b)) for s, b in db.execute("SELECT seq, body FROM audit_entries ORDER BY seq")
        ]
    finally:
        db.close()


def test_group_commit_with_many_threads_gives_dense_unique_seqs(make_log: LogFactory) -> None:
    log = make_log(lifecycle=False)
    got: list[int] = []
    lock = threading.Lock()

    def work(t: int) -> None:
        for i in range(40):
            seq = log.record(**spec(t * 1000 + i))
            with lock:
                got.append(seq)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(24)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(got) == list(range(24 * 40))
    # Each seq holds the entry its caller wrote: the body says so.
    assert all(en.seq == i for i, en in enumerate(log.entries()))


def test_a_lone_caller_never_waits_for_the_linger_timer(make_log: LogFactory) -> None:
    # A long linger, so three commits on a loaded machine cannot come near it,
    # while a single wait for the timer would still fail the bound.
    log = make_log(lifecycle=False, linger_seconds=10.0)
    start = time.monotonic()
    for i in range(3):
        log.record(**spec(i))
    assert time.monotonic() - start < 10.0


def test_record_many_commits_in_chunks(make_log: LogFactory) -> None:
    log = make_log(lifecycle=False)
    seqs = log.record_many((spec(i) for i in range(2500)), chunk=1000)
    assert seqs == list(range(2500))
    size, root = log.catch_up()
    assert size == 2500
    assert root == merkle.root([merkle.leaf_hash(b) for _, b in log.raw_entries()])


def test_record_raises_when_the_table_is_dropped(make_log: LogFactory, db_path: Path) -> None:
    log = make_log(lifecycle=False)
    log.record(**spec(0))
    db = sqlite3.connect(db_path)
    db.execute("DROP TABLE audit_entries")
    db.commit()
    db.close()
    with pytest.raises(AuditWriteError):
        log.record(**spec(1))


def test_opening_a_read_only_store_fails_loudly(make_log: LogFactory, db_path: Path) -> None:
    log = make_log()
    log.close()
    for name in os.listdir(db_path.parent):
        os.chmod(db_path.parent / name, 0o444)
    os.chmod(db_path.parent, 0o555)
    try:
        if os.access(db_path, os.W_OK):  # root ignores file modes
            pytest.skip("running as root: file modes do not stop writes")
        with pytest.raises(AuditWriteError):
            make_log()
    finally:
        os.chmod(db_path.parent, 0o755)


def test_record_refuses_bad_entries_before_queueing(make_log: LogFactory) -> None:
    log = make_log(lifecycle=False)
    with pytest.raises(AuditEntryError):
        log.record(**spec(0, details={"pan": "4242424242424242"}))
    assert log.size() == 0


def test_a_closed_log_refuses_to_record(make_log: LogFactory) -> None:
    log = make_log()
    log.close()
    with pytest.raises(AuditWriteError):
        log.record(**spec(0))


def test_no_sensitive_raw_value_reaches_any_stored_byte(
    make_log: LogFactory, db_path: Path
) -> None:
    log = make_log()
    email, prefix = "carol.sensitive@example.org", "sk_live_SENSITIVEprefix"
    log.record(
        event="api_key.created",
        outcome="success",
        actor=Actor.operator("ops"),
        origin=Origin(ip="198.51.100.7", request_id="req_9"),
        resource=Resource("api_key", "key_1"),
        account="acct_1",
        sensitive={"email": email, "key_prefix": prefix},
    )
    log.sign_tree_head()
    log.close()
    stored = b"".join(p.read_bytes() for p in db_path.parent.iterdir() if p.is_file())
    assert email.encode() not in stored and prefix.encode() not in stored
    assert b"198.51.100.7" in stored  # sanity: the store is what we searched


def test_times_are_monotonic_even_if_the_clock_goes_back(
    make_log: LogFactory, clock: Clock
) -> None:
    log = make_log(lifecycle=False)
    log.record(**spec(0))
    clock.advance(seconds=-3600)
    log.record(**spec(1))
    first, second = log.entries()
    assert first.time == second.time == "2026-01-15T12:00:00.000000Z"


def test_signed_heads_and_proofs_verify_independently(make_log: LogFactory) -> None:
    log = make_log(lifecycle=False)
    log.record_many(spec(i) for i in range(37))
    old = log.sign_tree_head()
    log.record_many(spec(i) for i in range(37, 100))
    new = log.sign_tree_head()
    assert (old.tree_size, new.tree_size) == (37, 100)
    keys = {old.key_id: _public_key(log, old.key_id)}
    standalone.check_head(new.to_json(), keys)
    for seq in (0, 36, 64, 99):
        proof = log.inclusion_proof(seq).to_json()
        assert proof["tree_size"] == 100
        assert any("included" in line for line in standalone.cmd_inclusion(proof, keys))
    cons = log.consistency_proof(37, 100).to_json()
    standalone.cmd_consistency(cons, keys, old.to_json())
    assert log.sign_if_changed() is None  # the periodic signer skips an unchanged log


def _public_key(log: object, key_id: str) -> bytes:
    from paywarden.audit.signing import load_public_keys

    with getattr(log, "store").reading() as conn:  # noqa: B009
        return load_public_keys(conn)[key_id].public_key


def test_key_rotation_keeps_old_heads_verifiable(make_log: LogFactory) -> None:
    log = make_log(lifecycle=False)
    log.record_many(spec(i) for i in range(10))
    first = log.sign_tree_head()
    old_id, new_id = log.rotate_signing_key()
    assert old_id == first.key_id and new_id != old_id
    log.record(**spec(99))
    later = log.sign_tree_head()
    assert later.key_id == new_id
    heads = log.tree_heads()
    # The handover entry names the new key and is covered by both keys' heads.
    rotation = next(en for en in log.entries() if en.event == "audit.signing_key.rotated")
    assert rotation.details["new_key_id"] == new_id
    covering = {h.key_id for h in heads if h.tree_size == rotation.seq + 1}
    assert covering == {old_id, new_id}
    report = verify_store(log.store, service="gateway")
    assert report.ok, report.findings
    assert report.heads_checked == len(heads)
    assert TreeHead.from_json(first.to_json()).verify(_public_key(log, old_id))


def test_heads_signed_by_an_unknown_key_are_reported(make_log: LogFactory, db_path: Path) -> None:
    log = make_log(lifecycle=False)
    log.record(**spec(0))
    log.sign_tree_head()
    log.close()
    db = sqlite3.connect(db_path)
    db.execute("UPDATE audit_tree_heads SET signature = zeroblob(64)")
    db.commit()
    db.close()
    fresh = make_log(lifecycle=False)
    report = verify_store(fresh.store, service="gateway")
    assert [f.kind for f in report.findings] == ["head_signature"]


def test_proof_json_round_trips_through_the_standalone_verifier(make_log: LogFactory) -> None:
    log = make_log(lifecycle=False)
    log.record_many(spec(i) for i in range(20))
    proof = log.inclusion_proof(7)
    data = json.loads(json.dumps(proof.to_json()))
    assert Entry.from_body(data["entry"].encode()).seq == 7
    data["leaf_index"] = 8
    with pytest.raises(standalone.VerificationError):
        standalone.cmd_inclusion(data, None)


def test_record_raises_when_the_database_refuses_writes(make_log: LogFactory) -> None:
    # Works as root too (file modes do not): SQLite's own read-only switch.
    log = make_log(lifecycle=False)
    log.record(**spec(0))
    log.store._append_connection().execute("PRAGMA query_only=1")
    with pytest.raises(AuditWriteError) as info:
        log.record(**spec(1))
    assert "readonly" in str(info.value.__cause__)
    assert log.size() == 1


def test_stores_opened_together_migrate_one_at_a_time(tmp_path: Path) -> None:
    # Gateway workers start together and each opens the same audit store.
    import threading

    from paywarden.audit.store import AuditStore

    url = f"sqlite:///{tmp_path / 'together.sqlite'}"
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []
    stores: list[AuditStore] = []

    def open_store() -> None:
        barrier.wait()
        try:
            stores.append(AuditStore(url))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == [] and len(stores) == 4
    for store in stores:
        store.dispose()


@pytest.mark.parametrize("n", [0, 1, 2, 3, 255, 256, 257, 600])
def test_multi_row_inserts_write_every_row_once(n: int) -> None:
    from paywarden.audit.store import _insert_entries

    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE audit_entries (seq INTEGER PRIMARY KEY, leaf_hash, body, time)")
    rows = [(i, bytes([i % 256]) * 32, b"body %d" % i, i // 7) for i in range(n)]
    _insert_entries(db, rows)
    assert db.execute("SELECT * FROM audit_entries ORDER BY seq").fetchall() == rows


def test_appends_without_update_returning(
    make_log: LogFactory, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite before 3.35 has no RETURNING: the cursor is read, then written.
    from paywarden.audit import store

    monkeypatch.setattr(store, "_HAS_RETURNING", False)
    log = make_log(lifecycle=False)
    assert [log.record(**spec(i)) for i in range(3)] == [0, 1, 2]
    clock.advance(seconds=-60)  # times still never go backwards
    assert log.record_many(spec(i) for i in range(3, 10)) == list(range(3, 10))
    assert len({en.time for en in log.entries()}) == 1
    report = verify_store(log.store, service="gateway")
    assert report.ok, report.findings


def test_multi_row_inserts_fit_sqlite_before_3_32() -> None:
    """Builds before SQLite 3.32 allow 999 bound variables per statement."""
    from paywarden.audit.store import _insert_entries

    db = sqlite3.connect(":memory:")
    db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    db.execute("CREATE TABLE audit_entries (seq INTEGER PRIMARY KEY, leaf_hash, body, time)")
    rows = [(i, b"h" * 32, b"body %d" % i, i) for i in range(1000)]
    _insert_entries(db, rows)
    assert db.execute("SELECT count(*) FROM audit_entries").fetchone() == (1000,)
