"""The interactive reserve of the scheduler, in virtual time (the scheduler is pure).

Properties: the concurrency cap is never exceeded; nobody starves; bulk work is never held
back from a free reserved slot for longer than ``lend_after``; an interactive request finds
a reserved slot when it is not lent; a backlogged agent is never interactive.
"""

from __future__ import annotations

import heapq
import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentix.core.ratelimit import RateLimits
from agentix.core.scheduler import Scheduler

RATE = 1000.0  # tokens per second one slot serves


def run(sched: Scheduler, cap: int, bulk: dict[str, tuple[int, int]],
        sporadic: list[tuple[float, str, int]], until: float, lend_after: float):
    """Bulk agents: name -> (outstanding, cost), closed loop. Sporadic: (time, agent, cost)
    arrivals. Checks the invariants at every decision; returns waits per agent."""
    now = 0.0
    seq = itertools.count()
    events: list[tuple[float, int, object]] = []
    waits: dict[str, list[float]] = {}
    held_since: float | None = None
    arrivals = sorted(sporadic)
    for a, (k, c) in bulk.items():
        for _ in range(k):
            sched.submit(a, 1.0, c, now)
    while True:
        while arrivals and arrivals[0][0] <= now:
            _, a, c = arrivals.pop(0)
            sched.submit(a, 1.0, c, now)
        d = sched.dispatch(now)
        for t in d.start:
            waits.setdefault(t.agent_id, []).append(now - t.enqueued_at)
            heapq.heappush(events, (now + t.cost / RATE, next(seq), t))
        st_ = sched.statistics(now)
        assert st_.in_flight <= cap, f"{st_.in_flight} in flight with a cap of {cap}"
        # a free slot while work waits: only the reserve may cause it, for <= lend_after
        if st_.queue_length and st_.in_flight < cap:
            held_since = now if held_since is None else held_since
            assert now - held_since <= lend_after + 1e-9, (now, held_since, lend_after)
        else:
            held_since = None
        nxt = [e[0] for e in events[:1]] + ([d.wake_at] if d.wake_at is not None else [])
        if arrivals:
            nxt.append(arrivals[0][0])
        if not nxt:
            break
        now = min(nxt)
        if now > until:
            break
        while events and events[0][0] <= now:
            _, _, t = heapq.heappop(events)
            sched.finish(t, now, t.cost)
            if t.agent_id in bulk:
                sched.submit(t.agent_id, 1.0, bulk[t.agent_id][1], now)
    return waits


@settings(max_examples=60, deadline=None)
@given(cap=st.integers(2, 6), reserve=st.integers(1, 3),
       lend_after=st.sampled_from([0.0, 0.01, 0.2, math.inf]),
       bulk=st.dictionaries(st.sampled_from(list("abcdef")),
                            st.tuples(st.integers(1, 4), st.integers(10, 500)), min_size=1),
       sporadic=st.lists(st.tuples(st.floats(0, 3), st.sampled_from(["x", "y"]),
                                   st.integers(1, 50)), max_size=12))
def test_cap_holds_nobody_starves_and_the_reserve_holds_bulk_back_at_most_lend_after(
        cap, reserve, lend_after, bulk, sporadic):
    reserve = min(reserve, cap - 1)
    s = Scheduler(RateLimits(concurrency=cap), 0.0, "wfq", max_wait=2.0, reserve=reserve,
                  interactive_idle=0.5, lend_after=lend_after)
    waits = run(s, cap, bulk, sporadic, 8.0, lend_after)
    for a in bulk:
        assert waits.get(a), f"bulk agent {a} never served"
    for t, a, _ in sporadic:
        if t < 5.0:
            assert waits.get(a), f"sporadic agent {a} never served"


def test_an_interactive_request_takes_the_reserved_slot_at_once():
    s = Scheduler(RateLimits(concurrency=4), 0.0, "wfq", reserve=1, interactive_idle=0.5,
                  lend_after=math.inf)
    bulk = {a: (3, 300) for a in "abc"}  # 9 outstanding: more than the 3 bulk slots
    waits = run(s, 4, bulk, [(0.0, "person", 1), (1.05, "person", 10), (2.3, "person", 10),
                             (3.7, "person", 10)], 5.0, math.inf)
    assert waits["person"][1:] == [0.0, 0.0, 0.0]  # the first (a new agent's) was bulk
    assert s.statistics(5.0).lent == 0


def test_an_aged_bulk_request_at_the_head_does_not_block_the_reserved_slot():
    s = Scheduler(RateLimits(concurrency=2), 0.0, "wfq", max_wait=1.0, reserve=1,
                  interactive_idle=0.5, lend_after=math.inf)
    _seen(s, "p", 0.0)
    s.submit("a", 1.0, 100, 0.0)  # a is new: bulk, takes the one bulk slot
    s.submit("a", 1.0, 100, 0.0)  # bulk, waits behind the reserve
    first = s.dispatch(0.0).start
    assert len(first) == 1
    person = s.submit("p", 1.0, 5, 2.0)  # the bulk one has waited 2 s > max_wait: aged
    assert person.interactive
    d = s.dispatch(2.0)
    assert d.start == (person,)  # the reserved slot went to the person, not the aged head


def test_without_a_reserve_the_interactive_request_waits_for_a_slot():
    s = Scheduler(RateLimits(concurrency=4), 0.0, "wfq")
    waits = run(s, 4, {a: (3, 300) for a in "abc"}, [(1.05, "person", 10)], 3.0, 0.0)
    assert waits["person"][0] > 0  # the control: the reserve is what made the wait 0


def _seen(s: Scheduler, agent: str, at: float) -> None:
    """Make ``agent`` known to ``s`` with one request that ended at ``at``."""
    t = s.submit(agent, 1.0, 1, at)
    assert t in s.dispatch(at).start
    s.finish(t, at, 1)


def test_a_lent_slot_serves_bulk_work_after_lend_after():
    s = Scheduler(RateLimits(concurrency=3), 0.0, "wfq", reserve=1, interactive_idle=0.5,
                  lend_after=0.05)
    _seen(s, "a", 0.0)
    for _ in range(4):
        s.submit("a", 1.0, 100, 1.0)  # the first after 1 s idle is interactive
    d = s.dispatch(1.0)
    # bulk work may fill cap - reserve = 2 slots in all; the third waits for the reserve
    assert [t.interactive for t in d.start] == [True, False]
    assert d.wake_at == pytest.approx(1.05)
    assert s.dispatch(1.04).start == ()  # still held back ...
    d = s.dispatch(1.05)  # ... for lend_after, then lent
    assert len(d.start) == 1 and not d.start[0].interactive
    assert s.statistics(1.05).lent == 1 and s.statistics(1.05).in_flight == 3


def test_a_backlogged_agent_is_never_interactive():
    s = Scheduler(RateLimits(concurrency=3), 0.0, "wfq", reserve=1, interactive_idle=0.5)
    fresh = s.submit("new", 1.0, 10, 0.0)
    assert not fresh.interactive  # a new agent has shown no idleness: bulk
    _seen(s, "a", 0.0)
    first = s.submit("a", 1.0, 10, 1.0)
    second = s.submit("a", 1.0, 10, 1.0)
    assert first.interactive and not second.interactive
    d = s.dispatch(1.0)
    for t in d.start:
        s.finish(t, 1.01, 10)
    again = s.submit("a", 1.0, 10, 1.02)  # back at once: a closed loop, not a person
    assert not again.interactive
    later = Scheduler(RateLimits(concurrency=3), 0.0, "wfq", reserve=1, interactive_idle=0.5)
    _seen(later, "p", 0.1)
    assert not later.submit("p", 1.0, 10, 0.5).interactive  # idle 0.4 s < 0.5 s
    later2 = Scheduler(RateLimits(concurrency=3), 0.0, "wfq", reserve=1, interactive_idle=0.5)
    _seen(later2, "p", 0.1)
    assert later2.submit("p", 1.0, 10, 0.7).interactive  # idle 0.6 s >= 0.5 s


@pytest.mark.parametrize("reserve,cap", [(4, 4), (1, None), (-1, 4)])
def test_a_reserve_that_cannot_hold_is_refused(reserve, cap):
    with pytest.raises(ValueError):
        Scheduler(RateLimits(concurrency=cap), 0.0, "wfq", reserve=reserve)
