"""Velocity counters on a real Redis: the shared behaviour suite, plus workers in
separate processes sharing one counter."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier

import pytest

import redis
from paywarden.fraud.velocity import RETENTION_SECONDS, PaymentEvent
from paywarden.fraud.velocity_redis import RedisVelocityStore
from tests.conftest import redis_url
from tests.fraud.test_velocity import T0, VelocityBehaviour, ev

pytestmark = pytest.mark.redis

PER_WORKER = 300


class TestRedisStore(VelocityBehaviour):
    @pytest.fixture
    def store(self, prefix: str) -> Iterator[RedisVelocityStore]:
        s = RedisVelocityStore(redis_url(), prefix=prefix)
        yield s
        s.close()

    def test_keys_expire_after_the_longest_window(self, store: RedisVelocityStore) -> None:
        store.record(ev(T0, card="c", ip_address="ip"), attempt_id="pi_1")
        r = redis.Redis.from_url(redis_url())
        keys = list(r.scan_iter(match=store.prefix + "*"))
        assert len(keys) == 4  # two entity hashes, the IP's card set, the attempt
        for key in keys:
            assert 0 < r.ttl(key) <= RETENTION_SECONDS
        r.close()

    def test_clear_deletes_only_its_prefix(self, store: RedisVelocityStore) -> None:
        other = RedisVelocityStore(redis_url(), prefix=store.prefix + "other:")
        store.record(ev(T0, card="c"))
        other.record(ev(T0, card="c"))
        assert other.clear() == 1
        assert store.snapshot(at=T0, card="c")["total_charges_per_card_number_hourly"] == 1
        other.close()


def _worker(
    url: str, prefix: str, n: int, start: Barrier, out: multiprocessing.Queue[list[int]]
) -> None:
    """Runs in a spawned process: record ``n`` attempts on one IP, report what each saw."""
    store = RedisVelocityStore(url, prefix=prefix)
    seen = []
    start.wait(timeout=60)  # both processes record at the same time
    for i in range(n):
        snap = store.record_and_snapshot(
            PaymentEvent(
                at=T0 + i * 0.01,
                amount_minor=100,
                currency="usd",
                outcome="declined",
                card=f"card{i % 7}",
                ip_address="203.0.113.9",
            )
        )
        seen.append(snap["total_charges_per_ip_address_hourly"])
    store.close()
    out.put(seen)


def test_two_processes_share_one_counter(prefix: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[list[int]] = ctx.Queue()
    start = ctx.Barrier(2)
    procs = [
        ctx.Process(target=_worker, args=(redis_url(), prefix, PER_WORKER, start, out))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    # Every attempt, from either process, saw a distinct running total.
    assert sorted(results[0] + results[1]) == list(range(1, 2 * PER_WORKER + 1))
    store = RedisVelocityStore(redis_url(), prefix=prefix)
    snap = store.snapshot(at=T0 + 10, ip_address="203.0.113.9")
    assert snap["total_charges_per_ip_address_hourly"] == 2 * PER_WORKER
    assert snap["declined_charges_per_ip_address_daily"] == 2 * PER_WORKER
    assert snap["total_amount_in_usd_cents_per_ip_address_weekly"] == 2 * PER_WORKER * 100
    assert snap["card_count_for_ip_address_hourly"] == 7
    store.close()


def test_outcome_from_another_worker(prefix: str) -> None:
    a = RedisVelocityStore(redis_url(), prefix=prefix)
    b = RedisVelocityStore(redis_url(), prefix=prefix)
    a.record(ev(T0, card="c", email="em"), attempt_id="pi_x")
    assert b.record_outcome("pi_x", "declined") is True
    assert a.record_outcome("pi_x", "declined") is False
    snap = a.snapshot(at=T0 + 1, card="c", email="em")
    assert snap["declined_charges_per_card_number_hourly"] == 1
    assert snap["declined_charges_per_email_weekly"] == 1
    a.close()
    b.close()
