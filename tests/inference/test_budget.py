"""Budget ledger: refusals give the numbers and change nothing; usage never passes a limit
by more than one request; warnings once; children carved out of the parent."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from agentix.core.budget import BudgetLedger, BudgetLimits, Usage
from agentix.core.errors import BudgetExceeded
from agentix.core.manifest import parse_manifest


def test_refusal_states_the_numbers_and_changes_nothing():
    led = BudgetLedger(BudgetLimits(max_output_tokens=5), 0.0)
    before = led.snapshot(0.0)
    with pytest.raises(BudgetExceeded) as ei:
        led.reserve(Usage(3, 11, 0.0), 0.0)
    assert ei.value.message.startswith("would exceed max_output_tokens of 5: output_tokens=11")
    assert ei.value.data["limit"] == "max_output_tokens" and ei.value.data["limit_value"] == 5
    assert ei.value.code == "budget_exceeded"
    assert led.snapshot(0.0) == before


def test_warn_once_then_stop_on_overshoot():
    led = BudgetLedger(BudgetLimits(max_input_tokens=100, warn_at=0.5), 0.0)
    r = led.reserve(Usage(40, 0), 0.0)
    assert led.settle(r, Usage(40, 0), 1.0) == []
    r = led.reserve(Usage(20, 0), 1.0)
    sig = led.settle(r, Usage(20, 0), 2.0)
    assert [s.kind for s in sig] == ["warning"] and sig[0].used == 60
    r = led.reserve(Usage(30, 0), 2.0)
    assert led.settle(r, Usage(30, 0), 3.0) == []  # warned already
    r = led.reserve(Usage(10, 0), 3.0)
    sig = led.settle(r, Usage(25, 0), 4.0)  # the provider used more than estimated
    assert [s.kind for s in sig] == ["stop"] and led.stopped is not None
    with pytest.raises(BudgetExceeded) as ei:
        led.reserve(Usage(1, 0), 5.0)
    assert ei.value.data["stop"] is True and "already exceeded" in ei.value.message


def test_cost_and_wall_clock():
    led = BudgetLedger(BudgetLimits(max_cost_usd=0.01, max_wall_clock=60), 0.0)
    with pytest.raises(BudgetExceeded, match=r"would exceed max_cost_usd of 0.01: cost_usd=0.02"):
        led.reserve(Usage(0, 0, 0.02), 0.0)
    led.reserve(Usage(0, 0, 0.005), 10.0)
    with pytest.raises(BudgetExceeded, match=r"max_wall_clock of 60s: elapsed=61.0s") as ei:
        led.reserve(Usage(0, 0, 0.001), 61.0)
    assert ei.value.data["stop"] is True


def test_reset_period_restarts_counters():
    led = BudgetLedger(BudgetLimits(max_output_tokens=10, reset_period=3600), 0.0)
    r = led.reserve(Usage(0, 10), 0.0)
    led.settle(r, Usage(0, 10), 1.0)
    with pytest.raises(BudgetExceeded):
        led.reserve(Usage(0, 1), 100.0)
    led.reserve(Usage(0, 10), 3600.0)


def test_child_is_carved_from_parent_remaining():
    parent = BudgetLedger(BudgetLimits(max_output_tokens=1000, max_children=2), 0.0)
    r = parent.reserve(Usage(0, 300), 0.0)
    parent.settle(r, Usage(0, 300), 0.0)
    child = parent.carve(BudgetLimits(), 1.0)  # asks for nothing in particular: a tenth of what is left
    assert child.limits.max_output_tokens == 70
    assert parent.remaining("output_tokens") == 630  # set aside for the child
    greedy = BudgetLedger(BudgetLimits(max_output_tokens=1000), 0.0).carve(BudgetLimits(max_output_tokens=5000), 0.0)
    assert greedy.limits.max_output_tokens == 1000  # asks for more than is left: gets what is left
    small = BudgetLedger(BudgetLimits(max_output_tokens=1000), 0.0).carve(BudgetLimits(max_output_tokens=50), 0.0)
    assert small.limits.max_output_tokens == 50
    cr = child.reserve(Usage(0, 60), 2.0)
    child.settle(cr, Usage(0, 60), 2.0)
    parent.close_child(child, 3.0)
    assert parent.used.output_tokens == 360 and parent.remaining("output_tokens") == 640
    parent.carve(BudgetLimits(max_output_tokens=10), 4.0)
    with pytest.raises(BudgetExceeded, match="max_children of 2: children=3"):
        parent.carve(BudgetLimits(), 5.0)


@settings(max_examples=200, deadline=None)
@given(total=st.integers(0, 10**7), calls=st.integers(0, 10**4), n=st.integers(1, 12),
       asks=st.lists(st.one_of(st.none(), st.integers(0, 10**7)), min_size=12, max_size=12))
def test_children_without_a_budget_never_leave_their_siblings_nothing(total, calls, n, asks):
    """The class: carving is bounded (the children together never hold more than the parent
    had) and a child that asks nothing takes a share, never all: after any children, one more
    asking nothing still gets something whenever the parent had anything left."""
    parent = BudgetLedger(BudgetLimits(max_output_tokens=total, max_tool_calls=calls), 0.0)
    kids = []
    for i in range(n):
        before = parent.remaining("output_tokens")
        kid = parent.carve(BudgetLimits(max_output_tokens=asks[i]), float(i))
        kids.append(kid)
        got = kid.limits.max_output_tokens
        assert 0 <= got <= before
        if asks[i] is None:
            assert got < before or before <= 1          # never all of it (one unit is all of one)
            assert (got >= 1) == (before >= 1)          # something whenever anything was left
    assert sum(k.limits.max_output_tokens for k in kids) <= total
    assert sum(k.limits.max_tool_calls or 0 for k in kids) <= calls
    last = parent.carve(BudgetLimits(), float(n))
    assert (last.limits.max_output_tokens >= 1) == (parent.remaining("output_tokens") + last.limits.max_output_tokens >= 1)


def test_from_manifest():
    m = parse_manifest({"name": "a", "budget": {"max_output_tokens": 5, "max_wall_clock": "10m", "warn_at": 0.5}})
    lim = BudgetLimits.from_manifest(m.budget)
    assert lim.max_output_tokens == 5 and lim.max_wall_clock == 600 and lim.warn_at == 0.5


def test_every_limit_is_the_manifest_field_of_its_name():
    m = parse_manifest({"name": "a", "budget": {
        "max_input_tokens": 1, "max_output_tokens": 2, "max_cost_usd": 3.5, "max_wall_clock": "4s",
        "max_children": 5, "max_tool_calls": 6, "warn_at": 0.7, "reset_period": "8s"}})
    assert BudgetLimits.from_manifest(m.budget) == BudgetLimits(
        max_input_tokens=1, max_output_tokens=2, max_cost_usd=3.5, max_wall_clock=4.0,
        max_children=5, max_tool_calls=6, warn_at=0.7, reset_period=8.0)


class LedgerMachine(RuleBasedStateMachine):
    """Usage never exceeds a limit by more than one request's actual usage."""

    LIMIT = 1000
    MAX_REQ = 200

    def __init__(self):
        super().__init__()
        self.led = BudgetLedger(BudgetLimits(max_input_tokens=self.LIMIT, max_output_tokens=self.LIMIT), 0.0)
        self.open = []
        self.sent = 0
        self.most_open = 0  # the most requests in flight at once so far

    @rule(est_in=st.integers(1, 200), est_out=st.integers(1, 200))
    def reserve(self, est_in, est_out):
        before = self.led.snapshot(0.0)
        try:
            self.open.append(self.led.reserve(Usage(est_in, est_out), 0.0))
            self.sent += 1
            self.most_open = max(self.most_open, len(self.open))
        except BudgetExceeded:
            assert self.led.snapshot(0.0) == before  # a refusal changes nothing

    @precondition(lambda self: self.open)
    @rule(data=st.data())
    def settle(self, data):
        r = self.open.pop(data.draw(st.integers(0, len(self.open) - 1)))
        # actual may exceed the estimate (a bad estimate), but a request is at most MAX_REQ
        act_in = data.draw(st.integers(0, self.MAX_REQ))
        act_out = data.draw(st.integers(0, r.estimate.output_tokens))  # providers honour max_tokens
        self.led.settle(r, Usage(act_in, act_out), 0.0)

    @precondition(lambda self: self.open)
    @rule()
    def fail(self):
        self.led.release(self.open.pop())

    @invariant()
    def bounded(self):
        assert self.led.used.output_tokens <= self.LIMIT  # output is estimated by max_tokens: exact
        # input is estimated from the prompt, so a bad estimate can overshoot by at most the
        # actual size of each request that was already in flight when the limit was crossed
        assert self.led.used.input_tokens <= self.LIMIT + self.MAX_REQ * max(1, self.most_open)
        assert self.led.reserved.input_tokens >= 0


TestLedgerMachine = LedgerMachine.TestCase
TestLedgerMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


@given(st.lists(st.integers(1, 300), max_size=40))
def test_sequential_overshoot_at_most_one_request(actuals):
    """One request in flight at a time: usage passes the limit by at most one request."""
    led = BudgetLedger(BudgetLimits(max_input_tokens=1000), 0.0)
    for a in actuals:
        try:
            r = led.reserve(Usage(50, 0), 0.0)
        except BudgetExceeded:
            break
        led.settle(r, Usage(a, 0), 0.0)
    assert led.used.input_tokens <= 1000 + 300
