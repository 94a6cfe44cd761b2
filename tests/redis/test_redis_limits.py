"""Shared failed-authentication throttling across gateway workers, over real Redis."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

import redis
from paywarden.config import Settings, load_or_create_secrets
from paywarden.core.secrets import Secret
from paywarden.gateway.app import create_app
from paywarden.gateway.container import Gateway, build_gateway
from paywarden.migrations import upgrade
from paywarden.tenancy.ratelimit import RedisFailureLimiter
from tests.conftest import ACQUIRER_TOKEN, make_merchant, redis_url, require_service
from tests.support.servers import run_app_in_thread

pytestmark = pytest.mark.redis


@pytest.fixture
def redis_db() -> Iterator[redis.Redis[bytes]]:
    def probe() -> None:
        redis.Redis.from_url(redis_url(), socket_connect_timeout=2).ping()

    require_service("Redis", probe)
    r = redis.Redis.from_url(redis_url())
    r.flushdb()
    yield r
    r.flushdb()
    r.close()


@pytest.fixture
def two_workers(
    settings: Settings, redis_db: redis.Redis[bytes]
) -> Iterator[tuple[Gateway, list[str]]]:
    settings = settings.model_copy(update={"redis_url": redis_url(), "auth_failure_limit": 6})
    secrets = dataclasses.replace(
        load_or_create_secrets(settings.home),
        acquirer_token=Secret(ACQUIRER_TOKEN, "acquirer_token"),
    )
    upgrade(settings.resolved_database_url)
    gws = [build_gateway(settings, secrets) for _ in range(2)]
    with run_app_in_thread(create_app(gws[0])) as a, run_app_in_thread(create_app(gws[1])) as b:
        yield gws[0], [a, b]
    for gw in gws:
        gw.close()


def test_two_workers_share_one_failure_budget(two_workers: tuple[Gateway, list[str]]) -> None:
    gw, urls = two_workers
    good = make_merchant(gw).secret_key
    bad = "pws_test_" + "A" * 38
    # Three failures on each worker: six in all, which is the shared limit.
    for i in range(6):
        r = httpx.get(urls[i % 2] + "/v1/customers", headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401
    for url in urls:
        r = httpx.get(url + "/v1/customers", headers={"Authorization": f"Bearer {good}"})
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "rate_limit"
        assert r.headers["Retry-After"]


def test_counter_updates_are_atomic(redis_db: redis.Redis[bytes]) -> None:
    limiters = [RedisFailureLimiter(redis_url(), 60, prefix="pwtest") for _ in range(4)]
    with ThreadPoolExecutor(16) as ex:
        list(ex.map(lambda i: limiters[i % 4].record("10.0.0.1"), range(400)))
    assert limiters[0].count("10.0.0.1") == 400
    assert limiters[1].count("10.0.0.2") == 0
    for lim in limiters:
        lim.close()
