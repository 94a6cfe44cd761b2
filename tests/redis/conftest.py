"""Redis fixtures: a key prefix of each test's own, deleted afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

import redis
from paywarden.fraud.velocity_redis import RedisVelocityStore
from tests.conftest import redis_url, require_service


def _probe() -> None:
    redis.Redis.from_url(redis_url(), socket_connect_timeout=2).ping()


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    require_service("Redis", _probe)
    p = f"pwtest:vel:{uuid.uuid4().hex[:12]}:"
    yield p
    cleaner = RedisVelocityStore(redis_url(), prefix=p)
    cleaner.clear()
    cleaner.close()
