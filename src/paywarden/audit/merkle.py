"""RFC 9162 Merkle tree hashing and proofs (stdlib only).

Definitions follow RFC 9162 §2.1 (the same tree as RFC 6962):

- ``leaf_hash(d) = SHA-256(0x00 || d)``, ``node_hash(l, r) = SHA-256(0x01 || l || r)``;
- the root of ``n`` leaves splits at ``k``, the largest power of two smaller
  than ``n`` (§2.1.1), so the tree is a sequence of *perfect* subtrees, largest
  first, folded from the right.

Every perfect subtree is named ``(level, index)``: it covers leaves
``[index * 2**level, (index + 1) * 2**level)``; level 0 is a leaf hash. Proof
generation (§2.1.3.1 PATH, §2.1.4.1 SUBPROOF) asks a ``NodeGetter`` for such
subtrees only, and needs O(log n) of them: at most one incomplete subtree is
met on the way down, and it decomposes into O(log n) perfect ones. That is
what lets the store serve proofs from its node cache without rehashing.

Verification is the §2.1.3.2 / §2.1.4.2 algorithms, which need nothing but
the proof, the sizes and the hashes.

:class:`CompactRange` is the frontier of a tree of size ``n``: the roots of
its perfect subtrees. Appending is O(log n) (amortised O(1) hashes) and
reports the perfect subtrees it completes, which is how the node cache is
filled.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

NodeGetter = Callable[[int, int], bytes]
"""``(level, index) -> hash`` of a perfect subtree."""


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """``k``: the largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    if n < 2:
        raise ValueError("a split needs at least two leaves")
    return 1 << ((n - 1).bit_length() - 1)


def perfect_subtrees(start: int, size: int) -> list[tuple[int, int]]:
    """The perfect subtrees, largest first, whose fold is ``MTH(D[start:start+size])``.

    ``start`` must be aligned as RFC 9162's recursion aligns it: a multiple of
    the largest power of two not above ``size``. Every range that proof
    generation or :func:`tree_root_from` asks for is.
    """
    out: list[tuple[int, int]] = []
    pos = start
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            width = 1 << level
            if pos % width:
                raise ValueError("range start is not aligned to its subtrees")
            out.append((level, pos >> level))
            pos += width
    return out


def fold(hashes: Sequence[bytes]) -> bytes:
    """Root of consecutive perfect subtrees given largest first (the right fold)."""
    if not hashes:
        return EMPTY_ROOT
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def subtree_root(start: int, size: int, get: NodeGetter) -> bytes:
    """``MTH(D[start:start+size])`` from perfect subtrees."""
    return fold([get(level, index) for level, index in perfect_subtrees(start, size)])


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """``MTH`` of a whole list of leaf hashes (§2.1.1), iteratively."""
    cr = CompactRange()
    for h in leaf_hashes:
        cr.append(h)
    return cr.root()


class CompactRange:
    """The frontier of a tree of ``size`` leaves: its perfect subtree roots.

    ``hashes[i]`` is the root of the i-th perfect subtree, largest first; there
    is one per set bit of ``size``.
    """

    __slots__ = ("hashes", "size")

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        self.size = size
        self.hashes = list(hashes)
        if len(self.hashes) != size.bit_count():
            raise ValueError("a compact range has one hash per set bit of its size")
        if any(len(h) != HASH_SIZE for h in self.hashes):
            raise ValueError("hashes must be 32 bytes")

    def copy(self) -> CompactRange:
        return CompactRange(self.size, self.hashes)

    def coordinates(self) -> list[tuple[int, int]]:
        """``(level, index)`` of each frontier hash."""
        return perfect_subtrees(0, self.size)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf hash; returns every perfect subtree completed, leaf first."""
        index = self.size
        completed = [(0, index, leaf)]
        h = leaf
        n = index
        level = 0
        while n & 1:
            h = node_hash(self.hashes.pop(), h)
            level += 1
            n >>= 1
            completed.append((level, index >> level, h))
        self.hashes.append(h)
        self.size = index + 1
        return completed

    def root(self) -> bytes:
        return fold(self.hashes)


def tree_nodes(leaf_hashes: Sequence[bytes]) -> dict[tuple[int, int], bytes]:
    """Every perfect subtree of a list of leaves (for tests and small trees)."""
    nodes: dict[tuple[int, int], bytes] = {}
    cr = CompactRange()
    for h in leaf_hashes:
        for level, index, value in cr.append(h):
            nodes[level, index] = value
    return nodes


# ------------------------------------------------------------------ proofs


def inclusion_proof(index: int, size: int, get: NodeGetter) -> list[bytes]:
    """``PATH(index, D[size])`` (RFC 9162 §2.1.3.1), bottom-up."""
    if not 0 <= index < size:
        raise ValueError("leaf index must be below the tree size")
    top_down: list[bytes] = []
    start, n, m = 0, size, index
    while n > 1:
        k = split_point(n)
        if m < k:
            top_down.append(subtree_root(start + k, n - k, get))
            n = k
        else:
            top_down.append(subtree_root(start, k, get))
            start, m, n = start + k, m - k, n - k
    top_down.reverse()
    return top_down


def consistency_proof(old_size: int, new_size: int, get: NodeGetter) -> list[bytes]:
    """``PROOF(old_size, D[new_size])`` (RFC 9162 §2.1.4.1, SUBPROOF unrolled)."""
    if not 0 <= old_size <= new_size:
        raise ValueError("sizes must satisfy 0 <= old_size <= new_size")
    if old_size in (0, new_size):
        return []
    top_down: list[bytes] = []
    start, m, n, whole = 0, old_size, new_size, True
    while m != n:
        k = split_point(n)
        if m <= k:
            top_down.append(subtree_root(start + k, n - k, get))
            n = k
        else:
            top_down.append(subtree_root(start, k, get))
            start, m, n, whole = start + k, m - k, n - k, False
    if not whole:
        top_down.append(subtree_root(start, m, get))
    top_down.reverse()
    return top_down


def needed_nodes(generate: Callable[[NodeGetter], object]) -> list[tuple[int, int]]:
    """The perfect subtrees a proof generation asks for, in order, without hashes.

    Generation never looks at hash values, so a recording getter tells a
    store which nodes to fetch in one query before the real run.
    """
    seen: list[tuple[int, int]] = []

    def record(level: int, index: int) -> bytes:
        seen.append((level, index))
        return bytes(HASH_SIZE)

    generate(record)
    return list(dict.fromkeys(seen))


# ------------------------------------------------------------ verification


def root_from_inclusion_proof(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes | None:
    """The root an inclusion proof leads to (RFC 9162 §2.1.3.2), or ``None``
    if the proof has the wrong shape for ``index`` and ``size``."""
    if not 0 <= index < size or len(leaf) != HASH_SIZE:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0 or len(p) != HASH_SIZE:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], expected_root: bytes
) -> bool:
    return root_from_inclusion_proof(leaf, index, size, proof) == expected_root


def verify_consistency(
    old_size: int,
    new_size: int,
    old_root: bytes,
    new_root: bytes,
    proof: Sequence[bytes],
) -> bool:
    """RFC 9162 §2.1.4.2, plus the trivial cases the RFC leaves to the caller:
    equal sizes need an empty proof and equal roots; an empty old tree is
    consistent with anything (its root is the hash of the empty string)."""
    if not 0 <= old_size <= new_size:
        return False
    if any(len(p) != HASH_SIZE for p in proof):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of two
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
