"""Database engine and transactions (SQLAlchemy 2).

SQLite (WAL) is the embedded default; PostgreSQL is selected by URL. Write
transactions on SQLite start with ``BEGIN IMMEDIATE`` so two writers never
deadlock on a lock upgrade; on PostgreSQL, rows that decide money movement are
read ``FOR UPDATE``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Engine,
    Integer,
    MetaData,
    String,
    create_engine,
    event,
    make_url,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

log = logging.getLogger("paywarden.db")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, int: BigInteger, str: String(255)}


def _sqlite_engine(
    url: str, *, immediate: bool, journal_mode: str = "WAL", secure_delete: bool = False, **kw: Any
) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kw)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _rec: Any) -> None:
        # Take transaction control away from pysqlite so BEGIN is ours.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA journal_mode={journal_mode}")
        cur.execute(
            "PRAGMA synchronous=NORMAL" if journal_mode == "WAL" else "PRAGMA synchronous=FULL"
        )
        if secure_delete:
            cur.execute("PRAGMA secure_delete=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class _WriterLock:
    """One SQLite writer at a time across the processes sharing a database file.

    Threads of a process queue on a ``threading.Lock``; the thread at the head
    then takes an exclusive ``flock`` on ``<database>-writelock``, on which the
    other processes' heads wait in the kernel. SQLite's own busy handler, which
    would otherwise arbitrate between processes, waits by sleeping in growing
    steps (1, 2, 5 … 100 ms): with two gateway workers most of a second's
    confirms then queued behind sleeps. SQLite's locking still guards the data;
    this only decides who asks first. Writers that do not go through
    :class:`Database` (the ``sqlite3`` shell) still just meet SQLite's lock.

    The wait has no time limit, like the in-process queue: a writer hung inside
    its transaction holds up the others until it ends (SQLite's busy handler
    gave up after 30 s with "database is locked"). A process that dies holding
    the lock loses it with its file descriptors.

    The lock file gets the database file's permission bits and, when created by
    root, its owner, as SQLite does for its WAL and journal files; if it still
    cannot be opened, writers fall back to SQLite's busy handler.
    """

    def __init__(self, path: str | None) -> None:
        self._thread_lock = threading.Lock()
        self._db_path = path
        self._path = f"{path}-writelock" if path else None
        self._fd: int | None = None
        # Closes the descriptor if the Database is dropped without dispose().
        self._closer: Callable[[], object] | None = None
        _WRITER_LOCKS.add(self)

    def _file(self) -> int | None:
        if self._fd is None and self._path is not None:
            try:
                self._fd = _open_lock_file(self._path, self._db_path)
                self._closer = weakref.finalize(self, _close_quietly, self._fd)
            except OSError as exc:
                log.warning(
                    "cannot open the SQLite writer lock file %s (%s); "
                    "writers of several processes wait in SQLite's busy handler",
                    self._path,
                    exc.strerror,
                )
                self._path = None
        return self._fd

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._thread_lock:
            fd = self._file()
            if fd is None:
                yield
                return
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._thread_lock:
            self._forget_file()

    def _after_fork_in_child(self) -> None:
        # The child's copies: a new queue (another thread may have held the old
        # one at the fork), and its own open file (closing the inherited
        # descriptor leaves a lock the parent holds in place).
        self._thread_lock = threading.Lock()
        self._forget_file()

    def _forget_file(self) -> None:
        if self._closer is not None:
            self._closer()  # closes the descriptor, once
        self._closer = None
        self._fd = None


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _open_lock_file(path: str, db_path: str | None) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        st = os.stat(db_path) if db_path else None
    except FileNotFoundError:
        st = None
    if st is not None and os.fstat(fd).st_uid == os.geteuid():
        with contextlib.suppress(OSError):
            os.fchmod(fd, stat.S_IMODE(st.st_mode) & 0o666)
            if os.geteuid() == 0:
                os.fchown(fd, st.st_uid, st.st_gid)
    return fd


_WRITER_LOCKS: weakref.WeakSet[_WriterLock] = weakref.WeakSet()


def _reset_writer_locks_in_child() -> None:
    for lock in list(_WRITER_LOCKS):
        lock._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_writer_locks_in_child)


def _sqlite_file(url: str) -> str | None:
    """The database file of a SQLite URL, or None (in memory, or a URI)."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database


class Database:
    """Owns the engines; hands out read and write sessions."""

    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        sqlite_journal_mode: str = "WAL",
        sqlite_secure_delete: bool = False,
        hide_parameters: bool = False,
    ) -> None:
        """``sqlite_journal_mode`` / ``sqlite_secure_delete``: the vault runs with
        a rollback journal and secure delete, so no old page image (a shredded
        key, a used CVC) survives in a WAL file. ``hide_parameters``: database
        errors do not quote the statement's values (the vault's are other
        tenants' tokens and fingerprints when a batch fails)."""
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            opts: dict[str, Any] = {
                "journal_mode": sqlite_journal_mode,
                "secure_delete": sqlite_secure_delete,
                "echo": echo,
                "hide_parameters": hide_parameters,
            }
            self.read_engine = _sqlite_engine(url, immediate=False, **opts)
            self.write_engine = _sqlite_engine(url, immediate=True, **opts)
        else:
            self.write_engine = create_engine(
                url,
                echo=echo,
                pool_size=20,
                max_overflow=20,
                pool_pre_ping=True,
                hide_parameters=hide_parameters,
            )
            self.read_engine = self.write_engine
        self._write_lock = _WriterLock(_sqlite_file(url)) if self.is_sqlite else None
        self._read = sessionmaker(self.read_engine, expire_on_commit=False)
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as s, s.begin():
            yield s

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction: commits on success, rolls back on any exception.

        SQLite has one writer at a time. Writers queue on a lock (threads of
        this process) and a lock file (processes, see :class:`_WriterLock`)
        instead of SQLite's busy handler, which waits by sleeping in growing
        steps and turns contention into long tail latency.
        """
        if self._write_lock is None:
            with self._write() as s, s.begin():
                yield s
            return
        with self._write_lock.held(), self._write() as s, s.begin():
            yield s

    def dispose(self) -> None:
        self.read_engine.dispose()
        if self.write_engine is not self.read_engine:
            self.write_engine.dispose()
        if self._write_lock is not None:
            self._write_lock.close()


# Autoincrementing surrogate key: rowid on SQLite, BIGSERIAL-like elsewhere.
PK = BigInteger().with_variant(Integer(), "sqlite")


class ListableMixin:
    """Tenant-scoped object with a public id and a monotonic ``pk`` for cursors."""

    pk: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(unique=True)
    account_id: Mapped[str] = mapped_column(index=True)
    livemode: Mapped[bool]
    created: Mapped[int]
