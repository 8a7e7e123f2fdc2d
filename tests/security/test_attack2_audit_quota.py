"""The class behind "a viewer floods the audit log through tokens.verify": any caller could
make the kernel append a record per call that changed nothing (a refusal, a read method that
records: ``tokens.verify``, ``loop.event``, ``session.bind``...). Now such records are held to
a per-identity quota (core/record_quota.py, kernel/record_gate.py) and the excess is counted
into ``audit.suppressed`` records, so the log still accounts for every call.

- the pure rule, as Hypothesis properties against a reference model;
- the kernel: an agent hammering a denied tool and ``loop.event`` is bounded, the operator and
  other agents are not silenced, calls with an effect are never held back, the chain verifies.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings, strategies as st

from agentix.core.record_quota import RecordQuota
from agentix.kernel.clock import VirtualClock
from agentix.kernel.record_gate import FLUSH_AFTER, RecordGate, quiet
from agentix.rpc.server import _start_eagerly
from conftest import until
from security._world import World, run, tool

# ------------------------------------------------------------------ the rule (pure)
_steps = st.lists(st.tuples(st.sampled_from(["a", "b", "c"]),            # who
                            st.sampled_from(["capability.denied", "loop.progress"]),
                            st.floats(min_value=0, max_value=3, allow_nan=False)),  # time since last
                  max_size=300)


@settings(max_examples=200, deadline=None)
@given(burst=st.integers(1, 20), rate=st.floats(0.1, 10, allow_nan=False), steps=_steps)
def test_written_records_per_identity_never_exceed_burst_plus_rate_times_time(burst, rate, steps):
    q = RecordQuota(burst, rate)
    now = 0.0
    written: dict[str, int] = {}
    total: dict[str, int] = {}
    taken: dict[str, int] = {}
    kinds_seen: dict[str, dict[str, int]] = {}
    for who, kind, dt in steps:
        now += dt
        total[who] = total.get(who, 0) + 1
        if q.admit(who, kind, now):
            written[who] = written.get(who, 0) + 1
        else:
            kinds_seen.setdefault(who, {})
            kinds_seen[who][kind] = kinds_seen[who].get(kind, 0) + 1
        # the bound, at every step, for every identity (each started with a full bucket)
        for w, n in written.items():
            assert n <= burst + rate * now + 1e-6
        if dt > 2:  # a flush now and then: what was counted is handed over exactly once
            for w in q.holding():
                s = q.take(w)
                assert s is not None and s.by == w
                taken[w] = taken.get(w, 0) + s.count
                for k, c in s.kinds:
                    kinds_seen[w][k] -= c
    for w in q.holding():
        s = q.take(w)
        taken[w] = taken.get(w, 0) + s.count
        for k, c in s.kinds:
            kinds_seen[w][k] -= c
    # nothing lost: every record was either written or counted into exactly one aggregate
    for w, n in total.items():
        assert written.get(w, 0) + taken.get(w, 0) == n
    assert all(v == 0 for ks in kinds_seen.values() for v in ks.values())
    assert q.holding() == []


@settings(max_examples=100, deadline=None)
@given(burst=st.integers(1, 10), n=st.integers(0, 200), others=st.integers(0, 10))
def test_one_identity_flooding_never_holds_back_another(burst, n, others):
    q = RecordQuota(burst, 1.0)
    for _ in range(n):
        q.admit("flooder", "http.refused", 0.0)
    # another identity at the same instant gets its whole burst
    assert [q.admit("other", "call.refused", 0.0) for _ in range(min(others, burst))] == [True] * min(others, burst)


# ------------------------------------------------------------------ the mark (whose records)
class _Written:
    """An ``EventSink`` that keeps what reaches it (what the gate let through)."""

    def __init__(self) -> None:
        self.kinds: list[str] = []

    async def record(self, kind, agent_id, data, taint=(), *, durable=True):
        self.kinds.append(kind)


@pytest.mark.parametrize("blocks", [False, True])
def test_a_call_that_blocks_stays_its_callers_quota_and_a_task_it_starts_does_not(blocks):
    """The channel runs a call eagerly outside any task and gives it a task only once it
    blocks (rpc.server._start_eagerly): an ``ipc.recv`` that waited for its message recorded
    its receipt from that task. The quota must follow the call across the hand-over (it did
    not: the agent got one record more whenever its orders came after it asked, a test
    flaky with load), and must still not hold a background task the call starts."""
    out = _Written()
    gate = RecordGate(out, RecordQuota(1, 0.1), clock=VirtualClock())

    async def call() -> None:
        with quiet("agent a"):
            if blocks:
                await asyncio.sleep(0)  # the rest runs in the task that drives it on
            await gate.record("message.delivered", "a", {})
            await gate.record("capability.denied", "a", {})   # over the burst of 1: counted
            await asyncio.create_task(gate.record("watcher.note", "a", {}))  # not the call's

    async def main() -> None:
        task = _start_eagerly(call())
        assert task is not None  # it waits for the task it starts, at the latest
        await task
        await gate.flush()

    asyncio.run(main())
    assert out.kinds == ["message.delivered", "watcher.note", "audit.suppressed"]
    assert gate.statistics()["suppressed"] == 1


# ------------------------------------------------------------------ the kernel
QUOTA = dict(audit_quota_burst=10, audit_quota_rate=0.5)


def _counts(w: World, agent_id: str) -> tuple[int, int]:
    """(refusal records for the agent, the count the aggregates say were held back)."""
    written = len(w.refusals(agent_id))
    held = sum(e["data"]["count"] for e in w.events(kind="audit.suppressed")
               if e["data"]["by"].endswith(f"({agent_id})"))
    return written, held


def test_agent_hammering_a_denied_tool_cannot_grow_the_audit_log_without_bound(tmp_path):
    n = 120

    async def body(w: World):
        flooder = await w.spawn(["tool: echo"], name="flooder")
        quiet = await w.spawn(["tool: echo"], name="quiet")
        res = await w.calls(flooder, [tool("file_read", path="/etc/passwd") for _ in range(n)]
                            + [tool("echo", message="still works")])
        mid = _counts(w, flooder.agent_id)
        # another agent's refusals are written in full, right now
        other = await w.calls(quiet, [tool("file_read", path="/etc/hostname") for _ in range(3)])
        other_written = len(w.refusals(quiet.agent_id))
        await w.k.record_gate.flush()   # what the flush interval (or shutdown) writes
        await w.k.audit.sink.sync()
        after = _counts(w, flooder.agent_id)
        echoes = [e for e in w.events(kind="tool.result", agent=flooder.agent_id) if e["data"]["ok"]]
        return res, mid, other, other_written, after, echoes

    # the kernel's clock stands still: the quota's bucket does not refill during the run
    res, mid, other, other_written, after, echoes = run(tmp_path, body, clock=VirtualClock(), **QUOTA)
    assert [r.get("error") for r in res[:n]] == ["capability_denied"] * n    # every call refused
    assert res[n]["ok"]["echo"] == "still works"                              # then served
    written, held = mid
    # exactly the burst of 10, nothing more: the probe's receipt of its orders, nine refusals
    assert written == 9
    assert [r.get("error") for r in other] == ["capability_denied"] * 3
    assert other_written == 3                             # per identity: not silenced
    written, held = after
    assert written + held == n                            # every refusal accounted for
    assert len(echoes) == 1                               # an allowed call is always recorded


def test_agent_flooding_loop_events_is_bounded_too(tmp_path):
    """``loop.event`` is a read method whose handler records: the gate bounds it without the
    handler knowing (the mark is on the call, not in the handler)."""
    n = 60

    async def body(w: World):
        a = await w.spawn([], name="chatty")
        res = await w.calls(a, [["loop.event", {"kind": "progress", "data": {"i": i}}] for i in range(n)])
        await w.k.record_gate.flush()
        await w.k.audit.sink.sync()
        rows = w.events(kind="loop.progress", agent=a.agent_id)
        held = sum(e["data"]["kinds"].get("loop.progress", 0) for e in w.events(kind="audit.suppressed")
                   if e["data"]["by"].endswith(f"({a.agent_id})"))
        return res, rows, held

    res, rows, held = run(tmp_path, body, **QUOTA)
    assert all("ok" in r for r in res)
    assert len(rows) < n
    assert len(rows) + held == n


def test_effect_calls_are_never_held_back_by_the_quota(tmp_path):
    """A caller past its quota still gets every call with an effect recorded (spawn, exit,
    tool results): only records of calls that changed nothing are counted instead."""

    async def body(w: World):
        p = await w.spawn(["tool: echo", "spawn_child: [kid]"], name="busy")
        calls = [tool("file_read", path="/etc/passwd") for _ in range(40)]
        calls += [tool("echo", message=str(i)) for i in range(15)]
        res = await w.calls(p, calls)
        await w.k.audit.sink.sync()
        results = [e for e in w.events(kind="tool.result", agent=p.agent_id) if e["data"]["ok"]]
        invoked = [e for e in w.events(kind="tool.invoked", agent=p.agent_id)
                   if e["data"]["tool"] == "echo"]
        exited = w.events(kind="agent.exited", agent=p.agent_id)
        return res, results, invoked, exited

    res, results, invoked, exited = run(tmp_path, body, **QUOTA)
    assert [r["ok"]["echo"] for r in res[40:]] == [str(i) for i in range(15)]
    assert len(results) == 15 and len(invoked) == 15
    assert len(exited) == 1


def test_the_aggregate_is_written_after_its_interval_without_a_flush(tmp_path):
    clock = VirtualClock()

    async def body(w: World):
        a = await w.spawn([], name="burst")
        await w.calls(a, [tool("file_read", path="/etc/passwd") for _ in range(25)])
        await until(lambda: FLUSH_AFTER in clock.deadlines())  # the gate's flush waits on the kernel's clock
        clock.advance(FLUSH_AFTER - 0.1)
        await w.k.audit.sink.sync()
        early = w.events(kind="audit.suppressed")
        clock.advance(0.1)
        for _ in range(1000):  # the woken flush writes its record (a condition, not a guessed delay)
            await w.k.audit.sink.sync()
            if w.events(kind="audit.suppressed"):
                break
            await asyncio.sleep(0.01)
        return a, early, w.events(kind="audit.suppressed")

    a, early, agg = run(tmp_path, body, clock=clock, **QUOTA)
    assert early == []                                    # not a moment before its interval
    assert len(agg) == 1 and agg[0]["data"]["by"].endswith(f"({a.agent_id})")
    # 25 refusals, 9 of them written (the burst of 10 less the probe's receipt of its orders)
    assert agg[0]["data"]["kinds"] == {"capability.denied": 16}
