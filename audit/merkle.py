"""RFC 9162 (Certificate Transparency 2.0) Merkle tree hashes and proofs.

Hashes are SHA-256 with the domain-separation prefixes of RFC 9162 §2.1.1:
``0x00`` for leaves and ``0x01`` for interior nodes, so a leaf can never be
passed off as a node (second-preimage resistance).

All functions below take *leaf hashes* (already ``leaf_hash``-ed, 32 bytes
each), not leaf data; :func:`leaf_hash` turns data into a leaf hash.  The
verification functions raise :class:`MerkleProofError`; they never return a
bool.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from .errors import MerkleProofError

__all__ = [
    "HASH_SIZE",
    "EMPTY_ROOT",
    "leaf_hash",
    "node_hash",
    "root",
    "inclusion_proof",
    "verify_inclusion",
    "consistency_proof",
    "verify_consistency",
    "MerkleFrontier",
]

HASH_SIZE = 32
#: MTH({}) = SHA-256 of the empty string (RFC 9162 §2.1.1).
EMPTY_ROOT = hashlib.sha256(b"").digest()

_LEAF = b"\x00"
_NODE = b"\x01"
_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """Return ``SHA-256(0x00 || data)`` (RFC 9162 §2.1.1)."""
    return _sha256(_LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return ``SHA-256(0x01 || left || right)`` (RFC 9162 §2.1.1)."""
    return _sha256(_NODE + left + right).digest()


def _split(n: int) -> int:
    # k is the largest power of two strictly smaller than n (RFC 9162 §2.1.1).
    return 1 << ((n - 1).bit_length() - 1)


def _mth(leaves: Sequence[bytes], lo: int, hi: int) -> bytes:
    n = hi - lo
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[lo]
    k = _split(n)
    return node_hash(_mth(leaves, lo, lo + k), _mth(leaves, lo + k, hi))


def root(leaves: Sequence[bytes]) -> bytes:
    """Return the Merkle tree hash MTH of a list of leaf hashes (RFC 9162 §2.1.1)."""
    return _mth(leaves, 0, len(leaves))


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Return the audit path PATH(index, D[n]) (RFC 9162 §2.1.3.1).

    Raises
    ------
    MerkleProofError
        If ``index`` is not within the tree.
    """
    if not 0 <= index < len(leaves):
        raise MerkleProofError(f"leaf index {index} outside tree of size {len(leaves)}")
    proof: list[bytes] = []

    def path(m: int, lo: int, hi: int) -> None:
        n = hi - lo
        if n <= 1:
            return
        k = _split(n)
        if m < k:
            path(m, lo, lo + k)
            proof.append(_mth(leaves, lo + k, hi))
        else:
            path(m - k, lo + k, hi)
            proof.append(_mth(leaves, lo, lo + k))

    path(index, 0, len(leaves))
    return proof


def verify_inclusion(
    leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], expected_root: bytes
) -> None:
    """Verify an inclusion proof (RFC 9162 §2.1.3.2).

    Raises
    ------
    MerkleProofError
        If the proof does not show ``leaf`` at ``index`` in the tree with
        root ``expected_root``.
    """
    # Step 1: the index must lie inside the tree.
    if not 0 <= index < tree_size:
        raise MerkleProofError(f"leaf index {index} outside tree of size {tree_size}")
    # Step 2-3: fn, sn and r.
    fn, sn, r = index, tree_size - 1, leaf
    # Step 4: fold the path.
    for p in proof:
        if sn == 0:
            raise MerkleProofError("inclusion proof is longer than the tree is deep")
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
    # Step 5: sn must be 0 and r must be the root.
    if sn != 0:
        raise MerkleProofError("inclusion proof is shorter than the tree is deep")
    if not hmac.compare_digest(r, expected_root):
        raise MerkleProofError("inclusion proof does not lead to the expected root")


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """Return the consistency proof PROOF(old_size, D[n]) (RFC 9162 §2.1.4.1).

    The proof is empty when ``old_size`` is 0 or equals the tree size.

    Raises
    ------
    MerkleProofError
        If ``old_size`` is negative or larger than the tree.
    """
    n = len(leaves)
    if not 0 <= old_size <= n:
        raise MerkleProofError(f"old size {old_size} outside 0..{n}")
    if old_size in (0, n):
        return []
    proof: list[bytes] = []

    def subproof(m: int, lo: int, hi: int, whole: bool) -> None:
        n_ = hi - lo
        if m == n_:
            if not whole:
                proof.append(_mth(leaves, lo, hi))
            return
        k = _split(n_)
        if m <= k:
            subproof(m, lo, lo + k, whole)
            proof.append(_mth(leaves, lo + k, hi))
        else:
            subproof(m - k, lo + k, hi, False)
            proof.append(_mth(leaves, lo, lo + k))

    subproof(old_size, 0, n, True)
    return proof


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Verify that the tree (new_size, new_root) extends (old_size, old_root).

    Implements RFC 9162 §2.1.4.2.  An old size of 0 is consistent with any
    tree (with an empty proof); equal sizes need equal roots and an empty proof.

    Raises
    ------
    MerkleProofError
        If the proof is malformed or shows the trees are not consistent.
    """
    if not 0 <= old_size <= new_size:
        raise MerkleProofError(
            f"tree shrank or sizes invalid: old size {old_size}, new size {new_size}"
        )
    if any(len(p) != HASH_SIZE for p in proof):
        raise MerkleProofError("consistency proof holds a node that is not 32 bytes")
    if old_size == 0:
        if proof:
            raise MerkleProofError("a proof from the empty tree must be empty")
        return
    if old_size == new_size:
        if proof:
            raise MerkleProofError("a proof between equal sizes must be empty")
        if not hmac.compare_digest(old_root, new_root):
            raise MerkleProofError("same tree size but different roots (fork)")
        return
    # Step 1: a non-trivial proof is never empty.
    if not proof:
        raise MerkleProofError("consistency proof is empty")
    path = list(proof)
    # Step 2: if old_size is a power of two, the old root is the first node.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    # Step 3.
    fn, sn = old_size - 1, new_size - 1
    # Step 4: skip the levels where the old tree is a complete right subtree.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # Step 5.
    fr = sr = path[0]
    # Step 6.
    for c in path[1:]:
        if sn == 0:
            raise MerkleProofError("consistency proof is longer than needed")
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
    # Step 7: both roots must be reproduced and the path fully consumed.
    if sn != 0:
        raise MerkleProofError("consistency proof is shorter than needed")
    if not hmac.compare_digest(fr, old_root):
        raise MerkleProofError("consistency proof does not reproduce the old root")
    if not hmac.compare_digest(sr, new_root):
        raise MerkleProofError("consistency proof does not reproduce the new root")


class MerkleFrontier:
    """Incremental Merkle tree hash: the roots of the perfect subtrees so far.

    Appending is amortised O(1); :meth:`root` is O(log n).  The result equals
    :func:`root` over the same leaves, because RFC 9162 splits a tree at the
    largest power of two, i.e. into exactly these perfect subtrees.
    """

    __slots__ = ("_sizes", "_hashes", "size")

    def __init__(self) -> None:
        self._sizes: list[int] = []
        self._hashes: list[bytes] = []
        self.size = 0

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash."""
        sizes, hashes = self._sizes, self._hashes
        sizes.append(1)
        hashes.append(leaf)
        while len(sizes) > 1 and sizes[-1] == sizes[-2]:
            right = hashes.pop()
            sizes.pop()
            hashes[-1] = node_hash(hashes[-1], right)
            sizes[-1] *= 2
        self.size += 1

    def root(self) -> bytes:
        """Return MTH of the leaves appended so far."""
        if not self._hashes:
            return EMPTY_ROOT
        acc = self._hashes[-1]
        for h in reversed(self._hashes[:-1]):
            acc = node_hash(h, acc)
        return acc
