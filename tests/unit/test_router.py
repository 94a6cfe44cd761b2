"""Acquirer routing: priority order and the per-acquirer circuit breaker."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paywarden.acquirers.router import AcquirerRouter
from paywarden.core.clock import FrozenClock

THRESHOLD = 3
RESET = 30.0


class FakeConnector:
    """The router only orders connectors and closes them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def make(
    names: tuple[str, ...] = ("a", "b", "c"), threshold: int = THRESHOLD, reset: float = RESET
) -> tuple[AcquirerRouter, FrozenClock, list[Any]]:
    clock = FrozenClock()
    conns: list[Any] = [FakeConnector(n) for n in names]
    return (
        AcquirerRouter(conns, clock=clock, threshold=threshold, reset_seconds=reset),
        clock,
        conns,
    )


def names(router: AcquirerRouter) -> list[str]:
    return [c.name for c in router.candidates()]


def fail(router: AcquirerRouter, name: str, times: int) -> None:
    for _ in range(times):
        router.record_failure(name)


def test_requires_a_connector() -> None:
    with pytest.raises(ValueError, match="at least one acquirer"):
        AcquirerRouter([], clock=FrozenClock(), threshold=1, reset_seconds=1)


def test_priority_order_is_list_order() -> None:
    router, _, _ = make(("b", "a", "c"))
    assert names(router) == ["b", "a", "c"]
    assert names(router) == ["b", "a", "c"]


def test_get_by_name() -> None:
    router, _, conns = make()
    assert router.get("b") is conns[1]
    with pytest.raises(KeyError):
        router.get("zz")


def test_all_start_closed() -> None:
    router, _, _ = make()
    assert [router.state(n) for n in "abc"] == ["closed"] * 3


def test_failures_below_threshold_keep_it_closed() -> None:
    router, _, _ = make()
    fail(router, "a", THRESHOLD - 1)
    assert router.state("a") == "closed"
    assert names(router) == ["a", "b", "c"]


def test_threshold_opens_and_open_is_skipped() -> None:
    router, _, _ = make()
    fail(router, "a", THRESHOLD)
    assert router.state("a") == "open"
    assert names(router) == ["b", "c"]
    assert router.state("b") == "closed"


def test_failures_must_be_consecutive() -> None:
    router, _, _ = make()
    fail(router, "a", THRESHOLD - 1)
    router.record_success("a")
    fail(router, "a", THRESHOLD - 1)
    assert router.state("a") == "closed"
    router.record_failure("a")
    assert router.state("a") == "open"


def test_threshold_of_one() -> None:
    router, _, _ = make(threshold=1)
    router.record_failure("b")
    assert router.state("b") == "open"
    assert names(router) == ["a", "c"]


def test_half_open_after_reset_seconds_exactly() -> None:
    router, clock, _ = make()
    fail(router, "a", THRESHOLD)
    clock.advance(RESET - 0.001)
    assert router.state("a") == "open"
    assert names(router) == ["b", "c"]
    clock.advance(0.001)
    assert router.state("a") == "half_open"
    assert names(router) == ["a", "b", "c"]


def test_half_open_allows_exactly_one_trial() -> None:
    router, clock, _ = make()
    fail(router, "a", THRESHOLD)
    clock.advance(RESET)
    assert names(router) == ["a", "b", "c"]
    # The trial is in flight: nobody else gets "a" until it reports back.
    assert names(router) == ["b", "c"]
    assert names(router) == ["b", "c"]
    assert router.state("a") == "half_open"


def test_trial_success_closes() -> None:
    router, clock, _ = make()
    fail(router, "a", THRESHOLD)
    clock.advance(RESET)
    assert "a" in names(router)
    router.record_success("a")
    assert router.state("a") == "closed"
    assert names(router) == ["a", "b", "c"]
    assert names(router) == ["a", "b", "c"]
    # Closed again means the full threshold is needed to re-open.
    fail(router, "a", THRESHOLD - 1)
    assert router.state("a") == "closed"


def test_trial_failure_reopens_immediately() -> None:
    router, clock, _ = make()
    fail(router, "a", THRESHOLD)
    clock.advance(RESET)
    assert "a" in names(router)
    router.record_failure("a")  # a single failure suffices in half-open
    assert router.state("a") == "open"
    assert names(router) == ["b", "c"]
    # The reset period restarts from the re-opening.
    clock.advance(RESET - 1)
    assert names(router) == ["b", "c"]
    clock.advance(1)
    assert router.state("a") == "half_open"
    assert names(router) == ["a", "b", "c"]
    assert names(router) == ["b", "c"]


def test_failure_while_open_pushes_reopen_time() -> None:
    router, clock, _ = make()
    fail(router, "a", THRESHOLD)
    clock.advance(RESET - 5)
    router.record_failure("a")
    clock.advance(5)
    assert router.state("a") == "open"
    clock.advance(RESET - 5)
    assert router.state("a") == "half_open"


def test_all_open_returns_least_recently_opened() -> None:
    router, clock, conns = make()
    fail(router, "b", THRESHOLD)
    clock.advance(1)
    fail(router, "a", THRESHOLD)
    clock.advance(1)
    fail(router, "c", THRESHOLD)
    cands = router.candidates()
    assert cands == [conns[1]]
    # It is not a trial: asking again gives the same answer.
    assert router.candidates() == [conns[1]]
    assert [router.state(n) for n in "abc"] == ["open"] * 3


def test_all_open_fallback_follows_reopening() -> None:
    router, clock, _ = make(("a", "b"))
    fail(router, "a", THRESHOLD)
    clock.advance(1)
    fail(router, "b", THRESHOLD)
    assert names(router) == ["a"]
    clock.advance(1)
    router.record_failure("a")  # a failed again: now b is the least recently opened
    assert names(router) == ["b"]


def test_single_connector_is_always_offered() -> None:
    router, clock, _ = make(("only",))
    fail(router, "only", THRESHOLD)
    assert names(router) == ["only"]
    clock.advance(RESET)
    assert names(router) == ["only"]  # the trial
    assert names(router) == ["only"]  # trial in flight, but never an empty list


def test_breakers_are_independent() -> None:
    router, _, _ = make()
    fail(router, "a", THRESHOLD)
    fail(router, "b", THRESHOLD - 1)
    assert router.state("a") == "open"
    assert router.state("b") == "closed"
    router.record_success("b")
    assert router.state("a") == "open"


def test_unused_trial_does_not_wedge_the_breaker() -> None:
    # A half-open "b" is listed after a healthy "a"; the payment succeeds on "a"
    # and never calls "b". The trial was never made, so "b" must be offered again
    # (at the latest after another reset period) rather than be excluded forever.
    router, clock, _ = make(("a", "b"))
    fail(router, "b", THRESHOLD)
    clock.advance(RESET)
    assert names(router) == ["a", "b"]
    router.record_success("a")
    clock.advance(RESET * 10)
    assert "b" in names(router)


def test_close_closes_every_connector() -> None:
    router, _, conns = make()
    router.close()
    assert [c.closed for c in conns] == [1, 1, 1]


@given(
    st.lists(
        st.tuples(st.sampled_from("abc"), st.sampled_from(["ok", "fail", "tick"])), max_size=60
    )
)
def test_candidates_never_empty_and_respect_order(events: list[tuple[str, str]]) -> None:
    router, clock, _ = make()
    for name, ev in events:
        if ev == "ok":
            router.record_success(name)
        elif ev == "fail":
            router.record_failure(name)
        else:
            clock.advance(RESET / 3)
        got = names(router)
        assert got
        assert got == sorted(got)  # a subsequence of the priority order
        for n in got:
            if len(got) > 1:
                assert router.state(n) != "open"
