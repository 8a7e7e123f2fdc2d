"""Mailbox invariants — FIFO, bounded, nothing lost or duplicated — as Hypothesis state machines:
against ``core.mailbox.BoundedFifo`` with a reference model, and through the real kernel
(operator sends, a receiving agent process)."""

from __future__ import annotations

import itertools
import json
from collections import deque
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from agentix.core.errors import LimitExceeded, NotFound
from agentix.core.mailbox import BoundedFifo
from conftest import wait_until


class FifoMachine(RuleBasedStateMachine):
    """BoundedFifo against a deque with a capacity: every accepted item comes out once, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.box: BoundedFifo[int] | None = None
        self.model: deque[int] = deque()
        self.counter = itertools.count()
        self.accepted: list[int] = []
        self.delivered: list[int] = []
        self.refused = 0

    @precondition(lambda self: self.box is None)
    @rule(capacity=st.integers(min_value=1, max_value=6))
    def create(self, capacity: int) -> None:
        self.box = BoundedFifo(capacity, owner="rx")
        self.capacity = capacity

    @precondition(lambda self: self.box is not None)
    @rule(n=st.integers(min_value=1, max_value=4))
    def put(self, n: int) -> None:
        for _ in range(n):
            item = next(self.counter)
            if len(self.model) >= self.capacity:
                before = list(self.model)
                with pytest.raises(LimitExceeded) as ei:
                    self.box.put(item)
                assert ei.value.data["capacity"] == self.capacity
                self.refused += 1
                assert self._contents() == before  # a refused put changes nothing
            else:
                self.box.put(item)
                self.model.append(item)
                self.accepted.append(item)

    @precondition(lambda self: self.box is not None)
    @rule(n=st.integers(min_value=1, max_value=4))
    def get(self, n: int) -> None:
        for _ in range(n):
            got = self.box.get()
            want = self.model.popleft() if self.model else None
            assert got == want
            if got is not None:
                self.delivered.append(got)

    @precondition(lambda self: self.box is not None)
    @rule()
    def drain(self) -> None:
        got = self.box.drain()
        assert got == list(self.model)
        self.delivered.extend(got)
        self.model.clear()

    def _contents(self) -> list[int]:
        return [item for item, _ in self.box._items]  # the snapshot is only for comparison

    @invariant()
    def bounded_and_consistent(self) -> None:
        if self.box is None:
            return
        assert len(self.box) == len(self.model) <= self.capacity
        stats = self.box.statistics()
        assert stats["queued"] == len(self.model)
        assert stats["accepted"] == len(self.accepted) and stats["refused"] == self.refused
        # nothing lost, nothing duplicated: delivered + queued is exactly what was accepted, in order
        assert self.delivered + list(self.model) == self.accepted


TestBoundedFifo = FifoMachine.TestCase
TestBoundedFifo.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)


def test_bounded_fifo_rejects_a_zero_capacity() -> None:
    with pytest.raises(ValueError):
        BoundedFifo(0)


CAPACITY = 4


def test_mailbox_invariants_through_the_real_kernel(start_kernel) -> None:
    kernel = start_kernel(config={"mailbox_capacity": CAPACITY})
    k = kernel.client
    rx = kernel.spawn("mailbox_probe.py", name="rx")
    counter = itertools.count()
    seq = itertools.count()

    def command_recv(n: int) -> list[Any]:
        s = next(seq)
        k.invoke("file_write", {"path": "cmd", "content": json.dumps({"seq": s, "recv": n})}, agent=rx)

        def result() -> list[Any] | None:
            try:
                return json.loads(k.invoke("file_read", {"path": f"out-{s}.json"}, agent=rx)["content"])
            except NotFound:
                return None

        got = wait_until(result, timeout=10, interval=0.002)
        assert got is not None, "the probe did not answer"
        return got

    class KernelMailbox(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.model: deque[int] = deque()

        @rule(n=st.integers(min_value=1, max_value=3))
        def send(self, n: int) -> None:
            for _ in range(n):
                item = next(counter)
                if len(self.model) >= CAPACITY:
                    with pytest.raises(LimitExceeded):
                        k.send(rx, item)
                else:
                    assert k.send(rx, item)["queued"] == len(self.model) + 1
                    self.model.append(item)

        @rule(n=st.integers(min_value=1, max_value=5))
        def recv(self, n: int) -> None:
            want = [self.model.popleft() if self.model else None for _ in range(n)]
            assert command_recv(n) == want

        @invariant()
        def queued_matches(self) -> None:
            assert k.status(rx).raw["mailbox"]["queued"] == len(self.model) <= CAPACITY

        def teardown(self) -> None:
            # nothing lost: whatever is still queued comes out, in order, and then nothing more
            rest = list(self.model)
            assert command_recv(len(rest) + 1) == rest + [None]

    run_state_machine_as_test(KernelMailbox, settings=settings(
        max_examples=25, stateful_step_count=12, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]))
    k.invoke("file_write", {"path": "cmd", "content": json.dumps({"exit": True})}, agent=rx)
    assert k.wait(rx, timeout=10).reason == "completed"
