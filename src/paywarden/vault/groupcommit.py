"""Group commit: concurrent callers share one durable transaction.

A durable commit (journal writes and fsyncs) costs far more than the rows it
carries. :class:`GroupCommit` lets callers that arrive while a commit is under
way ride together in the next one, without a dedicated thread and without a
timer:

* a caller appends its item to the queue; if no batch is being committed, it
  becomes the *leader*, otherwise it sleeps until the current batch ends;
* the leader takes everything queued (up to ``max_batch`` items, oldest
  first), hands the batch to ``commit`` outside the lock, records each item's
  outcome and wakes every waiter;
* a woken caller whose item is done returns; otherwise one of them leads the
  next batch, which holds everything that queued up meanwhile.

A lone caller is its own leader: it pays no thread hand-off and no waiting.
Under load, callers queue while the leader commits, so batches grow by
themselves.

``commit`` receives the items in queue order and returns one outcome per item:
``None`` for success or the exception that item's caller must raise (a
distinct object per item), so one bad item fails alone; it is raised without
the committing thread's traceback. If ``commit`` raises, every item of that
batch fails with a :class:`GroupCommitFailed` of its own, never a shared
object. :meth:`GroupCommit.submit` returns only after ``commit``
has returned for the batch holding the item, so when ``commit`` returns only
after a durable commit, so does every caller.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

log = logging.getLogger("paywarden.vault")

Outcome = BaseException | None


class _Slot(Generic[T]):
    __slots__ = ("done", "item", "outcome")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.outcome: Outcome = None


class GroupCommit(Generic[T]):
    """Batches concurrent :meth:`submit` calls into calls of ``commit``."""

    def __init__(
        self, commit: Callable[[Sequence[T]], Sequence[Outcome]], *, max_batch: int = 256
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._commit = commit
        self._max_batch = max_batch
        self._queue: list[_Slot[T]] = []
        # Guards the queue, ``_leading`` and ``_waiting``; waiters sleep on
        # ``_cond`` until a batch ends. The plain lock is entered directly: the
        # Condition's own methods are Python, and a lone caller needs none.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._leading = False
        self._waiting = 0

    def submit(self, item: T) -> None:
        """Commit ``item`` with whatever else is pending; raise its failure, if any."""
        slot = _Slot(item)
        with self._lock:
            self._queue.append(slot)
            try:
                while not slot.done:
                    if self._leading:
                        # Woken at the end of every batch: either ours was in it,
                        # or the next batch needs a leader.
                        self._waiting += 1
                        try:
                            self._cond.wait()
                        finally:
                            self._waiting -= 1
                        continue
                    try:
                        self._leading = True
                        batch = self._queue[: self._max_batch]
                        del self._queue[: self._max_batch]
                        self._lock.release()
                        try:
                            self._run(batch)
                        finally:
                            self._lock.acquire()
                    finally:
                        self._leading = False
                        if self._waiting:
                            self._cond.notify_all()
            finally:
                if not slot.done and slot in self._queue:
                    # Interrupted before its batch ran: it must not be committed
                    # later on behalf of a caller that was told it failed.
                    self._queue.remove(slot)
        if slot.outcome is not None:
            raise slot.outcome

    def _run(self, batch: list[_Slot[T]]) -> None:
        outcomes: Sequence[Outcome]
        try:
            outcomes = self._commit([slot.item for slot in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError("group commit: one outcome per item expected")
        except BaseException as exc:
            # Nobody in this batch may believe their item was committed. Each
            # caller gets an exception of its own: one object raised in many
            # threads would gather all their frames (and the card data in
            # their locals) in one traceback. The cause is logged here, once.
            log.error("group commit of %d items failed", len(batch), exc_info=exc)
            for slot in batch:
                slot.outcome = GroupCommitFailed(
                    f"the batch was not committed ({type(exc).__name__})"
                )
                slot.done = True
            if not isinstance(exc, Exception):
                raise
            return
        for slot, outcome in zip(batch, outcomes, strict=True):
            slot.outcome = _detached(outcome)
            slot.done = True


class GroupCommitFailed(RuntimeError):
    """The batch holding the caller's item failed as a whole; nothing of it was committed."""


def _detached(outcome: Outcome) -> Outcome:
    """The item's own failure without the committing thread's traceback, cause
    or context: those frames belong to the leader and to other items."""
    if outcome is None:
        return None
    outcome.__traceback__ = None
    outcome.__cause__ = None
    outcome.__context__ = None
    outcome.__suppress_context__ = True
    return outcome
