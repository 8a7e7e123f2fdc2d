"""RFC 6962 math against a direct transcription of the RFC's recursive definitions."""

from __future__ import annotations

import hashlib

import pytest

from agentix.core.merkle import (
    CompactRange,
    consistency_proof,
    inclusion_path,
    leaf_hash,
    node_hash,
    root_from_consistency,
    root_from_inclusion,
    tree_root,
)


def mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaf_hash(d[0])
    k = 1 << ((n - 1).bit_length() - 1)
    return node_hash(mth(d[:k]), mth(d[k:]))


def path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return path(m, d[:k]) + [mth(d[k:])]
    return path(m - k, d[k:]) + [mth(d[:k])]


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return subproof(m, d[:k], b) + [mth(d[k:])]
    return subproof(m - k, d[k:], False) + [mth(d[:k])]


def getter(d: list[bytes]):
    def get(level: int, idx: int) -> bytes:
        return mth(d[idx << level:(idx + 1) << level])
    return get


LEAVES = [f"leaf {i}".encode() for i in range(70)]


def test_known_root_of_rfc_empty_tree():
    assert tree_root(getter([]), 0).hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


@pytest.mark.parametrize("n", range(1, 70))
def test_root_path_and_compact_range_match_the_rfc_definitions(n):
    d = LEAVES[:n]
    get = getter(d)
    assert tree_root(get, n) == mth(d)
    cr = CompactRange()
    made = []
    for x in d:
        made += cr.append(leaf_hash(x))
    assert cr.root() == mth(d)
    for level, idx, h in made:  # every emitted node is the complete subtree it names
        assert h == get(level, idx)
    assert CompactRange.from_getter(get, n).root() == mth(d)
    for m in range(n):
        p = inclusion_path(get, m, n)
        assert p == path(m, d)
        assert root_from_inclusion(m, n, leaf_hash(d[m]), p) == mth(d)
        # a wrong leaf or a wrong index does not reach the root
        assert root_from_inclusion(m, n, leaf_hash(b"other"), p) != mth(d)
        if n > 1:
            assert root_from_inclusion((m + 1) % n, n, leaf_hash(d[m]), p) != mth(d)
    for m in range(1, n + 1):
        proof = consistency_proof(get, m, n)
        assert proof == subproof(m, d, True)
        assert root_from_consistency(m, n, mth(d[:m]), proof) == mth(d)
        if m < n:
            assert root_from_consistency(m, n, mth(d[: m - 1]) if m > 1 else b"x" * 32,
                                         proof) != mth(d)


def test_truncated_or_extended_paths_are_refused():
    d = LEAVES[:13]
    get = getter(d)
    p = inclusion_path(get, 5, 13)
    assert root_from_inclusion(5, 13, leaf_hash(d[5]), p[:-1]) is None
    assert root_from_inclusion(5, 13, leaf_hash(d[5]), p + [b"\0" * 32]) is None
    assert root_from_inclusion(13, 13, leaf_hash(d[5]), p) is None
