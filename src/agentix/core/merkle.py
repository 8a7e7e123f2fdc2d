"""RFC 6962 (Certificate Transparency) Merkle tree math: pure functions over hashes.

The rule (RFC 6962 section 2.1, also RFC 9162 section 2.1):

* ``MTH({}) = SHA-256()``; ``leaf_hash(d) = SHA-256(0x00 || d)``;
  ``node_hash(l, r) = SHA-256(0x01 || l || r)``.
* For ``n > 1`` leaves, ``k`` is the largest power of two strictly below ``n``;
  ``MTH(D[0:n]) = node_hash(MTH(D[0:k]), MTH(D[k:n]))``.
* A *complete subtree* ``(level, index)`` covers leaves ``[index * 2**level,
  (index + 1) * 2**level)``; level 0 nodes are leaf hashes. Every left part of the split
  above is a complete subtree, so a store that keeps the hash of every complete subtree can
  produce any root or proof with O(log n) lookups (``subtree_ranges`` / ``root_from``).
* An inclusion proof for leaf ``m`` in a tree of ``n`` leaves is RFC 6962's
  ``PATH(m, D[n])``, innermost sibling first; ``root_from_inclusion`` is RFC 9162's
  verification algorithm (section 2.1.3.2).
* A consistency proof between sizes ``m <= n`` is RFC 6962's ``PROOF(m, D[n])``; checked by
  RFC 9162 section 2.1.4.2.

Everything here is a value-in, value-out function; storage lives in ``agentix.store``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "CompactRange",
    "consistency_proof",
    "inclusion_path",
    "leaf_hash",
    "node_hash",
    "root_from_consistency",
    "root_from_inclusion",
    "subtree_of",
    "tree_root",
]

_sha256 = hashlib.sha256
EMPTY_ROOT = _sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly less than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def subtree_of(start: int, size: int) -> tuple[int, int] | None:
    """(level, index) if leaves ``[start, start+size)`` form a complete subtree, else None."""
    if size <= 0 or size & (size - 1) or start % size:
        return None
    level = size.bit_length() - 1
    return level, start >> level


# A function that returns the stored hash of complete subtree (level, index).
NodeGetter = Callable[[int, int], bytes]


def range_hash(get: NodeGetter, start: int, end: int) -> bytes:
    """``MTH(D[start:end])`` for a range produced by the RFC split, from complete subtrees.

    ``start`` must be aligned to the split (always true for ranges that occur in RFC 6962
    trees and proofs); the right part may be incomplete and is folded from its subtrees.
    """
    size = end - start
    sub = subtree_of(start, size)
    if sub is not None:
        return get(*sub)
    k = _split(size)
    return node_hash(range_hash(get, start, start + k), range_hash(get, start + k, end))


def tree_root(get: NodeGetter, n: int) -> bytes:
    """``MTH(D[0:n])`` from complete-subtree hashes."""
    if n == 0:
        return EMPTY_ROOT
    return range_hash(get, 0, n)


def inclusion_path(get: NodeGetter, m: int, n: int) -> list[bytes]:
    """RFC 6962 ``PATH(m, D[0:n])``: sibling hashes from the leaf up to the root."""
    if not 0 <= m < n:
        raise ValueError(f"leaf {m} is not in a tree of size {n}")
    out: list[bytes] = []
    start, end = 0, n
    while end - start > 1:
        k = _split(end - start)
        if m < start + k:
            out.append(range_hash(get, start + k, end))
            end = start + k
        else:
            out.append(range_hash(get, start, start + k))
            start = start + k
    out.reverse()
    return out


def _to_set_bit(fn: int, sn: int) -> tuple[int, int]:
    """RFC 9162's verification step: right-shift both until LSB(fn) is set or fn is 0."""
    while fn and not fn & 1:
        fn, sn = fn >> 1, sn >> 1
    return fn, sn


def root_from_inclusion(m: int, n: int, leaf: bytes, path: Sequence[bytes]) -> bytes | None:
    """The root implied by an inclusion proof, or None if the proof is malformed (RFC 9162)."""
    if not 0 <= m < n:
        return None
    fn, sn = m, n - 1
    r = leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            fn, sn = _to_set_bit(fn, sn)
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        return None
    return r


def consistency_proof(get: NodeGetter, m: int, n: int) -> list[bytes]:
    """RFC 6962 ``PROOF(m, D[0:n])`` for ``0 < m <= n``."""
    if not 0 < m <= n:
        raise ValueError(f"no consistency proof from size {m} to {n}")

    def sub(m_: int, start: int, end: int, b: bool) -> list[bytes]:
        size = end - start
        if m_ == size:
            return [] if b else [range_hash(get, start, end)]
        k = _split(size)
        if m_ <= k:
            return sub(m_, start, start + k, b) + [range_hash(get, start + k, end)]
        return sub(m_ - k, start + k, end, False) + [range_hash(get, start, start + k)]

    return sub(m, 0, n, True)


def root_from_consistency(
    m: int, n: int, old_root: bytes, proof: Sequence[bytes]
) -> bytes | None:
    """Check a consistency proof against ``old_root``; return the new root or None (RFC 9162)."""
    if not 0 < m <= n:
        return None
    if m == n:
        return old_root if not proof else None
    proof = list(proof)
    if m & (m - 1) == 0:  # m is a power of two: the old root is the first node
        proof = [old_root, *proof]
    if not proof:
        return None
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            fn, sn = _to_set_bit(fn, sn)
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0 or fr != old_root:
        return None
    return sr


class CompactRange:
    """The right edge of a growing tree: the hashes of its maximal complete subtrees.

    ``append(leaf)`` returns the complete subtrees that the new leaf completes (level >= 1),
    so a store can persist every complete subtree as it appears. ``root()`` folds the edge.
    """

    __slots__ = ("size", "_stack")

    def __init__(self, size: int = 0, stack: Sequence[bytes] = ()) -> None:
        if len(stack) != bin(size).count("1"):
            raise ValueError("compact range does not match its size")
        self.size = size
        self._stack = list(stack)  # largest subtree first

    @classmethod
    def from_getter(cls, get: NodeGetter, size: int) -> CompactRange:
        """Rebuild the edge for ``size`` leaves from stored complete subtrees."""
        stack = []
        start = 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                stack.append(get(level, start >> level))
                start += 1 << level
        return cls(size, stack)

    def copy(self) -> CompactRange:
        return CompactRange(self.size, self._stack)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf hash; return new complete subtrees ``(level, index, hash)`` (level >= 1)."""
        made = []
        h = leaf
        idx = self.size
        level = 0
        while idx & 1:
            h = node_hash(self._stack.pop(), h)
            idx >>= 1
            level += 1
            made.append((level, idx, h))
        self._stack.append(h)
        self.size += 1
        return made

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        r = self._stack[-1]
        for h in reversed(self._stack[:-1]):
            r = node_hash(h, r)
        return r
