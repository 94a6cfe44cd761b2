"""Tree maintenance and proofs over the node cache.

After entries commit, :meth:`TreeCache.catch_up` (run by the audit log's
maintenance thread, never on a caller's path) reads their leaf hashes, extends
the in-memory frontier (:class:`~paywarden.audit.merkle.CompactRange`) and
stores every perfect subtree it completes in ``audit_nodes``; ``audit_state``'s
``tree_size`` row records how far the cache reaches, with the root at that size.

Each step reads without holding the write lock, then writes only if no other
process advanced the cache meanwhile (it re-reads ``tree_size`` under
the lock), so several gateway workers can all run maintenance safely and the
appenders wait only for the short insert.

Proofs (:meth:`inclusion_proof`, :meth:`consistency_proof`, :meth:`root_at`)
need O(log n) cached nodes, fetched in one query.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import select

from paywarden.audit import merkle
from paywarden.audit.errors import AuditError
from paywarden.audit.store import TREE_LOCK, AuditStore, as_bytes, entries, nodes

T = TypeVar("T")


class TreeError(AuditError):
    """The node cache cannot answer (an entry is missing, a size is not covered)."""


class TreeCache:
    def __init__(self, store: AuditStore, *, chunk: int = 4096) -> None:
        self._store = store
        self._chunk = chunk
        self._range: merkle.CompactRange | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------ maintenance

    def catch_up(self) -> tuple[int, bytes]:
        """Extend the node cache over every committed entry; ``(size, root)``."""
        with self._lock:
            while not self._step():
                pass
            assert self._range is not None
            return self._range.size, self._range.root()

    def _load_frontier(self, size: int) -> merkle.CompactRange:
        coords = merkle.perfect_subtrees(0, size)
        with self._store.reading() as conn:
            found = AuditStore.get_nodes(conn, coords)
        if len(found) != len(coords):
            raise TreeError(f"the node cache lacks the frontier of size {size}")
        return merkle.CompactRange(size, [found[c] for c in coords])

    def _step(self) -> bool:
        """One chunk. True when the cache has caught up with the entries."""
        with self._store.reading() as conn:
            st = AuditStore.read_state(conn)
            size, next_seq = st["tree_size"][0], st["next_seq"][0]
            if size >= next_seq:
                if self._range is None or self._range.size != size:
                    self._range = None
                rows: Sequence[Any] = []
            else:
                rows = conn.execute(
                    select(entries.c.seq, entries.c.leaf_hash)
                    .where(entries.c.seq >= size)
                    .order_by(entries.c.seq)
                    .limit(self._chunk)
                ).all()
        if self._range is None or self._range.size != size:
            self._range = self._load_frontier(size)
        if not rows:
            return True
        cr = self._range.copy()
        completed: list[tuple[int, int, bytes]] = []
        for seq, leaf in rows:
            if seq != cr.size:
                raise TreeError(f"entry {cr.size} is missing; the node cache stops before it")
            completed.extend(cr.append(as_bytes(leaf)))
        with self._store.writing(TREE_LOCK) as conn:
            now_size = AuditStore.read_state(conn)["tree_size"][0]
            if now_size != size:
                # Another process extended the cache meanwhile: start again from its state.
                self._range = None
                return False
            self._store.insert_rows(conn, nodes, ("level", "idx", "hash"), completed)
            AuditStore.set_state(conn, "tree_size", cr.size, cr.root())
        self._range = cr
        return cr.size >= next_seq

    def cached_size(self) -> tuple[int, bytes]:
        with self._store.reading() as conn:
            size, root = AuditStore.read_state(conn)["tree_size"]
        assert root is not None
        return size, root

    # ----------------------------------------------------------------- proofs

    def _covered(self, size: int) -> None:
        if self.cached_size()[0] < size:
            self.catch_up()
            if self.cached_size()[0] < size:
                raise TreeError(f"the log has fewer than {size} entries")

    def _with_nodes(self, generate: Callable[[merkle.NodeGetter], T]) -> T:
        coords = merkle.needed_nodes(generate)
        with self._store.reading() as conn:
            found = AuditStore.get_nodes(conn, coords)
        missing = [c for c in coords if c not in found]
        if missing:
            raise TreeError(f"the node cache lacks {len(missing)} node(s), e.g. {missing[0]}")
        return generate(lambda level, idx: found[level, idx])

    def root_at(self, size: int) -> bytes:
        self._covered(size)
        if size == 0:
            return merkle.EMPTY_ROOT
        return self._with_nodes(lambda get: merkle.subtree_root(0, size, get))

    def leaf_hash(self, index: int) -> bytes:
        return self._with_nodes(lambda get: get(0, index))

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        self._covered(size)
        return self._with_nodes(lambda get: merkle.inclusion_proof(index, size, get))

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        self._covered(new_size)
        return self._with_nodes(lambda get: merkle.consistency_proof(old_size, new_size, get))
