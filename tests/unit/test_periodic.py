from __future__ import annotations

import threading

from paywarden.core.periodic import PeriodicTask


def test_runs_repeatedly_survives_errors_and_stops() -> None:
    calls: list[int] = []
    enough = threading.Event()

    def fn() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")  # logged, the loop goes on
        if len(calls) >= 4:
            enough.set()

    task = PeriodicTask("t", 0.01, fn)
    task.start_background()
    assert enough.wait(30)
    task.stop()
    n = len(calls)
    assert n >= 4
    assert task._thread is not None
    assert not task._thread.is_alive()
