"""``AuditLog``: durable, group-committed appends to one service's audit store.

``record()`` (threads) and ``await arecord()`` (asyncio tasks) return only
once their entry is durably committed, and raise
:class:`~paywarden.audit.errors.AuditWriteError` otherwise; the caller then
fails the action it was recording ("no unaudited card access").

Group commit: callers validate and encode their entry on their own thread
(:func:`~paywarden.audit.entry.prepare`), enqueue it and wait. One writer
thread takes *everything pending* (up to ``max_batch`` entries), assigns the
next sequence numbers and one timestamp inside a serialised transaction,
commits, and wakes exactly those callers. While it commits, new callers queue
up, so under load batches grow by themselves; a lone caller is committed at
once, never held back by a timer. Optionally (``linger_seconds``) the writer
waits a moment for company, but only when the previous batch had several
entries, i.e. when there is concurrency to gather.

Waking is what costs under load, not the commit: a thread blocked in
``record()`` must be woken and must win the GIL back, a few futex round trips
per entry. A task awaiting ``arecord()`` costs nothing of the kind: the writer
settles every awaiting task of a batch on one loop with a single
``call_soon_threadsafe``. Callers on an event loop should use ``arecord()``
(``bench/audit_log.py``: about twice the appends per second of 64 threads).

After the commit, tree maintenance (node cache, root) runs on its own thread,
and a periodic signer signs a new tree head when the size changed. Neither
is ever on a caller's path.

Opening records ``audit.started`` and :meth:`AuditLog.close` records
``audit.stopped`` (PCI DSS 10.2.1.6), then signs a final head.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import queue
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from sqlalchemy import select

from paywarden.audit import entry as entry_mod
from paywarden.audit.entry import Actor, Entry, Origin, Resource, SensitiveValue
from paywarden.audit.errors import AuditError, AuditWriteError
from paywarden.audit.signing import Signer, TreeHead, load_tree_heads
from paywarden.audit.store import (
    AuditStore,
    Row,
    as_bytes,
    entries,
    signing_keys,
    tree_heads,
)
from paywarden.audit.tree import TreeCache
from paywarden.core.periodic import PeriodicTask

log = logging.getLogger("paywarden.audit")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _ms(when: datetime) -> int:
    return entry_mod.time_micros(when) // 1000


# An entry's head (:func:`~paywarden.audit.entry.prepare`) and the SHA-256
# state over ``0x00 || head``: the leaf hash's first part, computed on the
# caller's thread, so the writer hashes only the short tail while it holds the
# store's lock.
_Item = tuple[bytes, "hashlib._Hash"]


def _item(head: bytes) -> _Item:
    prefix = hashlib.sha256(b"\x00")
    prefix.update(head)
    return head, prefix


class _Pending:
    """Entries one caller waits for, and the first ``seq`` they were given."""

    __slots__ = ("first_seq", "items")

    def __init__(self, items: list[_Item]) -> None:
        self.items = items
        self.first_seq = -1


class _Blocked(_Pending):
    """A thread waiting in :meth:`AuditLog.record`. ``done`` is a lock the
    writer releases: the cheapest one-shot wake-up CPython has."""

    __slots__ = ("done", "error")

    def __init__(self, items: list[_Item]) -> None:
        super().__init__(items)
        self.error: BaseException | None = None
        self.done = threading.Lock()
        self.done.acquire()


class _Awaited(_Pending):
    """A task awaiting :meth:`AuditLog.arecord` on ``waiters.loop``."""

    __slots__ = ("future", "waiters")

    def __init__(
        self, items: list[_Item], waiters: _LoopWaiters, future: asyncio.Future[int]
    ) -> None:
        super().__init__(items)
        self.waiters = waiters
        self.future = future


class _LoopWaiters:
    """The tasks of one event loop awaiting their entries, oldest first.

    Everything here runs on that loop's thread. The writer settles all of a
    batch's futures on one loop with a single ``call_soon_threadsafe``
    (:meth:`settle`): no thread is woken per entry. Timeouts: a timer per
    entry (``loop.call_later``) cost as much CPU as the rest of the asyncio
    path, and every entry has the log's one timeout, so queue order is
    deadline order and one timer, set for the oldest waiter, serves all.
    """

    __slots__ = ("_loop", "timeout", "timer", "waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        # Weakly: the log's map of loops must not keep a finished loop alive (a
        # pending future holds its loop, so a loop with waiters is never lost).
        self._loop = weakref.ref(loop)
        self.timeout = timeout
        self.waiting: deque[tuple[float, asyncio.Future[int]]] = deque()
        self.timer: asyncio.TimerHandle | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop()

    def add(self, future: asyncio.Future[int]) -> None:
        loop = self.loop
        assert loop is not None  # called on the loop's own thread
        deadline = loop.time() + self.timeout
        self.waiting.append((deadline, future))
        if self.timer is None:
            self.timer = loop.call_at(deadline, self._expire)

    def settle(self, batch: list[_Awaited], error: BaseException | None) -> None:
        """Resolve every future of one committed (or failed) batch.

        A future already done was cancelled by its caller or timed out; its
        entry is committed (or failed) all the same, exactly once, like the
        rest of the batch."""
        for p in batch:
            future = p.future
            if future.done():
                continue
            if error is None:
                future.set_result(p.first_seq)
            else:
                exc = AuditWriteError("the audit store did not commit the entry")
                exc.__cause__ = error
                future.set_exception(exc)
        waiting = self.waiting
        while waiting and waiting[0][1].done():
            waiting.popleft()
        if not waiting and self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expire(self) -> None:
        self.timer = None
        loop = self.loop
        if loop is None:
            return
        now = loop.time()
        waiting = self.waiting
        while waiting:
            deadline, future = waiting[0]
            if not future.done():
                if deadline > now:
                    self.timer = loop.call_at(deadline, self._expire)
                    return
                future.set_exception(
                    AuditWriteError(f"the audit entry was not confirmed within {self.timeout:g} s")
                )
            waiting.popleft()


@dataclass(frozen=True, slots=True)
class InclusionProof:
    service: str
    leaf_index: int
    tree_size: int
    leaf_hash: bytes
    entry: bytes | None  # the leaf bytes, when still online
    proof: list[bytes]
    root_hash: bytes
    tree_head: TreeHead | None  # a signed head of exactly ``tree_size``, if one exists

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "inclusion",
            "service": self.service,
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "leaf_hash": self.leaf_hash.hex(),
            "entry": self.entry.decode("utf-8") if self.entry is not None else None,
            "proof": [p.hex() for p in self.proof],
            "root_hash": self.root_hash.hex(),
            "tree_head": self.tree_head.to_json() if self.tree_head else None,
        }


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    service: str
    old_size: int
    new_size: int
    old_root: bytes
    new_root: bytes
    proof: list[bytes]
    old_head: TreeHead | None
    new_head: TreeHead | None

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "consistency",
            "service": self.service,
            "old_size": self.old_size,
            "new_size": self.new_size,
            "old_root": self.old_root.hex(),
            "new_root": self.new_root.hex(),
            "proof": [p.hex() for p in self.proof],
            "old_head": self.old_head.to_json() if self.old_head else None,
            "new_head": self.new_head.to_json() if self.new_head else None,
        }


class AuditLog:
    """One service's audit log. Thread-safe; one instance per process."""

    def __init__(
        self,
        store: AuditStore,
        *,
        service: str,
        signer: Signer | None = None,
        pseudonym_key: bytes | None = None,
        now: Callable[[], datetime] = utcnow,
        max_batch: int = 1024,
        linger_seconds: float = 0.0,
        record_timeout: float = 30.0,
        sign_interval: float | None = 60.0,
        lifecycle: bool = True,
        owns_store: bool = True,
        tree_delay: float = 0.25,
    ) -> None:
        """``lifecycle``: record ``audit.started``/``audit.stopped`` (services do;
        the CLI, which only reads, does not). ``signer=None``: this process never
        signs (heads come from the service that holds the key)."""
        if service not in entry_mod.SERVICES:
            raise ValueError(f"service must be one of {entry_mod.SERVICES}")
        self.store = store
        self.service = service
        self.signer = signer
        self.tree = TreeCache(store)
        self._pseudonym_key = pseudonym_key
        self._now = now
        self._max_batch = max_batch
        self._linger = linger_seconds
        self._timeout = record_timeout
        self._lifecycle = lifecycle
        self._owns_store = owns_store
        self._tree_delay = tree_delay
        # SimpleQueue is implemented in C: a put costs the caller far less than
        # a Python-level Condition, which matters with hundreds of callers.
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._gate = threading.Lock()  # orders "closed?" checks against the closing sentinel
        self._closed = False
        self._last_batch = 0
        self._loop_waiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopWaiters] = (
            weakref.WeakKeyDictionary()
        )
        self._last_waiters: _LoopWaiters | None = None
        self._maintain = threading.Event()
        self._stop_maintainer = threading.Event()
        self._writer = threading.Thread(
            target=self._write_loop, name=f"paywarden-audit-{service}-writer", daemon=True
        )
        self._maintainer = threading.Thread(
            target=self._maintain_loop, name=f"paywarden-audit-{service}-tree", daemon=True
        )
        self._writer.start()
        self._maintainer.start()
        self._periodic: PeriodicTask | None = None
        try:
            if signer is not None:
                signer.load_or_create(now_ms=_ms(self._now()))
                if sign_interval:
                    self._periodic = PeriodicTask(
                        f"audit-{service}-sign", sign_interval, self.sign_if_changed
                    )
                    self._periodic.start_background()
            if lifecycle:
                self.record(
                    event="audit.started",
                    outcome="success",
                    actor=Actor.system(f"paywarden-{service}"),
                    details={"key_id": signer.key_id if signer else None},
                )
        except BaseException:
            self._shutdown(record_stop=False)
            raise

    def __repr__(self) -> str:
        return f"AuditLog(service={self.service!r}, store={self.store!r})"

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---------------------------------------------------------------- append

    def record(
        self,
        *,
        event: str,
        outcome: str,
        actor: Actor,
        origin: Origin | None = None,
        resource: Resource | None = None,
        account: str | None = None,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
        sensitive: Mapping[str, SensitiveValue] | None = None,
    ) -> int:
        """Append one entry and wait until it is durably committed; its ``seq``.

        Raises :class:`AuditEntryError` for an unacceptable entry and
        :class:`AuditWriteError` when it cannot be committed in time.
        """
        prepared = entry_mod.prepare(
            event=event,
            outcome=outcome,
            actor=actor,
            origin=origin,
            resource=resource,
            account=account,
            reason=reason,
            details=details,
            sensitive=sensitive,
            pseudonym_key=self._pseudonym_key,
        )
        return self._submit([_item(prepared.head)])

    def record_many(self, specs: Iterable[Mapping[str, Any]], *, chunk: int = 5000) -> list[int]:
        """Append many entries (each a mapping of :meth:`record`'s keyword
        arguments), committed in chunks of ``chunk`` per transaction."""
        seqs: list[int] = []
        items: list[_Item] = []
        for spec in specs:
            prepared = entry_mod.prepare(**dict(spec), pseudonym_key=self._pseudonym_key)
            items.append(_item(prepared.head))
            if len(items) >= chunk:
                first = self._submit(items)
                seqs.extend(range(first, first + len(items)))
                items = []
        if items:
            first = self._submit(items)
            seqs.extend(range(first, first + len(items)))
        return seqs

    async def arecord(
        self,
        *,
        event: str,
        outcome: str,
        actor: Actor,
        origin: Origin | None = None,
        resource: Resource | None = None,
        account: str | None = None,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
        sensitive: Mapping[str, SensitiveValue] | None = None,
    ) -> int:
        """:meth:`record` for callers on an asyncio event loop: the same entry,
        the same durability (it returns only once the entry is committed), but
        no thread blocks per entry. The writer settles a whole batch's
        callers with one wake-up of their loop.

        The entry is validated and encoded on the loop's thread (~10 µs, no
        I/O), then queued before the first suspension: once ``arecord`` has
        started, its entry *will* be committed exactly once, or fail with its
        batch. Cancelling the awaiting task therefore withdraws nothing; like
        a timed-out :meth:`record`, a cancelled ``arecord`` leaves the caller
        not knowing whether the entry was committed, and the action it
        records must be treated as not audited.

        Raises :class:`AuditEntryError` for an unacceptable entry and
        :class:`AuditWriteError` when it cannot be committed in time.
        """
        prepared = entry_mod.prepare(
            event=event,
            outcome=outcome,
            actor=actor,
            origin=origin,
            resource=resource,
            account=account,
            reason=reason,
            details=details,
            sensitive=sensitive,
            pseudonym_key=self._pseudonym_key,
        )
        loop = asyncio.get_running_loop()
        last = self._last_waiters
        waiters = last if last is not None and last.loop is loop else self._waiters_for(loop)
        future: asyncio.Future[int] = loop.create_future()
        self._enqueue(_Awaited([_item(prepared.head)], waiters, future))
        # Nothing can settle the future before this task yields: settling runs on this loop.
        waiters.add(future)
        return await future

    def _waiters_for(self, loop: asyncio.AbstractEventLoop) -> _LoopWaiters:
        with self._gate:
            waiters = self._loop_waiters.get(loop)
            if waiters is None:
                waiters = self._loop_waiters[loop] = _LoopWaiters(loop, self._timeout)
            self._last_waiters = waiters
            return waiters

    def _enqueue(self, pending: _Pending) -> None:
        with self._gate:
            if self._closed:
                raise AuditWriteError("the audit log is closed")
            self._queue.put(pending)

    def _submit(self, items: list[_Item]) -> int:
        pending = _Blocked(items)
        self._enqueue(pending)
        if not pending.done.acquire(timeout=self._timeout):
            raise AuditWriteError(f"the audit entry was not confirmed within {self._timeout:g} s")
        if pending.error is not None:
            raise AuditWriteError("the audit store did not commit the entry") from pending.error
        return pending.first_seq

    def _write_loop(self) -> None:
        """Take everything pending (up to ``max_batch``), commit, wake, repeat.

        No timer: the first item is taken as soon as it arrives, and whatever
        queued up during the previous commit joins the next batch. ``None`` is
        the closing sentinel; it is queued after every accepted entry.
        """
        get = self._queue.get
        get_nowait = self._queue.get_nowait
        closing = False
        while not closing:
            first = get()
            if first is None:
                return
            batch = [first]
            count = len(first.items)
            while count < self._max_batch:
                try:
                    item = get_nowait()
                except queue.Empty:
                    if self._linger and self._last_batch > 1:
                        try:
                            item = get(timeout=self._linger)
                        except queue.Empty:
                            break
                    else:
                        break
                if item is None:
                    closing = True
                    break
                batch.append(item)
                count += len(item.items)
            self._last_batch = len(batch)
            self._commit(batch)
            # Nothing of a settled batch may outlive it here: its futures hold their loops.
            batch.clear()
            first = item = None

    def _commit(self, batch: list[_Pending]) -> None:
        items = [item for p in batch for item in p.items]
        error: BaseException | None = None
        try:
            seq = self._append(items)
        except Exception as exc:
            log.exception("audit append failed: %d entries not recorded", len(items))
            error = exc
        else:
            for p in batch:
                p.first_seq = seq
                seq += len(p.items)
        self._settle(batch, error)
        if error is None:
            self._maintain.set()

    @staticmethod
    def _settle(batch: list[_Pending], error: BaseException | None) -> None:
        """Wake the batch's callers: one ``call_soon_threadsafe`` per event
        loop for awaiting tasks (first: it is one system call), then each
        blocked thread."""
        loops: dict[_LoopWaiters, list[_Awaited]] = {}
        blocked: list[_Blocked] = []
        for p in batch:
            if isinstance(p, _Blocked):
                blocked.append(p)
            elif isinstance(p, _Awaited):
                loops.setdefault(p.waiters, []).append(p)
        for waiters, awaited in loops.items():
            loop = waiters.loop  # alive: each awaited future holds it
            try:
                if loop is None:
                    raise RuntimeError("event loop is gone")
                loop.call_soon_threadsafe(waiters.settle, awaited, error)
            except RuntimeError:
                # The loop is closed: nobody can await these any more. Their
                # entries are committed (or failed) like the rest of the batch.
                log.warning(
                    "audit: %d callers' event loop closed before they were told", len(awaited)
                )
        for b in blocked:
            b.error = error
            b.done.release()

    def _append(self, items: list[_Item]) -> int:
        service = self.service
        tail = entry_mod.tail

        def build(first: int, micros: int) -> list[Row]:
            # Runs under the store's append lock: per entry, only the tail
            # (seq, service, time) is formatted and hashed.
            stamp = entry_mod.format_time(_EPOCH + timedelta(microseconds=micros))
            rows: list[Row] = []
            seq = first
            for head, prefix in items:
                end = tail(seq, service, stamp)
                leaf = prefix.copy()
                leaf.update(end)
                rows.append((seq, leaf.digest(), head + end, micros))
                seq += 1
            return rows

        return self.store.append(len(items), entry_mod.time_micros(self._now()), build)

    # ------------------------------------------------------ tree and heads

    def _maintain_loop(self) -> None:
        while not self._stop_maintainer.is_set():
            self._maintain.wait(timeout=1.0)
            if self._stop_maintainer.is_set():
                return
            self._maintain.clear()
            # Let commits accumulate (``tree_delay``): fewer, larger node inserts,
            # and less time holding SQLite's write lock, which the appenders need.
            self._stop_maintainer.wait(self._tree_delay)
            try:
                self.tree.catch_up()
            except Exception:
                log.exception("audit tree maintenance failed")

    def catch_up(self) -> tuple[int, bytes]:
        """Bring the node cache up to date now; ``(tree_size, root)``."""
        return self.tree.catch_up()

    def now(self) -> datetime:
        """The log's clock (injectable, for tests and retention)."""
        return self._now()

    def _require_signer(self) -> Signer:
        if self.signer is None:
            raise AuditError("this audit log has no signing key")
        return self.signer

    def sign_tree_head(self) -> TreeHead:
        """Sign and store a head over every committed entry, now."""
        signer = self._require_signer()
        size, root = self.tree.catch_up()
        head = signer.sign_head(tree_size=size, root_hash=root, timestamp_ms=_ms(self._now()))
        signer.store_head(head)
        return head

    def sign_if_changed(self) -> TreeHead | None:
        """The periodic signer: a new head only when the size (or key) changed."""
        signer = self._require_signer()
        size, _ = self.tree.catch_up()
        latest = self.latest_tree_head()
        if latest is not None and latest.tree_size == size and latest.key_id == signer.key_id:
            return None
        return self.sign_tree_head()

    def latest_tree_head(self) -> TreeHead | None:
        with self.store.reading() as conn:
            row = conn.execute(
                select(
                    tree_heads.c.tree_size,
                    tree_heads.c.timestamp,
                    tree_heads.c.root_hash,
                    tree_heads.c.key_id,
                    tree_heads.c.signature,
                )
                .order_by(tree_heads.c.tree_size.desc(), tree_heads.c.id.desc())
                .limit(1)
            ).first()
        if row is None:
            return None
        return TreeHead(
            self.service, int(row[0]), int(row[1]), as_bytes(row[2]), str(row[3]), as_bytes(row[4])
        )

    def tree_heads(self) -> list[TreeHead]:
        with self.store.reading() as conn:
            return load_tree_heads(conn, self.service)

    def _head_of_size(self, size: int) -> TreeHead | None:
        for head in reversed(self.tree_heads()):
            if head.tree_size == size:
                return head
        return None

    def rotate_signing_key(self, *, actor: Actor | None = None) -> tuple[str, str]:
        """New signing key; the old one is retired but its public key stays.

        The handover is recorded in the log (``audit.signing_key.rotated``, with
        the new public key) and the head covering that entry is signed by the
        old key *and* the new one, so a verifier trusting the old key learns
        the new one from the log itself.
        """
        signer = self._require_signer()
        old_id, old_key = signer.current_key()
        self.sign_if_changed()
        now_ms = _ms(self._now())
        old, new = signer.rotate(now_ms=now_ms)
        with self.store.reading() as conn:
            public = conn.execute(
                select(signing_keys.c.public_key).where(signing_keys.c.key_id == new)
            ).scalar_one()
        self.record(
            event="audit.signing_key.rotated",
            outcome="success",
            actor=actor or Actor.system(f"paywarden-{self.service}"),
            details={"old_key_id": old, "new_key_id": new, "new_public_key": bytes(public).hex()},
        )
        size, root = self.tree.catch_up()
        stamp = _ms(self._now())
        signer.store_head(
            signer.sign_head_with(
                old_id, old_key, tree_size=size, root_hash=root, timestamp_ms=stamp
            )
        )
        signer.store_head(signer.sign_head(tree_size=size, root_hash=root, timestamp_ms=stamp))
        return old, new

    def reseal_keys(self) -> int:
        """Re-seal sealed keys whose KEK version aged (after a vault KEK rotation)."""
        return self._require_signer().reseal()

    # ---------------------------------------------------------------- proofs

    def inclusion_proof(self, seq: int, tree_size: int | None = None) -> InclusionProof:
        """Proof that entry ``seq`` is in the tree of ``tree_size`` entries.

        Default size: the latest signed head (signing a fresh one if none
        covers ``seq`` and this process holds the key)."""
        head: TreeHead | None
        if tree_size is None:
            head = self.latest_tree_head()
            if (head is None or head.tree_size <= seq) and self.signer is not None:
                head = self.sign_tree_head()
            size = head.tree_size if head is not None else self.tree.catch_up()[0]
        else:
            size = tree_size
            head = self._head_of_size(size)
        if not 0 <= seq < size:
            raise ValueError(f"seq {seq} is not in a tree of size {size}")
        proof = self.tree.inclusion_proof(seq, size)
        with self.store.reading() as conn:
            body = conn.execute(select(entries.c.body).where(entries.c.seq == seq)).scalar()
        return InclusionProof(
            service=self.service,
            leaf_index=seq,
            tree_size=size,
            leaf_hash=self.tree.leaf_hash(seq),
            entry=as_bytes(body) if body is not None else None,
            proof=proof,
            root_hash=self.tree.root_at(size),
            tree_head=head,
        )

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> ConsistencyProof:
        """Proof that the tree of ``new_size`` extends the tree of ``old_size``."""
        if new_size is None:
            head = self.latest_tree_head()
            new_size = head.tree_size if head is not None else self.tree.catch_up()[0]
        if not 0 <= old_size <= new_size:
            raise ValueError("sizes must satisfy 0 <= old <= new")
        return ConsistencyProof(
            service=self.service,
            old_size=old_size,
            new_size=new_size,
            old_root=self.tree.root_at(old_size),
            new_root=self.tree.root_at(new_size),
            proof=self.tree.consistency_proof(old_size, new_size),
            old_head=self._head_of_size(old_size),
            new_head=self._head_of_size(new_size),
        )

    # ----------------------------------------------------------------- reads

    def raw_entries(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        """``(seq, leaf bytes)`` of online entries in ``[start, stop)``, in chunks."""
        pos = start
        while stop is None or pos < stop:
            query = select(entries.c.seq, entries.c.body).where(entries.c.seq >= pos)
            if stop is not None:
                query = query.where(entries.c.seq < stop)
            with self.store.reading() as conn:
                rows = conn.execute(query.order_by(entries.c.seq).limit(5000)).all()
            if not rows:
                return
            for seq, body in rows:
                yield int(seq), as_bytes(body)
            pos = int(rows[-1][0]) + 1

    def entries(self, start: int = 0, stop: int | None = None) -> list[Entry]:
        """Decoded online entries in ``[start, stop)`` (archived ones: see archive)."""
        return [Entry.from_body(body) for _, body in self.raw_entries(start, stop)]

    def size(self) -> int:
        with self.store.reading() as conn:
            return AuditStore.read_state(conn)["next_seq"][0]

    # ----------------------------------------------------------------- close

    def close(self) -> None:
        """Record ``audit.stopped``, flush, sign a final head, stop the threads."""
        if self._closed:
            return
        self._shutdown(record_stop=self._lifecycle)

    def _shutdown(self, *, record_stop: bool) -> None:
        if record_stop:
            try:
                self.record(
                    event="audit.stopped",
                    outcome="success",
                    actor=Actor.system(f"paywarden-{self.service}"),
                )
            except AuditWriteError:
                log.exception("could not record audit.stopped")
        with self._gate:
            self._closed = True
            self._queue.put(None)
        self._writer.join()
        if self._periodic is not None:
            self._periodic.stop()
        self._stop_maintainer.set()
        self._maintain.set()
        self._maintainer.join()
        if self.signer is not None and record_stop:
            try:
                self.sign_if_changed()
            except Exception:
                log.exception("could not sign the final tree head")
        if self._owns_store:
            self.store.dispose()
