"""Routing across acquirers: priority order, failover, and a circuit breaker.

The breaker is per process and per acquirer: ``threshold`` consecutive failures
open it; after ``reset_seconds`` one trial call is let through (half-open); a
success closes it, a failure re-opens it. An open breaker is skipped, so a dead
acquirer costs nothing on the hot path once detected. If every breaker is open
the least recently opened one is tried anyway: refusing all traffic on stale
information would turn a blip into an outage.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from paywarden.acquirers.base import AcquirerConnector
from paywarden.core.clock import Clock


@dataclass
class _Breaker:
    failures: int = 0
    opened_at: float | None = None
    # When the half-open trial was handed out. Being offered is not being
    # called (an earlier acquirer may succeed first), so an unreported trial
    # expires after another reset period instead of wedging the breaker.
    trial_at: float | None = None


class AcquirerRouter:
    def __init__(
        self,
        connectors: list[AcquirerConnector],
        *,
        clock: Clock,
        threshold: int,
        reset_seconds: float,
    ) -> None:
        if not connectors:
            raise ValueError("at least one acquirer is required")
        self.connectors = connectors
        self.by_name = {c.name: c for c in connectors}
        self.clock = clock
        self.threshold = threshold
        self.reset_seconds = reset_seconds
        self._lock = threading.Lock()
        self._state = {c.name: _Breaker() for c in connectors}

    def get(self, name: str) -> AcquirerConnector:
        return self.by_name[name]

    def candidates(self) -> list[AcquirerConnector]:
        """Acquirers to try, in order, for a new payment."""
        now = self.clock.now()
        out: list[AcquirerConnector] = []
        with self._lock:
            for c in self.connectors:
                st = self._state[c.name]
                if st.opened_at is None:
                    out.append(c)
                elif now - st.opened_at >= self.reset_seconds and (
                    st.trial_at is None or now - st.trial_at >= self.reset_seconds
                ):
                    st.trial_at = now  # half-open: one trial call
                    out.append(c)
            if not out:
                oldest = min(self.connectors, key=lambda c: self._state[c.name].opened_at or 0.0)
                out.append(oldest)
        return out

    def record_success(self, name: str) -> None:
        with self._lock:
            self._state[name] = _Breaker()

    def record_failure(self, name: str) -> None:
        with self._lock:
            st = self._state[name]
            st.failures += 1
            st.trial_at = None
            if st.failures >= self.threshold or st.opened_at is not None:
                st.opened_at = self.clock.now()

    def state(self, name: str) -> str:
        with self._lock:
            st = self._state[name]
            if st.opened_at is None:
                return "closed"
            return "half_open" if self.clock.now() - st.opened_at >= self.reset_seconds else "open"

    def close(self) -> None:
        for c in self.connectors:
            c.close()
