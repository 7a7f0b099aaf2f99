"""RFC 9162 Merkle proofs: every size 1..40, every old size, and wrong proofs rejected."""

from __future__ import annotations

import hashlib

import pytest

from audit.errors import MerkleProofError
from audit.merkle import (
    EMPTY_ROOT,
    MerkleFrontier,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [leaf_hash(f"entry {i}".encode()) for i in range(40)]


def test_known_small_trees() -> None:
    # RFC 9162 §2.1.1: MTH of the empty list is SHA-256(""); leaves and nodes are prefixed.
    assert root([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    a, b, c = LEAVES[:3]
    assert root([a]) == a
    assert root([a, b, c]) == node_hash(node_hash(a, b), c)


@pytest.mark.parametrize("n", range(1, 41))
def test_all_proofs_for_size(n: int) -> None:
    leaves = LEAVES[:n]
    tree_root = root(leaves)
    frontier = MerkleFrontier()
    for leaf in leaves:
        frontier.append(leaf)
    assert frontier.root() == tree_root
    for index in range(n):
        verify_inclusion(leaves[index], index, n, inclusion_proof(leaves, index), tree_root)
    for old in range(0, n + 1):
        proof = consistency_proof(leaves, old)
        verify_consistency(old, n, root(leaves[:old]), tree_root, proof)


@pytest.mark.parametrize("n", [2, 3, 7, 8, 13, 32, 40])
def test_wrong_proofs_rejected(n: int) -> None:
    leaves = LEAVES[:n]
    tree_root = root(leaves)
    other = leaf_hash(b"not in the tree")
    for index in range(n):
        proof = inclusion_proof(leaves, index)
        with pytest.raises(MerkleProofError):
            verify_inclusion(other, index, n, proof, tree_root)
        with pytest.raises(MerkleProofError):
            verify_inclusion(leaves[index], index, n, proof + [other], tree_root)
        if proof:
            with pytest.raises(MerkleProofError):
                verify_inclusion(leaves[index], index, n, proof[:-1], tree_root)
            with pytest.raises(MerkleProofError):
                verify_inclusion(leaves[index], index, n, [other] + proof[1:], tree_root)
    with pytest.raises(MerkleProofError):
        verify_inclusion(leaves[0], n, n, [], tree_root)
    for old in range(1, n):
        proof = consistency_proof(leaves, old)
        old_root = root(leaves[:old])
        with pytest.raises(MerkleProofError):  # wrong old root (a fork)
            verify_consistency(old, n, root(leaves[1:old + 1]) if old + 1 <= n else other, tree_root, proof)
        with pytest.raises(MerkleProofError):  # wrong new root
            verify_consistency(old, n, old_root, other, proof)
        for i in range(len(proof)):  # any node corrupted
            bad = list(proof)
            bad[i] = other
            with pytest.raises(MerkleProofError):
                verify_consistency(old, n, old_root, tree_root, bad)
        with pytest.raises(MerkleProofError):  # truncated / extended
            verify_consistency(old, n, old_root, tree_root, proof[:-1])
        with pytest.raises(MerkleProofError):
            verify_consistency(old, n, old_root, tree_root, proof + [other])
        with pytest.raises(MerkleProofError):  # proof for another size pair
            verify_consistency(old, n, old_root, tree_root, consistency_proof(leaves[: n - 1], old) if n - 1 > old else [other])


def test_rollback_and_equal_size_fork_rejected() -> None:
    with pytest.raises(MerkleProofError):
        verify_consistency(5, 4, root(LEAVES[:5]), root(LEAVES[:4]), [])
    with pytest.raises(MerkleProofError):
        verify_consistency(4, 4, root(LEAVES[:4]), root(LEAVES[1:5]), [])
    with pytest.raises(MerkleProofError):
        verify_consistency(0, 4, EMPTY_ROOT, root(LEAVES[:4]), [LEAVES[0]])
