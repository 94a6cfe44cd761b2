"""Fault injection for the sandbox acquirer (``/_control/faults``).

Modes, applied to the mutating operations named in ``operations``:

* ``none`` — normal service.
* ``latency`` — sleep ``latency_ms`` (default 1000), then process normally.
* ``error_503`` — answer 503 without processing (the acquirer certainly did nothing).
* ``error_500`` — answer 500 without processing (the client cannot know that).
* ``timeout`` — sleep ``latency_ms`` (default 30000) *before* processing, then
  process: a slow acquirer whose client gives up while the charge still happens.
* ``lost_response`` — process and commit, then hold the connection without
  answering for ``latency_ms`` (default 30000) or until the client disconnects;
  after the hold the real answer is sent (to a client long gone).

``count`` None applies the fault until reset; ``n`` applies it to the next n
matching requests, after which the mode reverts to ``none``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

from paywarden.acquirer_sandbox.store import invalid

Mode = Literal["none", "latency", "error_503", "error_500", "timeout", "lost_response"]
MODES: Final[tuple[Mode, ...]] = (
    "none",
    "latency",
    "error_503",
    "error_500",
    "timeout",
    "lost_response",
)
OPERATIONS: Final[tuple[str, ...]] = ("authorize", "capture", "void", "refund")
DEFAULT_LATENCY_MS: Final[dict[str, int]] = {
    "none": 0,
    "latency": 1000,
    "error_503": 0,
    "error_500": 0,
    "timeout": 30_000,
    "lost_response": 30_000,
}
MAX_LATENCY_MS: Final = 600_000


@dataclass(frozen=True)
class FaultPlan:
    mode: Mode = "none"
    latency_ms: int = 0
    count: int | None = None
    operations: tuple[str, ...] = OPERATIONS

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "latency_ms": self.latency_ms,
            "count": self.count,
            "operations": list(self.operations),
        }

    @staticmethod
    def from_json(body: dict[str, Any]) -> FaultPlan:
        mode = body.get("mode")
        if mode not in MODES:
            raise invalid(f"mode must be one of {', '.join(MODES)}", param="mode")
        mode = cast(Mode, mode)
        latency = body.get("latency_ms")
        if latency is None:
            latency = DEFAULT_LATENCY_MS[mode]
        if not _is_int(latency) or not 0 <= latency <= MAX_LATENCY_MS:
            message = f"latency_ms must be an integer in 0..{MAX_LATENCY_MS}"
            raise invalid(message, param="latency_ms")
        count = body.get("count")
        if count is not None and (not _is_int(count) or count < 0):
            raise invalid("count must be null or a non-negative integer", param="count")
        ops = body.get("operations")
        if ops is None:
            operations = OPERATIONS
        else:
            if (
                not isinstance(ops, list)
                or not ops
                or any(not isinstance(op, str) or op not in OPERATIONS for op in ops)
            ):
                raise invalid(
                    f"operations must be a non-empty list drawn from {', '.join(OPERATIONS)}",
                    param="operations",
                )
            operations = tuple(dict.fromkeys(cast(list[str], ops)))
        if count == 0:
            return FaultPlan()
        return FaultPlan(mode=mode, latency_ms=latency, count=count, operations=operations)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class FaultController:
    """The current plan; :meth:`claim` atomically matches and spends one use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plan = FaultPlan()

    def get(self) -> FaultPlan:
        with self._lock:
            return self._plan

    def set(self, plan: FaultPlan) -> None:
        with self._lock:
            self._plan = plan

    def reset(self) -> None:
        self.set(FaultPlan())

    def claim(self, operation: str) -> FaultPlan | None:
        with self._lock:
            plan = self._plan
            if plan.mode == "none" or operation not in plan.operations:
                return None
            if plan.count is not None:
                remaining = plan.count - 1
                self._plan = (
                    FaultPlan()
                    if remaining <= 0
                    else FaultPlan(plan.mode, plan.latency_ms, remaining, plan.operations)
                )
            return plan
