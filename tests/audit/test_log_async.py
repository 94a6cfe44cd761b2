"""``AuditLog.arecord``: the awaitable append. Durable and in order, settles
whole batches, fails every waiter of a failed batch, and survives cancellation
and timeouts without losing or duplicating an entry."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from paywarden.audit.entry import Entry
from paywarden.audit.errors import AuditEntryError, AuditWriteError
from paywarden.audit.log import AuditLog
from paywarden.audit.store import Build
from paywarden.audit.verify import verify_store
from tests.audit.conftest import LogFactory, spec

Runner = Callable[[Coroutine[Any, Any, Any]], Any]


def _uvloop_run(coro: Coroutine[Any, Any, Any]) -> Any:
    uvloop = pytest.importorskip("uvloop")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    """Both event loops the gateway may run on (uvicorn picks uvloop when installed)."""
    return asyncio.run if request.param == "asyncio" else _uvloop_run


def _committed(db_path: Path) -> list[tuple[int, bytes]]:
    """Rows as a separate connection (another process) sees them: committed ones only."""
    db = sqlite3.connect(db_path)
    try:
        return [
            (s, bytes(b)) for s, b in db.execute("SELECT seq, body FROM audit_entries ORDER BY seq")
        ]
    finally:
        db.close()


class HeldStore:
    """Holds the writer inside ``store.append`` until released, so a test can
    line callers up behind it; optionally fails the appends it sees."""

    def __init__(self, log: AuditLog, *, fail: bool = False) -> None:
        self.calls: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self._real = log.store.append
        self._fail = fail

    def append(self, count: int, now_micros: int, build: Build) -> int:
        self.calls.append(count)
        self.entered.set()
        if not self.release.wait(timeout=10):
            raise AssertionError("the test never released the writer")
        if self._fail:
            raise sqlite3.OperationalError("disk I/O error")
        return self._real(count, now_micros, build)


@pytest.fixture
def held(
    make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., HeldStore]]:
    stores: list[HeldStore] = []

    def hold(log: AuditLog, **kw: Any) -> HeldStore:
        h = HeldStore(log, **kw)
        monkeypatch.setattr(log.store, "append", h.append)
        stores.append(h)
        return h

    yield hold
    for h in stores:  # never leave a writer stuck, whatever the test did
        h.release.set()


async def _until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.001)


# ----------------------------------------------------------------- durable


def test_arecord_returns_only_once_the_entry_is_committed(
    make_log: LogFactory, db_path: Path, run: Runner
) -> None:
    log = make_log(lifecycle=False)

    async def main() -> list[int]:
        seqs = []
        for i in range(5):
            seq = await log.arecord(**spec(i))
            # Visible to another connection the moment arecord returns: committed.
            seq_, body = _committed(db_path)[-1]
            assert seq_ == seq and Entry.from_body(body).details == {"i": i}
            seqs.append(seq)
        return seqs

    assert run(main()) == [0, 1, 2, 3, 4]
    # ... with the store's durability settings: WAL and synchronous=FULL (2).
    db = log.store._append_connection()
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_concurrent_arecords_get_dense_seqs_in_submission_order(
    make_log: LogFactory, run: Runner
) -> None:
    log = make_log(lifecycle=False)

    async def main() -> list[int]:
        # Each task queues its entry before its first suspension, so tasks
        # started in order are committed in that order, in shared batches.
        return list(await asyncio.gather(*(log.arecord(**spec(i)) for i in range(300))))

    seqs = run(main())
    assert seqs == list(range(300))
    assert [en.details["i"] for en in log.entries()] == list(range(300))
    report = verify_store(log.store, service="gateway")
    assert report.ok, report.findings


def test_threads_and_two_event_loops_share_one_log(make_log: LogFactory) -> None:
    log = make_log(lifecycle=False)
    got: list[int] = []
    lock = threading.Lock()

    def in_loop(base: int) -> None:
        async def main() -> list[int]:
            return list(await asyncio.gather(*(log.arecord(**spec(base + i)) for i in range(150))))

        seqs = asyncio.run(main())
        with lock:
            got.extend(seqs)

    def in_thread(base: int) -> None:
        for i in range(40):
            seq = log.record(**spec(base + i))
            with lock:
                got.append(seq)

    workers = [threading.Thread(target=in_loop, args=(b,)) for b in (1000, 2000)]
    workers += [threading.Thread(target=in_thread, args=(b,)) for b in (3000, 4000, 5000)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(got) == list(range(2 * 150 + 3 * 40))
    # Each seq holds the entry its caller wrote.
    assert all(en.seq == i for i, en in enumerate(log.entries()))


# ----------------------------------------------------------------- failures


def test_a_failed_batch_fails_every_waiter_in_it(
    make_log: LogFactory, held: Callable[..., HeldStore], run: Runner
) -> None:
    log = make_log(lifecycle=False)
    hold = held(log, fail=True)
    thread_errors: list[BaseException] = []

    def thread_caller() -> None:
        try:
            log.record(**spec(99))
        except AuditWriteError as e:
            thread_errors.append(e)

    async def main() -> list[int | BaseException]:
        first = asyncio.ensure_future(log.arecord(**spec(0)))
        await _until(hold.entered.is_set)  # the writer holds entry 0's batch
        rest = [asyncio.ensure_future(log.arecord(**spec(i))) for i in range(1, 21)]
        await asyncio.sleep(0)  # all 20 queued behind it
        caller = threading.Thread(target=thread_caller)
        caller.start()
        await _until(lambda: log._queue.qsize() == 21)
        hold.release.set()
        results = await asyncio.gather(first, *rest, return_exceptions=True)
        await asyncio.to_thread(caller.join)
        return list(results)

    results = run(main())
    assert hold.calls == [1, 21]  # one batch of 1, then one of 20 tasks and a thread
    for result in [*results, *thread_errors]:
        assert isinstance(result, AuditWriteError)
        assert isinstance(result.__cause__, sqlite3.OperationalError)
    assert len(thread_errors) == 1
    # Every waiter has its own exception object: tasks re-raising them do not
    # share one traceback.
    assert len({id(r) for r in results}) == len(results)
    assert log.size() == 0


def test_a_store_that_refuses_writes_fails_arecord(make_log: LogFactory, run: Runner) -> None:
    log = make_log(lifecycle=False)
    run(log.arecord(**spec(0)))
    log.store._append_connection().execute("PRAGMA query_only=1")
    with pytest.raises(AuditWriteError) as info:
        run(log.arecord(**spec(1)))
    assert "readonly" in str(info.value.__cause__)
    assert log.size() == 1


def test_arecord_refuses_bad_entries_before_queueing(make_log: LogFactory, run: Runner) -> None:
    log = make_log(lifecycle=False)
    with pytest.raises(AuditEntryError):
        run(log.arecord(**spec(0, details={"pan": "4242 4242 4242 4242"})))
    assert log.size() == 0


def test_a_closed_log_refuses_arecord(make_log: LogFactory, run: Runner) -> None:
    log = make_log()
    log.close()
    with pytest.raises(AuditWriteError):
        run(log.arecord(**spec(0)))


# ------------------------------------------------------ cancellation, timeout


def test_cancelling_an_awaiting_caller_neither_loses_nor_duplicates_its_entry(
    make_log: LogFactory, held: Callable[..., HeldStore], run: Runner
) -> None:
    log = make_log(lifecycle=False)
    hold = held(log)

    async def main() -> tuple[int, list[int]]:
        first = asyncio.ensure_future(log.arecord(**spec(0)))
        await _until(hold.entered.is_set)
        tasks = [asyncio.ensure_future(log.arecord(**spec(i))) for i in range(1, 11)]
        await asyncio.sleep(0)  # every task has queued its entry and awaits it
        for t in (first, *tasks[::2]):
            t.cancel()
        hold.release.set()
        results = await asyncio.gather(first, *tasks, return_exceptions=True)
        cancelled = [i for i, r in enumerate(results) if isinstance(r, asyncio.CancelledError)]
        # The log goes on: the next entry comes right after the cancelled ones.
        return await log.arecord(**spec(11)), cancelled

    last, cancelled = run(main())
    assert cancelled == [0, 1, 3, 5, 7, 9]
    assert last == 11
    assert [en.details["i"] for en in log.entries()] == list(range(12))


def test_a_caller_cancelled_before_it_ran_queued_nothing(make_log: LogFactory, run: Runner) -> None:
    log = make_log(lifecycle=False)

    async def main() -> None:
        task = asyncio.ensure_future(log.arecord(**spec(0)))
        task.cancel()  # before its first step: arecord never started
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await log.arecord(**spec(1)) == 0

    run(main())
    assert [en.details["i"] for en in log.entries()] == [1]


def test_arecord_times_out_and_its_entry_still_commits_once(
    make_log: LogFactory, held: Callable[..., HeldStore], run: Runner
) -> None:
    # The timeout also bounds the second arecord (two commits on a loaded
    # machine), so it is not tiny; the upper bound stays below HeldStore's 10 s.
    log = make_log(lifecycle=False, record_timeout=2.0)
    hold = held(log)

    async def main() -> int:
        started = time.monotonic()
        with pytest.raises(AuditWriteError, match=r"not confirmed within 2 s"):
            await log.arecord(**spec(0))
        assert 1.5 < time.monotonic() - started < 9.0
        hold.release.set()
        return await log.arecord(**spec(1))

    # Over-recording a timed-out attempt is acceptable; losing or repeating it is not.
    assert run(main()) == 1
    assert [en.details["i"] for en in log.entries()] == [0, 1]


def test_timeouts_expire_oldest_first_and_spare_the_settled(
    make_log: LogFactory, held: Callable[..., HeldStore], run: Runner
) -> None:
    # Entry 1 is queued 3 s after entry 0, so once entry 0 has expired there are
    # 3 s left (even on a loaded machine) to see entry 1 pending and commit it.
    log = make_log(lifecycle=False, record_timeout=4.0)
    hold = held(log)

    async def main() -> tuple[list[object], int]:
        first = asyncio.ensure_future(log.arecord(**spec(0)))
        await _until(hold.entered.is_set)
        await asyncio.sleep(3.0)
        later = asyncio.ensure_future(log.arecord(**spec(1)))
        await _until(first.done)  # entry 0 is past its deadline, entry 1 is not
        assert not later.done()
        hold.release.set()
        results = await asyncio.gather(first, later, return_exceptions=True)
        return list(results), await log.arecord(**spec(2))

    (first, later), last = run(main())
    assert isinstance(first, AuditWriteError) and later == 1 and last == 2
    assert "not confirmed within 4 s" in str(first)  # timed out, not failed by HeldStore


def test_finished_event_loops_are_not_kept_alive(make_log: LogFactory, run: Runner) -> None:
    import gc

    log = make_log(lifecycle=False)
    for i in range(5):
        run(log.arecord(**spec(i)))

    def released() -> bool:
        gc.collect()
        last = log._last_waiters
        return len(log._loop_waiters) == 0 and (last is None or last.loop is None)

    # The writer thread may still hold the last batch (and so its loop) for a
    # moment after waking the caller: wait for that, not for ever.
    deadline = time.monotonic() + 30
    while not released():
        assert time.monotonic() < deadline, "a finished event loop is kept alive"
        time.sleep(0.01)
    assert [e.details for e in log.entries()] == [{"i": i} for i in range(5)]
