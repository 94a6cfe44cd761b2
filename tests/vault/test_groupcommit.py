"""GroupCommit with a fake commit: batching, ordering, per-item failure,
and no caller returning before its batch's commit has returned."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import pytest

from paywarden.vault.groupcommit import GroupCommit, GroupCommitFailed, Outcome

WAIT = 30.0  # bounds waits that succeed at once unless the machine is loaded


class Recorder:
    """A commit that records its batches; ``hold`` keeps the next commit open."""

    def __init__(
        self,
        decide: Callable[[str], Outcome] = lambda _item: None,
        fail_with: BaseException | None = None,
    ) -> None:
        self.fail_with = fail_with  # raised by every batch but the first caller's
        self.batches: list[list[str]] = []
        self.committed: set[str] = set()
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()
        self.decide = decide

    def __call__(self, batch: Sequence[str]) -> list[Outcome]:
        self.batches.append(list(batch))
        self.entered.set()
        assert self.hold.wait(WAIT)
        if self.fail_with is not None and "first" not in batch:
            raise self.fail_with
        outcomes = [self.decide(item) for item in batch]
        self.committed.update(i for i, o in zip(batch, outcomes, strict=True) if o is None)
        return outcomes


class Caller(threading.Thread):
    def __init__(self, gc: GroupCommit[str], item: str) -> None:
        super().__init__(daemon=True)
        self.gc, self.item = gc, item
        self.error: BaseException | None = None
        self.returned = threading.Event()

    def run(self) -> None:
        try:
            self.gc.submit(self.item)
        except BaseException as exc:
            self.error = exc
        self.returned.set()


def _queued(gc: GroupCommit[str], n: int) -> None:
    deadline = time.monotonic() + WAIT
    while len(gc._queue) < n:
        assert time.monotonic() < deadline, "callers did not queue"
        time.sleep(0.001)


def _start_batch(gc: GroupCommit[str], rec: Recorder, items: list[str]) -> list[Caller]:
    """Block the commit of a first item, queue ``items`` one by one (in this
    order) behind it; returns the callers, first one included."""
    rec.hold.clear()
    first = Caller(gc, "first")
    first.start()
    assert rec.entered.wait(WAIT)
    callers = [first]
    for k, item in enumerate(items, start=1):
        c = Caller(gc, item)
        c.start()
        _queued(gc, k)
        callers.append(c)
    return callers


def test_a_lone_caller_commits_its_own_item_at_once() -> None:
    rec = Recorder()
    gc: GroupCommit[str] = GroupCommit(rec)
    gc.submit("a")
    gc.submit("b")
    assert rec.batches == [["a"], ["b"]]


def test_callers_queued_during_a_commit_share_the_next_one_in_order() -> None:
    rec = Recorder()
    gc: GroupCommit[str] = GroupCommit(rec)
    items = [f"item-{k}" for k in range(8)]
    callers = _start_batch(gc, rec, items)
    rec.hold.set()
    for c in callers:
        assert c.returned.wait(WAIT) and c.error is None
    assert rec.batches == [["first"], items]


def test_no_caller_returns_before_its_batch_is_committed() -> None:
    rec = Recorder()
    gc: GroupCommit[str] = GroupCommit(rec)
    callers = _start_batch(gc, rec, ["a", "b", "c"])
    # The first commit is held open: nobody has returned, nothing is committed.
    time.sleep(0.05)
    assert not any(c.returned.is_set() for c in callers)
    # Let the first batch through and hold the second.
    rec.entered.clear()
    gate = threading.Event()
    original = rec.decide

    def slow(item: str) -> Outcome:
        if item != "first":
            assert gate.wait(WAIT)
        return original(item)

    rec.decide = slow
    rec.hold.set()
    assert callers[0].returned.wait(WAIT)
    assert rec.entered.wait(WAIT)  # the second batch is being committed
    time.sleep(0.05)
    assert not any(c.returned.is_set() for c in callers[1:])
    assert rec.committed == {"first"}
    gate.set()
    for c in callers[1:]:
        assert c.returned.wait(WAIT) and c.error is None
    assert rec.committed == {"first", "a", "b", "c"}


def test_a_failed_item_fails_alone() -> None:
    refused = ValueError("this one is refused")
    rec = Recorder(lambda item: refused if item == "bad" else None)
    gc: GroupCommit[str] = GroupCommit(rec)
    callers = _start_batch(gc, rec, ["a", "bad", "c"])
    rec.hold.set()
    for c in callers:
        assert c.returned.wait(WAIT)
    assert [c.error for c in callers] == [None, None, refused, None]
    assert rec.batches[1] == ["a", "bad", "c"]


def test_a_commit_that_raises_fails_its_whole_batch_and_only_it() -> None:
    calls = {"n": 0}

    def commit(batch: Sequence[str]) -> list[Outcome]:
        calls["n"] += 1
        if "boom" in batch:
            raise OSError("disk full")
        return [None] * len(batch)

    gc: GroupCommit[str] = GroupCommit(commit)
    with pytest.raises(GroupCommitFailed, match="OSError") as caught:
        gc.submit("boom")
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    gc.submit("next")  # the next batch is unaffected
    assert calls["n"] == 2


def test_callers_of_a_failed_batch_never_share_an_exception() -> None:
    """One exception object raised in several threads would gather all their
    frames, and the card data in their locals, in one traceback."""
    rec = Recorder(fail_with=OSError("disk full"))
    gc: GroupCommit[str] = GroupCommit(rec)
    callers = _start_batch(gc, rec, ["a", "b", "c"])
    rec.hold.set()
    for c in callers:
        assert c.returned.wait(WAIT)
    assert callers[0].error is None
    errors = [c.error for c in callers[1:]]
    assert all(isinstance(e, GroupCommitFailed) for e in errors)
    assert len({id(e) for e in errors}) == len(errors)


def test_an_items_own_failure_comes_without_the_leaders_traceback() -> None:
    def commit(batch: Sequence[str]) -> list[Outcome]:
        try:
            raise ValueError(f"bad {batch[0]}")
        except ValueError as exc:
            return [exc]

    gc: GroupCommit[str] = GroupCommit(commit)
    with pytest.raises(ValueError, match="bad x") as caught:
        gc.submit("x")
    tb = caught.value.__traceback__
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert "commit" not in frames  # only the raise in submit, not the leader's stack


def test_an_interrupted_leader_strands_no_item() -> None:
    """A BaseException (KeyboardInterrupt) in the leader fails its batch; an
    item that never ran is taken out of the queue, not committed later for a
    caller that was told it failed."""
    committed: list[str] = []

    def commit(batch: Sequence[str]) -> list[Outcome]:
        if "a" in batch:
            raise KeyboardInterrupt
        committed.extend(batch)
        return [None] * len(batch)

    gc: GroupCommit[str] = GroupCommit(commit, max_batch=1)
    with pytest.raises(KeyboardInterrupt):  # the leader's own thread gets the interrupt
        gc.submit("a")
    gc.submit("b")
    assert committed == ["b"]
    assert not gc._leading and gc._queue == []


def test_a_wrong_number_of_outcomes_fails_the_batch() -> None:
    gc: GroupCommit[str] = GroupCommit(lambda batch: [])
    with pytest.raises(GroupCommitFailed, match="RuntimeError"):
        gc.submit("a")


def test_batches_are_capped_and_taken_oldest_first() -> None:
    rec = Recorder()
    gc: GroupCommit[str] = GroupCommit(rec, max_batch=2)
    items = ["a", "b", "c", "d", "e"]
    callers = _start_batch(gc, rec, items)
    rec.hold.set()
    for c in callers:
        assert c.returned.wait(WAIT) and c.error is None
    assert rec.batches == [["first"], ["a", "b"], ["c", "d"], ["e"]]


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        GroupCommit(lambda batch: [None] * len(batch), max_batch=0)
