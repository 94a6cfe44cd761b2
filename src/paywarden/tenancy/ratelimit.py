"""Failed-authentication throttling per source, shared across workers via Redis.

A fixed-window counter per (source, window): cheap, atomic (INCR + EXPIRE in a
MULTI), and good enough to cap online guessing; keys are far too strong to be
guessed, so the limit protects the service more than the keys.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class FailureLimiter(Protocol):
    def record(self, source: str) -> int:
        """Count one failure; return failures in the current window."""
        ...

    def count(self, source: str) -> int: ...


class MemoryFailureLimiter:
    def __init__(self, window_seconds: int, clock: object | None = None) -> None:
        self.window = window_seconds
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int], int] = {}

    def _bucket(self) -> int:
        return int(time.time()) // self.window

    def record(self, source: str) -> int:
        b = self._bucket()
        with self._lock:
            if len(self._counts) > 100_000:  # bound memory under a spray of sources
                self._counts = {k: v for k, v in self._counts.items() if k[1] == b}
            n = self._counts.get((source, b), 0) + 1
            self._counts[(source, b)] = n
            return n

    def count(self, source: str) -> int:
        with self._lock:
            return self._counts.get((source, self._bucket()), 0)


class RedisFailureLimiter:
    def __init__(self, url: str, window_seconds: int, prefix: str = "paywarden:authfail") -> None:
        import redis

        self.window = window_seconds
        self.prefix = prefix
        self._r = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    def _key(self, source: str) -> str:
        return f"{self.prefix}:{int(time.time()) // self.window}:{source}"

    def record(self, source: str) -> int:
        key = self._key(source)
        pipe = self._r.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, self.window * 2)
        n, _ = pipe.execute()
        return int(n)

    def count(self, source: str) -> int:
        v = self._r.get(self._key(source))
        return int(v) if v is not None else 0

    def close(self) -> None:
        self._r.close()
