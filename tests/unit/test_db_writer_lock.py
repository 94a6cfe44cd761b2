"""SQLite writers queue on a lock file across processes (paywarden.db._WriterLock)."""

from __future__ import annotations

import fcntl
import multiprocessing as mp
import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import func, select

from paywarden.db import Base, Database
from paywarden.events.models import Event
from paywarden.events.service import new_event

WAIT = 60


def _is_lock_file(link: str, db_file: str) -> bool:
    try:
        return os.readlink(link) == f"{db_file}-writelock"
    except OSError:
        return False


def _add(db: Database, n: int, tag: str) -> None:
    for i in range(n):
        with db.write() as s:
            s.add(new_event(account_id="acct_1", livemode=False, type=tag, obj={"i": i}, now=i))


def _hold_then_write(url: str, holding: mp.synchronize.Event, go: mp.synchronize.Event) -> None:
    db = Database(url)
    try:
        with db.write() as s:
            s.add(new_event(account_id="acct_1", livemode=False, type="child", obj={}, now=0))
            holding.set()
            assert go.wait(WAIT)
    finally:
        db.dispose()


def _writer(url: str, n: int, tag: str) -> None:
    db = Database(url)
    try:
        _add(db, n, tag)
    finally:
        db.dispose()


@pytest.fixture
def url(tmp_path: Path) -> str:
    u = f"sqlite:///{tmp_path / 'gateway.db'}"
    db = Database(u)
    Base.metadata.create_all(db.write_engine)
    db.dispose()
    return u


def count(db: Database, tag: str) -> int:
    with db.read() as s:
        return int(s.scalar(select(func.count()).select_from(Event).where(Event.type == tag)) or 0)


def test_a_writer_in_another_process_holds_the_lock_file(url: str, tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    holding, go = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold_then_write, args=(url, holding, go))
    child.start()
    try:
        assert holding.wait(WAIT)
        lock_file = tmp_path / "gateway.db-writelock"
        # The database file's permission bits, so whoever may write it may queue.
        db_mode = stat.S_IMODE((tmp_path / "gateway.db").stat().st_mode)
        assert stat.S_IMODE(lock_file.stat().st_mode) == db_mode & 0o666
        fd = os.open(lock_file, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):  # the child's transaction holds it
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        go.set()
        db = Database(url)
        try:
            _add(db, 1, "parent")  # waits for the child's commit, then goes ahead
            assert (count(db, "child"), count(db, "parent")) == (1, 1)
        finally:
            db.dispose()
    finally:
        go.set()
        child.join(WAIT)
    assert child.exitcode == 0


def test_concurrent_processes_and_threads_all_commit(url: str) -> None:
    import threading

    ctx = mp.get_context("spawn")
    children = [ctx.Process(target=_writer, args=(url, 100, f"p{i}")) for i in range(2)]
    for c in children:
        c.start()
    db = Database(url)
    try:
        threads = [threading.Thread(target=_add, args=(db, 100, f"t{i}")) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        for c in children:
            c.join(WAIT)
            assert c.exitcode == 0
        assert [count(db, tag) for tag in ("p0", "p1", "t0", "t1", "t2")] == [100] * 5
    finally:
        db.dispose()


def test_an_in_memory_database_has_no_lock_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    db = Database("sqlite://")
    try:
        Base.metadata.create_all(db.write_engine)
        with db.write() as s:
            s.add(new_event(account_id="a", livemode=False, type="x", obj={}, now=0))
    finally:
        db.dispose()
    assert list(tmp_path.iterdir()) == []


def test_the_lock_file_is_opened_again_after_a_fork(url: str) -> None:
    db = Database(url)
    try:
        _add(db, 1, "before")
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: its own open file, so its lock is its own
            try:
                _add(db, 1, "forked")
                db_file = str(Path(url.removeprefix("sqlite:///")).resolve())
                opened = [
                    f
                    for f in os.listdir("/proc/self/fd")
                    if _is_lock_file(f"/proc/self/fd/{f}", db_file)
                ]
                os.write(w, b"ok" if len(opened) == 1 else b"no")  # the inherited one closed
            finally:
                os._exit(0)
        os.close(w)
        assert os.read(r, 2) == b"ok"
        os.close(r)
        os.waitpid(pid, 0)
        _add(db, 1, "after")
        assert [count(db, t) for t in ("before", "forked", "after")] == [1, 1, 1]
    finally:
        db.dispose()


def test_an_unopenable_lock_file_falls_back_to_sqlites_own_locking(
    url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "gateway.db-writelock").mkdir()  # cannot be opened as a file
    db = Database(url)
    try:
        _add(db, 2, "fallback")
        assert count(db, "fallback") == 2
    finally:
        db.dispose()
    assert "cannot open the SQLite writer lock file" in caplog.text


def test_a_dropped_database_closes_its_lock_file(url: str, tmp_path: Path) -> None:
    import gc

    db_file = str((tmp_path / "gateway.db").resolve())

    def open_lock_files() -> int:
        fds = os.listdir("/proc/self/fd")
        return sum(1 for f in fds if _is_lock_file(f"/proc/self/fd/{f}", db_file))

    db = Database(url)
    _add(db, 1, "dropped")
    assert open_lock_files() == 1
    del db  # no dispose()
    gc.collect()
    assert open_lock_files() == 0
