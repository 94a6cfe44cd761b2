"""Velocity counters that survive a restart: memory, written through to SQL.

The default single node backend. Reads are served from memory
(:class:`~paywarden.fraud.velocity.MemoryVelocityStore`); every change is first
written to the database in its own transaction, under the store's lock, and only
then applied in memory, so a failed write changes nothing.

What is written is the event itself, one row per payment attempt (its time,
amount in US cents, pseudonymous entities and outcome), not the counters: a
confirm writes one row and its outcome updates that row, where writing the
counters meant some twenty upserts. On open, the rows of the last week are
replayed in time order, which rebuilds every counter and distinct-card set
exactly. The hourly sweep deletes rows that can no longer count. (Replay costs
about 30 µs a row, so a restart after a week of 100 payments a minute takes
about 30 s; deployments beyond that run the counters on Redis.)

Given a path, the store keeps its own SQLite file and talks to the driver
directly: one connection, WAL without an fsync per commit
(``synchronous=NORMAL``: a committed row survives the process; only an
operating-system crash can lose the last moments of counts), and the WAL
checkpointed by a background thread rather than by the confirm that happens to
fill it. This write sits inside every fraud decision, so it must cost tens of
microseconds, not the milliseconds of an ORM session.

Given a :class:`~paywarden.db.Database`, it creates its table there if missing
(plain portable SQL: SQLite or PostgreSQL) and writes through SQLAlchemy.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import text

from paywarden.db import Database
from paywarden.fraud.velocity import (
    OUTCOMES,
    RETENTION_SECONDS,
    MemoryVelocityStore,
    Outcome,
    PaymentEvent,
    _Attempt,
)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS fraud_velocity_attempt (
        attempt_id TEXT PRIMARY KEY, at DOUBLE PRECISION NOT NULL, usd_cents BIGINT NOT NULL,
        card TEXT, customer TEXT, email TEXT, ip_address TEXT, device TEXT, outcome TEXT)""",
    "CREATE INDEX IF NOT EXISTS fraud_velocity_attempt_at ON fraud_velocity_attempt (at)",
    # The counter tables of the first version: their counts are not carried over.
    "DROP TABLE IF EXISTS fraud_velocity_bucket",
    "DROP TABLE IF EXISTS fraud_velocity_card",
)
_INSERT_ATTEMPT = (
    "INSERT INTO fraud_velocity_attempt "
    "(attempt_id, at, usd_cents, card, customer, email, ip_address, device, outcome) "
    "VALUES (:id, :at, :usd, :e0, :e1, :e2, :e3, :e4, :outcome)"
)
# An event recorded without an attempt id is stored under one of these, which
# no confirm's attempt key can look like.
_ANONYMOUS = "~"

log = logging.getLogger("paywarden.fraud")


_Step = tuple[str, Sequence[dict[str, Any]]]


class _Backend(Protocol):
    def run(self, steps: Sequence[_Step]) -> None:
        """Execute every step (SQL, parameter sets) in one transaction."""

    def query(self, sql: str) -> list[tuple[Any, ...]]: ...

    def close(self) -> None: ...


class _AlchemyBackend:
    """Tables inside a :class:`Database` (SQLite or PostgreSQL)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def run(self, steps: Sequence[_Step]) -> None:
        with self._db.write() as s:
            for sql, rows in steps:
                if len(rows) == 1:
                    s.execute(text(sql), rows[0])
                elif rows:
                    s.execute(text(sql), list(rows))

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with self._db.read() as s:
            return [tuple(r) for r in s.execute(text(sql))]

    def close(self) -> None:
        return


class _FileBackend:
    """The store's own SQLite file, through the driver (see the module doc).

    Calls come from the store, under its lock, so one connection serves them.
    """

    CHECKPOINT_SECONDS = 2.0

    def __init__(self, path: Path) -> None:
        self._conn = self._connect(path)
        self._conn.execute("PRAGMA wal_autocheckpoint=0")
        self._path = path
        self._stop = threading.Event()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, name="velocity-checkpoint", daemon=True
        )
        self._checkpointer.start()

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def run(self, steps: Sequence[_Step]) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, rows in steps:
                if len(rows) == 1:
                    conn.execute(sql, rows[0])
                elif rows:
                    conn.executemany(sql, rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return list(self._conn.execute(sql))

    def _checkpoint_loop(self) -> None:
        conn: sqlite3.Connection | None = None
        while not self._stop.wait(self.CHECKPOINT_SECONDS):
            try:
                if conn is None:
                    conn = self._connect(self._path)
                # PASSIVE: copies what it can without waiting for the writer.
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                # Autocheckpoint is off: this thread must outlive a bad moment
                # (a locked or briefly unavailable file), or the WAL grows.
                log.exception("velocity WAL checkpoint failed; retrying")
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Called under the store's lock; a second call does nothing."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._checkpointer.join()
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._conn.close()


class SqliteVelocityStore(MemoryVelocityStore):
    def __init__(self, target: str | Path | Database) -> None:
        super().__init__()
        self._sql: _Backend = (
            _AlchemyBackend(target) if isinstance(target, Database) else _FileBackend(Path(target))
        )
        self._replaying = False
        try:
            self._sql.run([(ddl, [{}]) for ddl in _SCHEMA])
            self._load()
        except BaseException:
            self._sql.close()
            raise

    def close(self) -> None:
        # Under the lock: no record may be half-way through the connection.
        with self._lock:
            self._sql.close()

    def _load(self) -> None:
        rows = self._sql.query(
            "SELECT attempt_id, at, usd_cents, card, customer, email, ip_address, device, "
            "outcome FROM fraud_velocity_attempt ORDER BY at"
        )
        self._replaying = True
        try:
            for attempt_id, at, usd, card, customer, email, ip, device, outcome in rows:
                event = PaymentEvent(
                    at=float(at),
                    amount_minor=int(usd),
                    currency="usd",
                    amount_usd_minor=int(usd),
                    card=card,
                    customer=customer,
                    email=email,
                    ip_address=ip,
                    device=device,
                    outcome=next((o for o in OUTCOMES if o == outcome), None),
                )
                anonymous = str(attempt_id).startswith(_ANONYMOUS)
                self._record(event, None if anonymous else str(attempt_id))
        finally:
            self._replaying = False

    # -- write-through hooks (called under the lock, before memory changes) ------

    def _persist_record(self, event: PaymentEvent, attempt_id: str | None) -> None:
        if self._replaying:
            return
        params: dict[str, Any] = {
            "id": attempt_id if attempt_id is not None else _ANONYMOUS + secrets.token_hex(12),
            "at": event.at,
            "usd": event.usd_cents,
            "outcome": event.outcome,
        }
        params.update({f"e{i}": v for i, v in enumerate(event.entities())})
        self._sql.run([(_INSERT_ATTEMPT, [params])])

    def _persist_outcome(self, attempt_id: str, attempt: _Attempt, outcome: Outcome) -> None:
        self._sql.run(
            [
                (
                    "UPDATE fraud_velocity_attempt SET outcome = :o WHERE attempt_id = :id",
                    [{"o": outcome, "id": attempt_id}],
                )
            ]
        )

    def _persist_sweep(self, now: float) -> None:
        if self._replaying:
            return
        self._sql.run(
            [
                (
                    "DELETE FROM fraud_velocity_attempt WHERE at < :t",
                    [{"t": now - RETENTION_SECONDS}],
                )
            ]
        )
