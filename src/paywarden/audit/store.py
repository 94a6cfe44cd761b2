"""The audit log's storage: SQLAlchemy 2 Core tables on their own ``MetaData``
and their own Alembic history (version table ``audit_alembic_version``), on
SQLite or PostgreSQL.

Tables:

- ``audit_entries(seq, leaf_hash, body, time)``: one row per leaf; ``body`` is
  the exact leaf bytes, ``time`` the entry's time in µs (for retention).
- ``audit_nodes(level, idx, hash)``: the node cache, every perfect subtree the
  tree maintenance has completed, leaves (level 0) included. Proofs are served
  from it; verification compares recomputed subtrees against it to name a
  rewritten entry.
- ``audit_tree_heads``: signed tree heads. ``audit_signing_keys``: Ed25519
  public keys (kept forever) and sealed private keys (``retired`` once rotated).
- ``audit_archives``: archived segments and their signed manifests.
- ``audit_state``: ``next_seq``/``last_time`` (the append cursor), ``tree_size``
  (+ root: how far the node cache reaches), ``first_online`` (first seq not yet
  archived). ``audit_secrets``: sealed service secrets (the vault's pseudonym key).

Durability: SQLite runs in WAL mode with ``synchronous=FULL``, so a commit is on
disk when it returns (WAL with ``NORMAL`` could lose the last commits on power
loss, which "blocks until durably committed" forbids).

Writers are serialised so sequence numbers stay dense and unique across
threads *and* processes: on SQLite a process-wide lock plus ``BEGIN IMMEDIATE``
(the database's single write lock); on PostgreSQL ``pg_advisory_xact_lock``
with a key per kind of writer (appends do not wait for tree maintenance).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    and_,
    bindparam,
    case,
    create_engine,
    event,
    insert,
    or_,
    select,
    text,
    update,
)

from paywarden.db import NAMING

SEQ = BigInteger().with_variant(Integer(), "sqlite")  # rowid alias on SQLite: rows stored in order

metadata = MetaData(naming_convention=NAMING)

entries = Table(
    "audit_entries",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=False),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("time", BigInteger, nullable=False),
    Index("ix_audit_entries_time", "time"),
)

nodes = Table(
    "audit_nodes",
    metadata,
    Column("level", SmallInteger, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
    sqlite_with_rowid=False,
)

tree_heads = Table(
    "audit_tree_heads",
    metadata,
    Column("id", SEQ, primary_key=True, autoincrement=True),
    Column("tree_size", BigInteger, nullable=False),
    Column("root_hash", LargeBinary(32), nullable=False),
    Column("timestamp", BigInteger, nullable=False),  # ms since the epoch
    Column("key_id", String(16), nullable=False),
    Column("signature", LargeBinary(64), nullable=False),
    Index("ix_audit_tree_heads_tree_size", "tree_size"),
)

signing_keys = Table(
    "audit_signing_keys",
    metadata,
    Column("key_id", String(16), primary_key=True),
    Column("public_key", LargeBinary(32), nullable=False),
    Column("sealed_private", LargeBinary, nullable=False),
    Column("created", BigInteger, nullable=False),  # ms
    Column("retired", BigInteger, nullable=True),  # ms; NULL = the active key
)

archives = Table(
    "audit_archives",
    metadata,
    Column("first_seq", BigInteger, primary_key=True, autoincrement=False),
    Column("stop_seq", BigInteger, nullable=False),
    Column("first_time", BigInteger, nullable=False),  # µs
    Column("last_time", BigInteger, nullable=False),  # µs
    Column("file", String(255), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("manifest", Text, nullable=False),
    Column("created", BigInteger, nullable=False),  # ms
    Column("deleted", BigInteger, nullable=True),  # ms; set when retention removed the file
)

state = Table(
    "audit_state",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", BigInteger, nullable=False),
    Column("hash", LargeBinary(32), nullable=True),
)

secrets = Table(
    "audit_secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("sealed", LargeBinary, nullable=False),
    Column("created", BigInteger, nullable=False),
)

ENTRY_COLUMNS = ("seq", "leaf_hash", "body", "time")
Row = tuple[int, bytes, bytes, int]
Build = Callable[[int, int], list[Row]]

# Built once: constructing Core statements per commit costs more than running them.
_READ_CURSOR = select(state.c.name, state.c.value).where(
    state.c.name.in_(("next_seq", "last_time"))
)
_WRITE_CURSOR = (
    update(state)
    .where(state.c.name.in_(("next_seq", "last_time")))
    .values(
        value=case(
            (state.c.name == "next_seq", bindparam("next_seq")),
            else_=bindparam("last_time"),
        )
    )
)
_SQLITE_READ_CURSOR = "SELECT name, value FROM audit_state WHERE name IN ('next_seq', 'last_time')"
_SQLITE_WRITE_CURSOR = (
    "UPDATE audit_state SET value = CASE name WHEN 'next_seq' THEN ? ELSE ? END "
    "WHERE name IN ('next_seq', 'last_time')"
)
# Reads and advances the append cursor in one statement: (count, now µs).
_SQLITE_ADVANCE_CURSOR = (
    "UPDATE audit_state SET value = CASE name WHEN 'next_seq' THEN value + ? "
    "ELSE max(value, ?) END WHERE name IN ('next_seq', 'last_time') RETURNING name, value"
)
_HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)


def _values_sql(table: str, columns: tuple[str, ...], rows: int) -> str:
    one = "(" + ", ".join("?" * len(columns)) + ")"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES " + ", ".join([one] * rows)  # noqa: S608 - names are our constants


# Multi-row INSERTs of 2**k rows, k <= _MAX_ROWS_LOG2 (4 columns: 512 parameters
# at most, within SQLite's default limit of 999 before 3.32 as well).
_MAX_ROWS_LOG2 = 7


def _insert_many(
    db: sqlite3.Connection, statements: list[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """Insert ``rows`` with a few multi-row INSERTs rather than ``executemany``.

    The sqlite3 module releases the GIL around every step, and ``executemany``
    steps once per row; each release means winning the GIL back from the
    threads that build entries (with CPU-bound threads around, a 200-row
    transaction took 259 ms with ``executemany`` and 138 ms this way).
    Multi-row statements of ``2**k`` rows (the binary digits of ``len(rows)``:
    one statement per 128 rows plus at most 7, all prepared once and kept in
    the connection's statement cache) step a handful of times. In the audit
    benchmark: ~4 % more appends/s, ~3 µs less CPU per entry.
    """
    i, n = 0, len(rows)
    k = _MAX_ROWS_LOG2
    while i < n:
        while (1 << k) > n - i:
            k -= 1
        size = 1 << k
        db.execute(statements[k], [v for row in rows[i : i + size] for v in row])
        i += size


_INSERT_ENTRIES = [
    _values_sql("audit_entries", ("seq", "leaf_hash", "body", "time"), 1 << k)
    for k in range(_MAX_ROWS_LOG2 + 1)
]


def _insert_entries(db: sqlite3.Connection, rows: Sequence[Row]) -> None:
    _insert_many(db, _INSERT_ENTRIES, rows)


_INSERT_STATEMENTS: dict[tuple[str, tuple[str, ...]], list[str]] = {}

# pg_advisory_xact_lock keys (arbitrary, fixed): one per kind of writer.
APPEND_LOCK = 0x5057_4175_6401  # "PWAud" 1
TREE_LOCK = 0x5057_4175_6402
ADMIN_LOCK = 0x5057_4175_6403  # keys, heads, archives


def sqlite_path(url: str) -> Path | None:
    """The file behind a ``sqlite:///`` URL, or ``None``."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url == prefix + ":memory:":
        return None
    return Path(url[len(prefix) :].split("?", 1)[0])


_MIGRATION_LOCK = 0x5057_4155_4D47  # "PWAUMG": the audit store's Alembic upgrade


class AuditStore:
    """Owns the engine of one audit store (one per service)."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = sqlite_path(url)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
        self.engine = self._sqlite_engine(url) if self.is_sqlite else self._pg_engine(url)
        if migrate:
            self._migrate(url)
        # SQLite has one writer: threads of this process queue on a lock, and
        # processes on an flock of ``<db>.lock``, rather than in SQLite's busy
        # handler, which polls with sleeps of up to 100 ms.
        self._sqlite_lock = threading.Lock()
        path = sqlite_path(url) if self.is_sqlite else None
        self._lock_path = path.with_name(path.name + ".lock") if path is not None else None
        self._lock_fd: int | None = None
        self._append_conn: sqlite3.Connection | None = None

    def _migrate(self, url: str) -> None:
        """Alembic upgrade, one process at a time: gateway workers start
        together and would otherwise race to create the same tables."""
        from paywarden.audit.migrations import upgrade

        if self.is_sqlite:
            path = sqlite_path(url)
            if path is None:  # in-memory
                upgrade(url)
                return
            fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                upgrade(url)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
            return
        with self.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK})
            try:
                upgrade(url)
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK})
                conn.commit()

    def __repr__(self) -> str:
        return f"AuditStore({self.engine.url.render_as_string(hide_password=True)!r})"

    @staticmethod
    def _sqlite_engine(url: str) -> Engine:
        # hide_parameters: a failed statement's message must not carry entry bodies.
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            hide_parameters=True,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.isolation_level = None  # BEGIN is ours
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            immediate = conn.get_execution_options().get("audit_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    @staticmethod
    def _pg_engine(url: str) -> Engine:
        return create_engine(
            url, pool_size=5, max_overflow=5, pool_pre_ping=True, hide_parameters=True
        )

    @contextmanager
    def writing(self, lock: int) -> Iterator[Connection]:
        """One serialised write transaction; commits on success."""
        if self.is_sqlite:
            with (
                self._process_lock(),
                self.engine.connect().execution_options(audit_write=True) as conn,
                conn.begin(),
            ):
                yield conn
            return
        with self.engine.connect() as conn, conn.begin():
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock})
            yield conn

    @contextmanager
    def _process_lock(self) -> Iterator[None]:
        with self._sqlite_lock:
            if self._lock_path is None:
                yield
                return
            if self._lock_fd is None:
                self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        with self._sqlite_lock:
            if self._append_conn is not None:
                self._append_conn.close()
                self._append_conn = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
        self.engine.dispose()

    # ---------------------------------------------------------------- append

    def append(self, count: int, now_micros: int, build: Build) -> int:
        """One serialised append transaction of ``count`` entries; returns the
        first new ``seq``.

        Under the append lock, advances the cursor by ``count`` (``next_seq``)
        and to ``max(last_time, now_micros)`` (times never go backwards in seq
        order, even if the clock does: retention cuts the log by time), calls
        ``build(first_seq, time) -> rows`` for the ``count`` rows
        ``(seq, leaf_hash, body, time)`` and inserts them, all in one
        transaction.

        On SQLite this runs on one dedicated driver connection with no ORM or
        Core layer in between, in as few statements as possible: the writer
        releases the GIL for every statement it steps and must win it back
        from the callers each time, which under load costs far more than the
        statement (see :func:`_insert_many`). The cursor is read and
        advanced by one ``UPDATE … RETURNING``.
        """
        if not self.is_sqlite:
            with self.writing(APPEND_LOCK) as conn:
                cursor = dict(conn.execute(_READ_CURSOR).all())
                first = int(cursor["next_seq"])
                micros = max(now_micros, int(cursor["last_time"]))
                rows = build(first, micros)
                if len(rows) != count:
                    raise ValueError("build() returned a different number of rows")
                self.insert_rows(conn, entries, ENTRY_COLUMNS, rows)
                conn.execute(_WRITE_CURSOR, {"next_seq": first + count, "last_time": micros})
            return first
        with self._process_lock():
            db = self._append_connection()
            db.execute("BEGIN IMMEDIATE")
            try:
                if _HAS_RETURNING:
                    cursor = dict(
                        db.execute(_SQLITE_ADVANCE_CURSOR, (count, now_micros)).fetchall()
                    )
                    first = int(cursor["next_seq"]) - count
                    micros = int(cursor["last_time"])
                else:  # pragma: no cover - SQLite before 3.35
                    cursor = dict(db.execute(_SQLITE_READ_CURSOR).fetchall())
                    first = int(cursor["next_seq"])
                    micros = max(now_micros, int(cursor["last_time"]))
                    db.execute(_SQLITE_WRITE_CURSOR, (first + count, micros))
                rows = build(first, micros)
                if len(rows) != count:
                    raise ValueError("build() returned a different number of rows")
                _insert_entries(db, rows)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return first

    def _append_connection(self) -> sqlite3.Connection:
        if self._append_conn is None:
            path = sqlite_path(self.url)
            if path is None:
                raise ValueError("the SQLite audit store needs a file")
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=30000")
            self._append_conn = db
        return self._append_conn

    # ------------------------------------------------------------ shared reads

    @staticmethod
    def read_state(conn: Connection) -> dict[str, tuple[int, bytes | None]]:
        rows = conn.execute(select(state.c.name, state.c.value, state.c.hash)).all()
        return {name: (int(value), h) for name, value, h in rows}

    @staticmethod
    def set_state(conn: Connection, name: str, value: int, hash: bytes | None = None) -> None:
        conn.execute(update(state).where(state.c.name == name).values(value=value, hash=hash))

    def insert_rows(
        self, conn: Connection, table: Table, columns: tuple[str, ...], rows: list[tuple[Any, ...]]
    ) -> None:
        """Bulk insert on the hot paths (appends, node cache).

        On SQLite the rows go straight to the driver inside the same
        transaction, as a few multi-row INSERTs (:func:`_insert_many`):
        SQLAlchemy's per-row parameter processing costs about 8 µs a row there,
        more than the insert itself, and ``executemany`` gives the GIL away once
        a row, so the tree maintenance would hold the append lock while winning
        it back thousands of times. Elsewhere the Core insert (batched by
        insertmanyvalues) is used.
        """
        if not rows:
            return
        if self.is_sqlite:
            key = (table.name, columns)
            statements = _INSERT_STATEMENTS.get(key)
            if statements is None:
                statements = [
                    _values_sql(table.name, columns, 1 << k) for k in range(_MAX_ROWS_LOG2 + 1)
                ]
                _INSERT_STATEMENTS[key] = statements
            _insert_many(conn.connection.driver_connection, statements, rows)  # type: ignore[arg-type]
            return
        conn.execute(insert(table), [dict(zip(columns, row, strict=True)) for row in rows])

    @staticmethod
    def get_nodes(conn: Connection, coords: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """Cached perfect subtrees by ``(level, idx)``; missing ones are absent."""
        out: dict[tuple[int, int], bytes] = {}
        for i in range(0, len(coords), 200):
            part = coords[i : i + 200]
            cond = or_(*(and_(nodes.c.level == lv, nodes.c.idx == ix) for lv, ix in part))
            for level, idx, h in conn.execute(
                select(nodes.c.level, nodes.c.idx, nodes.c.hash).where(cond)
            ):
                out[int(level), int(idx)] = as_bytes(h)
        return out


def as_bytes(value: object) -> bytes:
    """A BLOB column's value as bytes, whatever a hand edit left there.

    Someone changing a row with the sqlite3 shell easily turns a BLOB into TEXT
    (``replace()`` returns text) or NULL; verification must then name the row,
    not crash on it."""
    if type(value) is bytes:
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if value is None:
        return b""
    return str(value).encode("utf-8", "surrogateescape")
