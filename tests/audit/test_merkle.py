"""RFC 9162 hashing and proofs: published known-answer vectors and properties."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paywarden.audit import merkle
from paywarden.audit import verifier as standalone

VECTORS_PATH = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "rfc6962-vectors.json"
)


def _vectors() -> dict[str, Any]:
    for candidate in (VECTORS_PATH, Path("/work/shared/data/rfc6962-vectors.json")):
        if candidate.exists():
            data: dict[str, Any] = json.loads(candidate.read_text())
            return data
    pytest.fail("rfc6962-vectors.json not found beside the repository (shared/data)")


V = _vectors()
LEAVES = [merkle.leaf_hash(bytes.fromhex(x)) for x in V["leaves_hex"]]
NODES = merkle.tree_nodes(LEAVES)


def get(level: int, index: int) -> bytes:
    return NODES[level, index]


def test_vectors_source_is_named() -> None:
    assert "RFC 6962" in V["source"]


def test_empty_tree_root() -> None:
    assert merkle.root([]).hex() == V["empty_tree_root"]
    assert merkle.EMPTY_ROOT.hex() == V["empty_tree_root"]


@pytest.mark.parametrize(("size", "expected"), sorted(V["roots_by_tree_size"].items()))
def test_root_by_tree_size(size: str, expected: str) -> None:
    n = int(size)
    assert merkle.root(LEAVES[:n]).hex() == expected
    assert merkle.subtree_root(0, n, get).hex() == expected


@pytest.mark.parametrize(
    "case", V["inclusion_proofs"], ids=lambda c: f"leaf{c['leaf_index']}-size{c['tree_size']}"
)
def test_inclusion_vector(case: dict[str, Any]) -> None:
    index, size = case["leaf_index"], case["tree_size"]
    proof = merkle.inclusion_proof(index, size, get)
    assert [p.hex() for p in proof] == case["proof"]
    root = bytes.fromhex(V["roots_by_tree_size"][str(size)])
    assert merkle.verify_inclusion(LEAVES[index], index, size, proof, root)
    assert standalone.root_from_inclusion(LEAVES[index], index, size, proof) == root


@pytest.mark.parametrize(
    "case", V["consistency_proofs"], ids=lambda c: f"{c['size1']}-to-{c['size2']}"
)
def test_consistency_vector(case: dict[str, Any]) -> None:
    m, n = case["size1"], case["size2"]
    proof = merkle.consistency_proof(m, n, get)
    assert [p.hex() for p in proof] == case["proof"]
    r1 = bytes.fromhex(V["roots_by_tree_size"][str(m)])
    r2 = bytes.fromhex(V["roots_by_tree_size"][str(n)])
    assert merkle.verify_consistency(m, n, r1, r2, proof)
    assert standalone.consistent(m, n, r1, r2, proof)


def _leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def _flip(data: bytes, bit: int) -> bytes:
    b = bytearray(data)
    b[(bit // 8) % len(b)] ^= 1 << (bit % 8)
    return bytes(b)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_every_inclusion_proof_verifies_and_any_change_fails(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 300), label="n")
    leaves = _leaves(n)
    nodes = merkle.tree_nodes(leaves)
    size = data.draw(st.integers(1, n), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = merkle.inclusion_proof(index, size, lambda lv, ix: nodes[lv, ix])
    root = merkle.root(leaves[:size])
    assert merkle.verify_inclusion(leaves[index], index, size, proof, root)
    assert standalone.root_from_inclusion(leaves[index], index, size, proof) == root
    bit = data.draw(st.integers(0, 255), label="bit")
    # A flipped bit anywhere: the leaf, the root, any proof element.
    assert not merkle.verify_inclusion(_flip(leaves[index], bit), index, size, proof, root)
    assert not merkle.verify_inclusion(leaves[index], index, size, proof, _flip(root, bit))
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1), label="element")
        bad = [*proof[:k], _flip(proof[k], bit), *proof[k + 1 :]]
        assert not merkle.verify_inclusion(leaves[index], index, size, bad, root)
        assert not merkle.verify_inclusion(leaves[index], index, size, proof[:-1], root)
    # A wrong index or a wrong size.
    other = data.draw(st.integers(0, size), label="other index")
    if other != index:
        assert not merkle.verify_inclusion(leaves[index], other, size, proof, root)
    # A wrong size, with that size's own root (size and root are signed together;
    # with the original root a same-shaped path can pass, which RFC 9162 allows).
    wrong_size = data.draw(st.integers(1, n), label="wrong size")
    if wrong_size != size:
        wrong_root = merkle.root(leaves[:wrong_size])
        assert not merkle.verify_inclusion(leaves[index], index, wrong_size, proof, wrong_root)
    assert not merkle.verify_inclusion(leaves[index], index, size, [*proof, root], root)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_every_consistency_proof_verifies_and_any_change_fails(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 300), label="n")
    leaves = _leaves(n)
    nodes = merkle.tree_nodes(leaves)
    new = data.draw(st.integers(1, n), label="new")
    old = data.draw(st.integers(1, new), label="old")
    proof = merkle.consistency_proof(old, new, lambda lv, ix: nodes[lv, ix])
    r1, r2 = merkle.root(leaves[:old]), merkle.root(leaves[:new])
    assert merkle.verify_consistency(old, new, r1, r2, proof)
    assert standalone.consistent(old, new, r1, r2, proof)
    bit = data.draw(st.integers(0, 255), label="bit")
    assert not merkle.verify_consistency(old, new, _flip(r1, bit), r2, proof)
    assert not merkle.verify_consistency(old, new, r1, _flip(r2, bit), proof)
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1), label="element")
        bad = [*proof[:k], _flip(proof[k], bit), *proof[k + 1 :]]
        assert not merkle.verify_consistency(old, new, r1, r2, bad)
        assert not standalone.consistent(old, new, r1, r2, bad)
    if old < new:
        # Wrong sizes, each with its own true root.
        wrong_old = data.draw(st.integers(1, new), label="wrong old")
        if wrong_old != old:
            w1 = merkle.root(leaves[:wrong_old])
            assert not merkle.verify_consistency(wrong_old, new, w1, r2, proof)
        if new < n:
            w2 = merkle.root(leaves[: new + 1])
            assert not merkle.verify_consistency(old, new + 1, r1, w2, proof)


def test_compact_range_reports_completed_subtrees() -> None:
    cr = merkle.CompactRange()
    seen: dict[tuple[int, int], bytes] = {}
    for leaf in LEAVES:
        for level, idx, h in cr.append(leaf):
            seen[level, idx] = h
    assert seen == NODES
    assert cr.root().hex() == V["roots_by_tree_size"]["8"]
    assert merkle.CompactRange(cr.size, cr.hashes).root() == cr.root()


def test_proof_generation_asks_for_log_n_nodes() -> None:
    size = 1_000_003
    asked = merkle.needed_nodes(lambda g: merkle.inclusion_proof(123_456, size, g))
    assert len(asked) <= 2 * size.bit_length()
    asked = merkle.needed_nodes(lambda g: merkle.consistency_proof(500_001, size, g))
    assert len(asked) <= 3 * size.bit_length()


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        merkle.inclusion_proof(3, 3, get)
    with pytest.raises(ValueError):
        merkle.consistency_proof(5, 4, get)
    with pytest.raises(ValueError):
        merkle.CompactRange(3, [LEAVES[0]])
    assert merkle.root_from_inclusion_proof(LEAVES[0], 0, 0, []) is None
