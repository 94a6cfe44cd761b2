"""Velocity counters: sliding windows, outcomes, distinct cards, amounts, atomicity.

:class:`VelocityBehaviour` is the behaviour suite every backend passes; it runs
here on the in-process and SQLite stores and, in ``tests/redis/``, on Redis.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from paywarden.core.secrets import Secret
from paywarden.db import Database
from paywarden.fraud.velocity import (
    WINDOWS,
    MemoryVelocityStore,
    PaymentEvent,
    VelocityError,
    VelocityStore,
    counter_names,
    hash_identifier,
    normalize_email,
)
from paywarden.fraud.velocity_sqlite import SqliteVelocityStore

T0 = 1_700_000_000.0  # a fake clock: every time below is T0 + offset
MIN, HOUR, DAY = 60.0, 3600.0, 86_400.0
ALL = {"card": "fp_1", "customer": "cus_1", "email": "em_1", "ip_address": "10.0.0.1"}


def ev(at: float, **kw: Any) -> PaymentEvent:
    kw.setdefault("amount_minor", 1000)
    kw.setdefault("currency", "usd")
    return PaymentEvent(at=at, **kw)


class VelocityBehaviour:
    """Subclasses provide a ``store`` fixture (a fresh, empty store)."""

    def test_an_attempt_with_no_known_entity_counts_nowhere(self, store: VelocityStore) -> None:
        assert store.record_and_snapshot(ev(T0), attempt_id="a0") == {}
        store.record_outcome("a0", "declined")
        assert store.snapshot(at=T0, card="c")["total_charges_per_card_number_hourly"] == 0

    def test_scopes_keep_tenants_counters_apart(self, store: VelocityStore) -> None:
        for i in range(3):
            store.record(ev(T0 + i, card=f"c{i}", ip_address="ip", scope="acct_a/test/"))
        b = store.record_and_snapshot(ev(T0 + 5, card="c9", ip_address="ip", scope="acct_b/test/"))
        assert b["total_charges_per_ip_address_hourly"] == 1
        assert b["card_count_for_ip_address_hourly"] == 1
        live = ev(T0 + 6, card="c0", ip_address="ip", scope="acct_a/live/")
        assert store.record_and_snapshot(live)["card_count_for_ip_address_hourly"] == 1
        a = store.record_and_snapshot(ev(T0 + 7, card="c3", ip_address="ip", scope="acct_a/test/"))
        assert a["total_charges_per_ip_address_hourly"] == 4
        assert a["card_count_for_ip_address_hourly"] == 4

    def test_hourly_window_slides(self, store: VelocityStore) -> None:
        store.record(ev(T0, card="c"))
        at = T0 + 59 * MIN
        assert store.snapshot(at=at, card="c")["total_charges_per_card_number_hourly"] == 1
        snap = store.snapshot(at=T0 + 61 * MIN, card="c")
        assert snap["total_charges_per_card_number_hourly"] == 0
        assert snap["total_charges_per_card_number_daily"] == 1
        assert snap["total_charges_per_card_number_weekly"] == 1

    def test_daily_and_weekly_windows_slide(self, store: VelocityStore) -> None:
        store.record(ev(T0, ip_address="ip"))
        daily, weekly = "total_charges_per_ip_address_daily", "total_charges_per_ip_address_weekly"
        assert store.snapshot(at=T0 + DAY - MIN, ip_address="ip")[daily] == 1
        assert store.snapshot(at=T0 + DAY + 16 * MIN, ip_address="ip")[daily] == 0
        assert store.snapshot(at=T0 + 7 * DAY - MIN, ip_address="ip")[weekly] == 1
        assert store.snapshot(at=T0 + 7 * DAY + 2 * HOUR + 1, ip_address="ip")[weekly] == 0

    def test_error_bound_is_one_bucket_upwards(self, store: VelocityStore) -> None:
        # Events younger than the window always count; events aged window+bucket never do.
        rng = random.Random(4)
        times = sorted(T0 + rng.uniform(0, 3 * DAY) for _ in range(150))
        for i, t in enumerate(times):
            store.record(ev(t, customer="cus"))
            if i % 6:
                continue
            now = t + rng.uniform(0, 3 * HOUR)
            snap = store.snapshot(at=now, customer="cus")
            for w in WINDOWS:
                got = snap[f"total_charges_per_customer_{w.name}"]
                seen = times[: i + 1]
                surely = sum(1 for x in seen if now - w.seconds < x)
                maybe = sum(1 for x in seen if now - w.seconds - w.bucket_seconds < x)
                assert surely <= got <= maybe, (w.name, now - T0)

    def test_outcomes_per_entity(self, store: VelocityStore) -> None:
        store.record(ev(T0, outcome="authorized", **ALL))
        store.record(ev(T0 + 1, outcome="declined", **ALL))
        store.record(ev(T0 + 2, outcome="declined", card="fp_2", ip_address="10.0.0.1"))
        store.record(ev(T0 + 3, outcome="blocked", email="em_1"))
        store.record(ev(T0 + 4, **ALL))  # outcome not known yet
        snap = store.snapshot(at=T0 + 5, **ALL, device="dev")
        assert set(snap) == set(counter_names())
        assert snap["authorized_charges_per_card_number_hourly"] == 1
        assert snap["declined_charges_per_card_number_hourly"] == 1
        assert snap["total_charges_per_card_number_hourly"] == 3
        assert snap["declined_charges_per_ip_address_daily"] == 2
        assert snap["total_charges_per_ip_address_weekly"] == 4
        assert snap["blocked_charges_per_email_daily"] == 1
        assert snap["total_charges_per_email_hourly"] == 4
        assert snap["total_charges_per_customer_hourly"] == 3
        assert snap["total_charges_per_device_weekly"] == 0

    def test_absent_entities_are_missing_attributes(self, store: VelocityStore) -> None:
        snap = store.snapshot(at=T0, ip_address="ip")
        assert set(snap) == {n for n in counter_names() if "_ip_address_" in n}
        assert all(v == 0 for v in snap.values())

    def test_distinct_cards(self, store: VelocityStore) -> None:
        for i, card in enumerate(["a", "b", "a", "c", "b", "a"]):
            store.record(ev(T0 + i, card=card, ip_address="ip", device="dev", customer="cus"))
        store.record(ev(T0 + 10, ip_address="ip"))  # no card: counts a charge, not a card
        snap = store.snapshot(at=T0 + 20, ip_address="ip", device="dev", customer="cus")
        assert snap["card_count_for_ip_address_daily"] == 3
        assert snap["card_count_for_device_hourly"] == 3
        assert snap["card_count_for_customer_weekly"] == 3
        assert snap["total_charges_per_ip_address_hourly"] == 7

    def test_distinct_cards_slide(self, store: VelocityStore) -> None:
        store.record(ev(T0, card="old", ip_address="ip"))
        store.record(ev(T0, card="both", ip_address="ip"))
        store.record(ev(T0 + 2 * HOUR, card="both", ip_address="ip"))
        store.record(ev(T0 + 2 * HOUR, card="new", ip_address="ip"))
        snap = store.snapshot(at=T0 + 2 * HOUR + 1, ip_address="ip")
        assert snap["card_count_for_ip_address_hourly"] == 2  # exact: "old" left the hour
        assert snap["card_count_for_ip_address_daily"] == 3
        snap = store.snapshot(at=T0 + 8 * DAY, ip_address="ip")
        assert snap["card_count_for_ip_address_weekly"] == 0

    def test_amount_sums_in_usd_cents(self, store: VelocityStore) -> None:
        store.record(ev(T0, amount_minor=1500, outcome="authorized", card="c"))
        store.record(ev(T0 + 1, amount_minor=900, outcome="declined", card="c"))
        store.record(ev(T0 + 2, amount_minor=5000, currency="eur", amount_usd_minor=5400, card="c"))
        store.record(ev(T0 + 3, amount_minor=7000, currency="jpy", card="c"))  # unconverted
        snap = store.snapshot(at=T0 + 4, card="c")
        assert snap["total_amount_in_usd_cents_per_card_number_hourly"] == 1500 + 900 + 5400
        assert snap["authorized_amount_in_usd_cents_per_card_number_daily"] == 1500
        assert snap["total_charges_per_card_number_hourly"] == 4

    def test_outcome_recorded_later(self, store: VelocityStore) -> None:
        store.record(ev(T0, amount_minor=700, **ALL), attempt_id="pi_1")
        store.record(ev(T0 + 1, amount_minor=300, **ALL), attempt_id="pi_2")
        snap = store.snapshot(at=T0 + 2, **ALL)
        assert snap["total_charges_per_card_number_hourly"] == 2
        assert snap["declined_charges_per_card_number_hourly"] == 0
        assert store.record_outcome("pi_1", "declined") is True
        assert store.record_outcome("pi_2", "authorized") is True
        assert store.record_outcome("pi_1", "declined") is False  # a retried report
        with pytest.raises(VelocityError):
            store.record_outcome("pi_1", "authorized")
        assert store.record_outcome("pi_unknown", "declined") is False
        snap = store.snapshot(at=T0 + 30 * MIN, **ALL)
        assert snap["declined_charges_per_card_number_hourly"] == 1
        assert snap["declined_charges_per_email_daily"] == 1
        assert snap["authorized_charges_per_ip_address_hourly"] == 1
        assert snap["authorized_amount_in_usd_cents_per_customer_weekly"] == 300
        assert snap["total_charges_per_customer_hourly"] == 2
        # The outcome lands in the attempt's buckets, so it leaves with the attempt.
        late = store.snapshot(at=T0 + 61 * MIN, **ALL)
        assert late["declined_charges_per_card_number_hourly"] == 0
        assert late["declined_charges_per_card_number_daily"] == 1

    def test_known_outcome_cannot_change(self, store: VelocityStore) -> None:
        store.record(ev(T0, outcome="blocked", card="c"), attempt_id="pi_b")
        assert store.record_outcome("pi_b", "blocked") is False
        with pytest.raises(VelocityError):
            store.record_outcome("pi_b", "authorized")
        assert store.snapshot(at=T0, card="c")["blocked_charges_per_card_number_hourly"] == 1

    def test_retried_attempt_counts_once(self, store: VelocityStore) -> None:
        first = store.record_and_snapshot(ev(T0, card="c"), attempt_id="pi_r")
        again = store.record_and_snapshot(ev(T0 + 1, card="c"), attempt_id="pi_r")
        store.record(ev(T0 + 2, card="c"), attempt_id="pi_r")
        assert first["total_charges_per_card_number_hourly"] == 1
        assert again["total_charges_per_card_number_hourly"] == 1
        assert store.snapshot(at=T0 + 3, card="c")["total_charges_per_card_number_hourly"] == 1

    def test_record_and_snapshot_includes_this_attempt(self, store: VelocityStore) -> None:
        e = ev(T0, card="c", ip_address="ip", outcome="declined")
        before = store.snapshot(at=T0, card="c", ip_address="ip")
        assert before["total_charges_per_card_number_hourly"] == 0
        snap = store.record_and_snapshot(e)
        assert snap["total_charges_per_card_number_hourly"] == 1
        assert snap["declined_charges_per_ip_address_hourly"] == 1
        assert snap["card_count_for_ip_address_hourly"] == 1
        assert set(snap) == {
            n for n in counter_names() if "_card_number_" in n or "_ip_address_" in n
        }

    def test_concurrent_records_are_exact(self, store: VelocityStore) -> None:
        def work(i: int) -> dict[str, int]:
            return store.record_and_snapshot(
                ev(T0 + i % 7, card=f"card{i % 5}", ip_address="ip", outcome="declined")
            )

        with ThreadPoolExecutor(8) as ex:
            snaps = list(ex.map(work, range(400)))
        seen = sorted(s["total_charges_per_ip_address_hourly"] for s in snaps)
        assert seen == list(range(1, 401))  # each attempt saw a distinct count
        snap = store.snapshot(at=T0 + 10, ip_address="ip")
        assert snap["total_charges_per_ip_address_hourly"] == 400
        assert snap["declined_charges_per_ip_address_daily"] == 400
        assert snap["total_amount_in_usd_cents_per_ip_address_weekly"] == 400 * 1000
        assert snap["card_count_for_ip_address_hourly"] == 5


# --- in-process and SQLite ----------------------------------------------------


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    opened: list[MemoryVelocityStore] = []

    def make() -> MemoryVelocityStore:
        s = (
            MemoryVelocityStore()
            if request.param == "memory"
            else SqliteVelocityStore(tmp_path / "velocity.db")
        )
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


class TestLocalStores(VelocityBehaviour):
    @pytest.fixture
    def store(self, make_store: Callable[[], MemoryVelocityStore]) -> MemoryVelocityStore:
        return make_store()

    def test_sweep_forgets_idle_entities(self, store: MemoryVelocityStore) -> None:
        store.record(ev(T0, card="c", ip_address="ip"), attempt_id="pi_1")
        store.sweep(now=T0 + 8 * DAY)
        assert not store._entities
        assert not store._attempts
        assert store.record_outcome("pi_1", "declined") is False


def test_a_replay_can_sweep_less_often_and_count_the_same() -> None:
    hourly, weekly = MemoryVelocityStore(), MemoryVelocityStore(sweep_every=8 * DAY)
    for i in range(400):
        e = ev(T0 + i * 1800.0, card=f"c{i % 7}", ip_address=f"ip{i % 3}")
        assert hourly.record_and_snapshot(e) == weekly.record_and_snapshot(e)
    with pytest.raises(ValueError, match="sweep_every"):
        MemoryVelocityStore(sweep_every=0)


def test_sqlite_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    a = SqliteVelocityStore(path)
    a.record(ev(T0, card="c1", ip_address="ip", outcome="authorized"))
    a.record(ev(T0 + 1, card="c2", ip_address="ip", amount_minor=250), attempt_id="pi_9")
    before = a.snapshot(at=T0 + 2, ip_address="ip", card="c2")

    scoped = ev(T0 + 1, card="c1", ip_address="ip", scope="acct_a/live/")
    a.record(scoped)
    a.close()

    b = SqliteVelocityStore(path)
    assert (
        b.record_and_snapshot(dataclasses.replace(scoped, at=T0 + 2, card="c5"))[
            "card_count_for_ip_address_daily"
        ]
        == 2
    )  # the scoped attempt came back in its own scope
    assert b.snapshot(at=T0 + 2, ip_address="ip", card="c2") == before
    assert before["card_count_for_ip_address_daily"] == 2
    assert b.record_outcome("pi_9", "authorized") is True  # the attempt survived too
    b.record(ev(T0 + 3, card="c3", ip_address="ip"))
    b.close()

    c = SqliteVelocityStore(path)
    snap = c.snapshot(at=T0 + 4, ip_address="ip")
    assert snap["total_charges_per_ip_address_hourly"] == 3
    assert snap["authorized_charges_per_ip_address_hourly"] == 2
    assert snap["authorized_amount_in_usd_cents_per_ip_address_daily"] == 1000 + 250
    assert snap["card_count_for_ip_address_hourly"] == 3
    assert c.record_outcome("pi_9", "authorized") is False
    c.close()


def test_sqlite_sweep_deletes_rows(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'shared.db'}")
    store = SqliteVelocityStore(db)  # an existing Database works as well as a path
    store.record(ev(T0, card="c", customer="cus"), attempt_id="pi_1")
    store.record(ev(T0 + 8 * DAY, card="d", customer="cus2"))  # sweeps what is a week old
    reopened = SqliteVelocityStore(db)
    assert reopened.snapshot(at=T0, customer="cus")["total_charges_per_customer_weekly"] == 0
    assert reopened.record_outcome("pi_1", "declined") is False
    assert reopened.snapshot(at=T0 + 8 * DAY, customer="cus2")["card_count_for_customer_daily"] == 1
    db.dispose()


def test_threads_on_sqlite_are_exact(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = SqliteVelocityStore(path)
    barrier = threading.Barrier(6)

    def work(k: int) -> None:
        barrier.wait()
        for i in range(50):
            store.record(ev(T0 + i, card=f"c{k}", device="dev"))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.close()
    reopened = SqliteVelocityStore(path)
    snap = reopened.snapshot(at=T0 + 60, device="dev")
    assert snap["total_charges_per_device_hourly"] == 300
    assert snap["card_count_for_device_hourly"] == 6
    reopened.close()


def test_out_of_order_events_count_in_their_own_bucket() -> None:
    store = MemoryVelocityStore()
    store.record(ev(T0 + 30 * MIN, card="c"))
    store.record(ev(T0, card="c"))  # arrives late
    store.record(ev(T0 - 2 * HOUR, card="c"))  # older than the hour of the newest: daily only
    snap = store.snapshot(at=T0 + 30 * MIN, card="c")
    assert snap["total_charges_per_card_number_hourly"] == 2
    assert snap["total_charges_per_card_number_daily"] == 3
    assert store.snapshot(at=T0 + 70 * MIN, card="c")["total_charges_per_card_number_hourly"] == 1


# --- names and identifiers ----------------------------------------------------


def test_counter_names_are_radar_style() -> None:
    names = counter_names()
    assert len(names) == len(set(names)) == 4 * 5 * 3 + 2 * 5 * 3 + 4 * 3
    for expected in (
        "authorized_charges_per_card_number_hourly",
        "declined_charges_per_email_daily",
        "blocked_charges_per_ip_address_weekly",
        "total_charges_per_customer_hourly",
        "total_charges_per_device_daily",
        "card_count_for_ip_address_daily",
        "card_count_for_customer_weekly",
        "card_count_for_device_daily",
        "card_count_for_email_hourly",
        "total_amount_in_usd_cents_per_card_number_daily",
        "authorized_amount_in_usd_cents_per_ip_address_weekly",
    ):
        assert expected in names


def test_event_validation() -> None:
    with pytest.raises(ValueError, match="negative"):
        ev(T0, amount_minor=-1)
    with pytest.raises(ValueError, match="outcome"):
        ev(T0, outcome="refunded")
    with pytest.raises(ValueError, match="finite"):
        ev(float("nan"))
    with pytest.raises(ValueError, match="too long"):
        ev(T0, ip_address="x" * 400)
    with pytest.raises(ValueError, match="too long"):
        ev(T0, ip_address="x" * 300, scope="y" * 100)
    with pytest.raises(ValueError, match="scope is too long"):
        ev(T0, scope="y" * 129)
    assert ev(T0, card="", email="e").entities() == (None, None, "e", None, None)
    assert ev(T0, card="", email="e", scope="s/").entities() == (None, None, "s/e", None, None)


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("  Jane.Doe+shop@GMail.com ", "janedoe@gmail.com"),
        ("j.a.n.e.doe@googlemail.com", "janedoe@gmail.com"),
        ("Jane.Doe+tag@Example.COM", "jane.doe+tag@example.com"),
        ("not-an-email", "not-an-email"),
    ],
)
def test_normalize_email(raw: str, normal: str) -> None:
    assert normalize_email(raw) == normal


def test_hash_identifier_is_keyed() -> None:
    key = b"k" * 32
    h = hash_identifier(normalize_email("Jane.Doe@gmail.com"), key=key)
    assert h == hash_identifier("janedoe@gmail.com", key=key)
    assert h == hash_identifier("janedoe@gmail.com", key=Secret("k" * 32, "velocity_key"))
    assert h != hash_identifier("janedoe@gmail.com", key=b"j" * 32)
    assert len(h) == 64
    assert "janedoe" not in h
    with pytest.raises(ValueError, match="16 bytes"):
        hash_identifier("x", key=b"short")


def test_sqlite_replay_rebuilds_every_counter(tmp_path: Path) -> None:
    """The store keeps events, not counters: reopening replays them, and every
    counter (outcomes added later, anonymous events, distinct cards, late
    arrivals) comes back exactly as the live store had it."""
    rng = random.Random(7)
    path = tmp_path / "replay.db"
    live = SqliteVelocityStore(path)
    pending: list[str] = []
    for i in range(400):
        at = T0 + i * 20 * MIN + rng.uniform(-3 * HOUR, 0)  # some arrive late
        event = ev(
            at,
            card=f"c{rng.randint(0, 12)}",
            customer=rng.choice([None, f"cus{rng.randint(0, 5)}"]),
            ip_address=f"ip{rng.randint(0, 4)}",
            device=rng.choice([None, "dev"]),
            amount_minor=rng.randint(100, 9000),
            outcome=rng.choice([None, None, "authorized", "declined"]),
        )
        if rng.random() < 0.3:
            live.record(event)  # anonymous: no attempt id
        else:
            live.record(event, attempt_id=f"pi_{i}")
            if event.outcome is None:
                pending.append(f"pi_{i}")
    for attempt in pending[::2]:
        live.record_outcome(attempt, "blocked")
    end = T0 + 400 * 20 * MIN
    probes = [
        {"card": f"c{k}", "customer": f"cus{k % 6}", "ip_address": f"ip{k % 5}", "device": "dev"}
        for k in range(13)
    ]
    before = [live.snapshot(at=end, **p) for p in probes]
    live.close()

    reopened = SqliteVelocityStore(path)
    after = [reopened.snapshot(at=end, **p) for p in probes]
    assert after == before
    assert any(s["card_count_for_ip_address_weekly"] > 1 for s in after)
    # The outcomes still pending can be added once, after the restart too.
    assert reopened.record_outcome(pending[1], "authorized") is True
    assert reopened.record_outcome(pending[0], "blocked") is False  # replayed: counted once
    with pytest.raises(VelocityError):
        reopened.record_outcome(pending[0], "declined")
    reopened.close()


def test_sqlite_store_writes_one_row_per_attempt(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "rows.db"
    legacy = sqlite3.connect(path)  # the first version's counter tables go away
    legacy.execute("CREATE TABLE fraud_velocity_bucket (slot INTEGER)")
    legacy.commit()
    legacy.close()
    store = SqliteVelocityStore(path)
    store.record(ev(T0, card="c", customer="cus", ip_address="ip", device="d"), attempt_id="pi_1")
    store.record_outcome("pi_1", "authorized")
    store.record(ev(T0 + 1, card="c"))
    store.close()
    conn = sqlite3.connect(path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    rows = conn.execute(
        "SELECT attempt_id, outcome FROM fraud_velocity_attempt ORDER BY at"
    ).fetchall()
    conn.close()
    assert tables == {"fraud_velocity_attempt"}
    assert rows[0] == ("pi_1", "authorized")
    assert len(rows) == 2 and rows[1][0].startswith("~") and rows[1][1] is None


def test_a_late_card_keeps_the_distinct_card_counts_exact(tmp_path: Path) -> None:
    """A card reported with an older time than cards already seen (a late
    event) is counted in its own place: live and after a restart alike."""
    path = tmp_path / "late.db"
    live = SqliteVelocityStore(path)
    live.record(ev(T0, card="a", ip_address="ip"))
    live.record(ev(T0 - 25 * HOUR, card="b", ip_address="ip"))  # late, outside the day
    live.record(ev(T0 - 2 * HOUR, card="c", ip_address="ip"))  # late, inside the day
    snap = live.snapshot(at=T0, ip_address="ip")
    assert snap["card_count_for_ip_address_daily"] == 2
    assert snap["card_count_for_ip_address_weekly"] == 3
    assert snap["card_count_for_ip_address_hourly"] == 1
    live.close()
    live.close()  # a second close does nothing
    reopened = SqliteVelocityStore(path)
    assert reopened.snapshot(at=T0, ip_address="ip") == snap
    reopened.close()


def test_close_waits_for_a_record_in_flight(tmp_path: Path) -> None:
    store = SqliteVelocityStore(tmp_path / "closing.db")
    errors: list[BaseException] = []
    started = threading.Event()

    def work() -> None:
        try:
            for i in range(300):
                store.record(ev(T0 + i, card=f"c{i}", ip_address="ip"), attempt_id=f"pi_{i}")
                started.set()  # after a first record: close() must not win the race to it
        except Exception as exc:  # after close, a record fails cleanly
            errors.append(exc)

    t = threading.Thread(target=work)
    t.start()
    assert started.wait(30)
    store.close()
    t.join()
    assert all(isinstance(e, Exception) for e in errors)
    reopened = SqliteVelocityStore(tmp_path / "closing.db")
    n = reopened.snapshot(at=T0 + 400, ip_address="ip")["total_charges_per_ip_address_hourly"]
    assert 0 < n <= 300
    reopened.close()
