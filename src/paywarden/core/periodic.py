"""A background thread that runs one function on an interval, until stopped."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("paywarden.periodic")


class PeriodicTask:
    def __init__(self, name: str, interval: float, fn: Callable[[], object]) -> None:
        self.name = name
        self.interval = interval
        self.fn = fn
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> None:
        try:
            self.fn()
        except Exception:
            log.exception("periodic task %s failed", self.name)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.run_once()

    def start_background(self) -> threading.Thread:
        self._thread = threading.Thread(
            target=self._loop, name=f"paywarden-{self.name}", daemon=True
        )
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
