"""Velocity counters that survive a restart: memory, written through to SQL.

The default single node backend. Reads are served from memory
(:class:`~paywarden.fraud.velocity.MemoryVelocityStore`); every change is first
written to the database in its own transaction, under the store's lock, and only
then applied in memory, so a failed write changes nothing. On open, the rows
are loaded back. Rows that can no longer count are deleted by the hourly sweep.

Given a path, the store keeps its own SQLite file. Given a
:class:`~paywarden.db.Database`, it creates its three ``fraud_velocity_*``
tables there if missing (plain portable SQL: SQLite or PostgreSQL).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import text

from paywarden.db import Database
from paywarden.fraud.velocity import (
    METRICS,
    OUTCOMES,
    RETENTION_SECONDS,
    WINDOWS,
    MemoryVelocityStore,
    Outcome,
    PaymentEvent,
    _Attempt,
    _outcome_deltas,
)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS fraud_velocity_bucket (
        slot INTEGER NOT NULL, entity TEXT NOT NULL, win INTEGER NOT NULL,
        bucket BIGINT NOT NULL,
        total BIGINT NOT NULL, authorized BIGINT NOT NULL, declined BIGINT NOT NULL,
        blocked BIGINT NOT NULL, amount BIGINT NOT NULL, authorized_amount BIGINT NOT NULL,
        PRIMARY KEY (slot, entity, win, bucket))""",
    """CREATE TABLE IF NOT EXISTS fraud_velocity_card (
        slot INTEGER NOT NULL, entity TEXT NOT NULL, card TEXT NOT NULL,
        last_seen DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (slot, entity, card))""",
    """CREATE TABLE IF NOT EXISTS fraud_velocity_attempt (
        attempt_id TEXT PRIMARY KEY, at DOUBLE PRECISION NOT NULL, usd_cents BIGINT NOT NULL,
        card TEXT, customer TEXT, email TEXT, ip_address TEXT, device TEXT, outcome TEXT)""",
)
_COLUMNS = ("total", "authorized", "declined", "blocked", "amount", "authorized_amount")
# Built from the constant column names above, never from input.
_UPSERT_BUCKET = text(
    "INSERT INTO fraud_velocity_bucket (slot, entity, win, bucket, "  # noqa: S608
    + ", ".join(_COLUMNS)
    + ") VALUES (:slot, :entity, :win, :bucket, "
    + ", ".join(f":m{i}" for i in range(METRICS))
    + ") ON CONFLICT (slot, entity, win, bucket) DO UPDATE SET "
    + ", ".join(f"{c} = fraud_velocity_bucket.{c} + excluded.{c}" for c in _COLUMNS)
)
_UPSERT_CARD = text(
    "INSERT INTO fraud_velocity_card (slot, entity, card, last_seen) "
    "VALUES (:slot, :entity, :card, :at) ON CONFLICT (slot, entity, card) DO UPDATE SET "
    "last_seen = CASE WHEN excluded.last_seen > fraud_velocity_card.last_seen "
    "THEN excluded.last_seen ELSE fraud_velocity_card.last_seen END"
)
_INSERT_ATTEMPT = text(
    "INSERT INTO fraud_velocity_attempt "
    "(attempt_id, at, usd_cents, card, customer, email, ip_address, device, outcome) "
    "VALUES (:id, :at, :usd, :e0, :e1, :e2, :e3, :e4, :outcome)"
)


class SqliteVelocityStore(MemoryVelocityStore):
    def __init__(self, target: str | Path | Database) -> None:
        super().__init__()
        if isinstance(target, Database):
            self._db, self._owns_db = target, False
        else:
            self._db, self._owns_db = Database(f"sqlite:///{Path(target)}"), True
        with self._db.write() as s:
            for ddl in _SCHEMA:
                s.execute(text(ddl))
        self._load()

    def close(self) -> None:
        if self._owns_db:
            self._db.dispose()

    def _load(self) -> None:
        with self._db.read() as s:
            buckets = s.execute(
                text(
                    "SELECT slot, entity, win, bucket, "  # noqa: S608 (constant columns)
                    + ", ".join(_COLUMNS)
                    + " FROM fraud_velocity_bucket ORDER BY bucket"
                )
            ).all()
            cards = s.execute(
                text(
                    "SELECT slot, entity, card, last_seen FROM fraud_velocity_card "
                    "ORDER BY last_seen"
                )
            ).all()
            attempts = s.execute(
                text(
                    "SELECT attempt_id, at, usd_cents, card, customer, email, ip_address, "
                    "device, outcome FROM fraud_velocity_attempt"
                )
            ).all()
        for slot, entity, win, bucket, *row in buckets:
            self._load_bucket(int(slot), str(entity), int(win), int(bucket), [int(v) for v in row])
        for slot, entity, card, last_seen in cards:
            self._load_card(int(slot), str(entity), str(card), float(last_seen))
        for attempt_id, at, usd, *rest in attempts:
            outcome = rest[-1]
            self._load_attempt(
                str(attempt_id),
                _Attempt(
                    float(at),
                    int(usd),
                    tuple(rest[:-1]),
                    next((o for o in OUTCOMES if o == outcome), None),
                ),
            )

    # -- write-through hooks (called under the lock, before memory changes) ------

    def _persist_record(self, event: PaymentEvent, attempt_id: str | None) -> None:
        entities, usd = event.entities(), event.usd_cents
        row = [1, 0, 0, 0, usd, 0]
        if event.outcome is not None:
            for m, v in _outcome_deltas(event.outcome, usd):
                row[m] += v
        with self._db.write() as s:
            buckets = _bucket_params(event.at, entities, row)
            if buckets:  # an attempt with no known entity counts nowhere
                s.execute(_UPSERT_BUCKET, buckets)
            card = entities[0]
            cards = [
                {"slot": slot, "entity": value, "card": card, "at": event.at}
                for slot, value in enumerate(entities)
                if slot > 0 and value is not None
            ]
            if card is not None and cards:
                s.execute(_UPSERT_CARD, cards)
            if attempt_id is not None:
                params: dict[str, Any] = {
                    "id": attempt_id,
                    "at": event.at,
                    "usd": usd,
                    "outcome": event.outcome,
                }
                params.update({f"e{i}": v for i, v in enumerate(entities)})
                s.execute(_INSERT_ATTEMPT, params)

    def _persist_outcome(self, attempt_id: str, attempt: _Attempt, outcome: Outcome) -> None:
        row = [0] * METRICS
        for m, v in _outcome_deltas(outcome, attempt.usd_cents):
            row[m] += v
        with self._db.write() as s:
            s.execute(
                text("UPDATE fraud_velocity_attempt SET outcome = :o WHERE attempt_id = :id"),
                {"o": outcome, "id": attempt_id},
            )
            buckets = _bucket_params(attempt.at, attempt.entities, row)
            if buckets:
                s.execute(_UPSERT_BUCKET, buckets)

    def _persist_sweep(self, now: float) -> None:
        with self._db.write() as s:
            for wi, w in enumerate(WINDOWS):
                s.execute(
                    text("DELETE FROM fraud_velocity_bucket WHERE win = :w AND bucket < :b"),
                    {"w": wi, "b": w.bucket(now) - w.buckets},
                )
            s.execute(
                text("DELETE FROM fraud_velocity_card WHERE last_seen <= :t"),
                {"t": now - WINDOWS[-1].seconds},
            )
            s.execute(
                text("DELETE FROM fraud_velocity_attempt WHERE at < :t"),
                {"t": now - RETENTION_SECONDS},
            )


def _bucket_params(
    at: float, entities: tuple[str | None, ...], row: list[int]
) -> list[dict[str, Any]]:
    metrics = {f"m{i}": v for i, v in enumerate(row)}
    return [
        {"slot": slot, "entity": value, "win": wi, "bucket": w.bucket(at), **metrics}
        for slot, value in enumerate(entities)
        if value is not None
        for wi, w in enumerate(WINDOWS)
    ]
