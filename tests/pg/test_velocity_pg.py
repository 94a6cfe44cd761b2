"""The write-through velocity store on PostgreSQL (a :class:`Database` target)."""

from __future__ import annotations

from paywarden.db import Database
from paywarden.fraud.velocity import PaymentEvent
from paywarden.fraud.velocity_sqlite import SqliteVelocityStore
from tests.conftest import pg_schema

T0 = 1_700_000_000.0


def test_events_survive_reopen_on_postgresql() -> None:
    with pg_schema() as url:
        db = Database(url)
        try:
            store = SqliteVelocityStore(db)
            store.record(
                PaymentEvent(at=T0, amount_minor=500, currency="usd", card="c1", ip_address="ip"),
                attempt_id="pi_1",
            )
            assert store.record_outcome("pi_1", "authorized") is True
            store.record(
                PaymentEvent(
                    at=T0 + 1, amount_minor=700, currency="usd", card="c2", ip_address="ip"
                )
            )
            before = store.snapshot(at=T0 + 2, ip_address="ip")

            reopened = SqliteVelocityStore(db)
            after = reopened.snapshot(at=T0 + 2, ip_address="ip")
            assert after == before
            assert after["card_count_for_ip_address_hourly"] == 2
            assert after["authorized_amount_in_usd_cents_per_ip_address_daily"] == 500
            assert reopened.record_outcome("pi_1", "authorized") is False  # counted once
        finally:
            db.dispose()
