"""A Hypothesis state machine: appends, heads, proofs and verification against a model."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from agentix.core.audit import public_key_bytes
from agentix.core.errors import InvalidRequest
from agentix.store.audit_store import AuditLog, verify_proof
from agentix.store.db import Database

from .conftest import FakeClock

KEY = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()
PK = public_key_bytes(KEY)

data_st = st.dictionaries(st.text(max_size=5), st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
                          | st.text(max_size=8) | st.none(),
                          max_size=3)


class AuditMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp())
        self.loop = asyncio.new_event_loop()
        self.db = Database(self.dir / "a.db", durability="off")
        self.log = AuditLog(self.db, signing_key=KEY, clock=FakeClock())
        self.model: list[tuple[str, str | None, dict, tuple[str, ...]]] = []
        self.heads: list[int] = []

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    @rule(kind=st.sampled_from(["tool.invoked", "message.sent", "kernel.started"]),
          agent=st.none() | st.sampled_from(["a", "b"]), data=data_st,
          taint=st.lists(st.sampled_from(["web", "mail"]), max_size=3), n=st.integers(1, 40))
    def append(self, kind, agent, data, taint, n):
        async def go():
            return await asyncio.gather(*(self.log.append(kind, agent, data, taint)
                                          for _ in range(n)))
        entries = self.run(go())
        seqs = sorted(e.seq for e in entries)
        assert seqs == list(range(len(self.model) + 1, len(self.model) + n + 1))
        self.model.extend([(kind, agent, data, tuple(sorted(set(taint))))] * n)

    @rule()
    def sign_head(self):
        h = self.run(self.log.head(sign=True))
        assert h["size"] == len(self.model)
        self.heads.append(h["size"])

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def prove(self, data):
        seq = data.draw(st.integers(1, len(self.model)))
        proof = self.log.prove(seq)
        e = verify_proof(proof, PK)
        kind, agent, d, taint = self.model[seq - 1]
        assert (e.seq, e.kind, e.agent, e.data, e.taint) == (seq, kind, agent, d, taint)
        with pytest.raises(InvalidRequest):
            verify_proof(proof, public_key_bytes(OTHER))
        bad = dict(proof, entry=dict(proof["entry"], kind="forged"))
        with pytest.raises(InvalidRequest):
            verify_proof(bad, PK)
        if proof["path"]:
            p2 = list(proof["path"])
            p2[0] = "00" * 32
            with pytest.raises(InvalidRequest):
                verify_proof(dict(proof, path=p2), PK)

    @invariant()
    def chain_verifies(self):
        rep = self.log.verify()
        assert rep.ok, rep
        assert rep.entries == len(self.model)
        assert rep.head_size == (max(self.heads) if self.heads else None)

    @invariant()
    def sizes_agree(self):
        # every append above waited for its commit: nothing is appended and not committed
        # (the metrics' agentix_audit_lag_entries reads these two)
        assert self.log.appended_size == self.log.committed_size == self.log.size() == len(self.model)

    @rule(limit=st.integers(1, 10))
    def tail_matches_model(self, limit):
        got = self.log.tail(limit=limit)
        want = list(range(max(1, len(self.model) - limit + 1), len(self.model) + 1))
        assert [e.seq for e in got] == want

    def teardown(self):
        self.db.close()
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)


AuditMachine.TestCase.settings = settings(max_examples=30, stateful_step_count=20,
                                          deadline=None)
TestAuditMachine = AuditMachine.TestCase

