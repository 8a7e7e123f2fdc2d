"""The kernel's one clock (kernel/clock.py): a VirtualClock moves only when stepped and wakes
exactly the sleeps it passes; a kernel built with one decides every deadline of its own by it
(the wall-clock limit here; token expiry, approvals, the audit quota and HTTP token TTLs in
tests/security and tests/http_api)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from agentix.kernel.clock import SystemClock, VirtualClock, wait_event
from agentix.kernel.kernel import KernelRoot

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from conftest import until  # noqa: E402
from security._world import World, run  # noqa: E402

SLEEPER = "import time\nprint('ready', flush=True)\ntime.sleep(3600)\n"


# ---------------------------------------------------------------------------- the clock itself
def test_a_virtual_clock_moves_only_when_stepped_and_wakes_sleeps_in_deadline_order():
    async def go():
        clock = VirtualClock(start=1000.0)
        woke: list[str] = []

        async def nap(name: str, s: float) -> None:
            await clock.sleep(s)
            woke.append(name)

        tasks = [asyncio.ensure_future(nap(n, s)) for n, s in (("late", 5), ("early", 2), ("mid", 3))]
        await asyncio.sleep(0)
        assert clock.deadlines() == [2.0, 3.0, 5.0] and (clock.now(), clock.monotonic()) == (1000.0, 0.0)
        assert clock.advance(1.9) == 0
        await asyncio.sleep(0)
        assert woke == []
        assert clock.advance(1.1) == 2          # 3.0: the two whose deadlines it reached
        await asyncio.sleep(0)
        assert woke == ["early", "mid"] and clock.deadlines() == [5.0]
        assert (clock.now(), clock.monotonic()) == (1003.0, 3.0)
        tasks[0].cancel()                      # a cancelled sleep is no longer waiting
        await asyncio.sleep(0)
        assert clock.deadlines() == [] and clock.advance(10) == 0
        with pytest.raises(ValueError, match="only moves forward"):
            clock.advance(-1)

    asyncio.run(go())


def test_wait_event_ends_at_the_event_or_the_clocks_deadline_whichever_first():
    async def go():
        clock = VirtualClock()
        ev = asyncio.Event()
        timed = asyncio.ensure_future(wait_event(clock, ev, 10))
        await asyncio.sleep(0)
        clock.advance(9.9)
        await asyncio.sleep(0)
        assert not timed.done()
        clock.advance(0.1)
        assert await timed is False
        answered = asyncio.ensure_future(wait_event(clock, ev, 10))
        await asyncio.sleep(0)
        ev.set()
        assert await answered is True and clock.deadlines() == []   # its timer went with it
        assert await wait_event(SystemClock(), asyncio.Event(), 0.01) is False

    asyncio.run(go())


def test_a_kernel_runs_on_the_system_clock_unless_given_one(tmp_path):
    from agentix.kernel.config import KernelConfig
    from agentix.kernel.home import Home

    async def go():
        k = KernelRoot(Home(tmp_path / "h"), KernelConfig(backend="plain", isolation="degraded"))
        return k.clock, k.caps.clock, k.control.clock

    clocks = asyncio.run(go())
    assert all(isinstance(c, SystemClock) for c in clocks)


# ---------------------------------------------------------------------------- through a kernel
class _Sleepers(World):
    programs = {"sleeper.py": SLEEPER}


def test_the_wall_clock_limit_is_the_kernels_clocks(tmp_path):
    """An agent with a one-minute wall-clock limit: alive a moment before the minute of the
    kernel's clock, stopped at it with reason ``timeout``, its runtime exactly that minute."""
    clock = VirtualClock()

    async def body(w):
        rec = await w.spawn([], name="slow", program="sleeper.py", limits={"wall_clock": "1m"})
        await until(lambda: 60.0 in clock.deadlines())
        clock.advance(59.9)
        await asyncio.sleep(0.05)       # a real moment: a wrongly woken limit would act in it
        before = rec.state
        clock.advance(0.1)
        await w.k.wait(rec, 30)
        return before, rec.exit, w.events("agent.exited", rec.agent_id)

    before, exit_, exited = run(tmp_path, body, world=_Sleepers, clock=clock)
    assert before == "running"
    assert exit_.reason == "timeout" and "wall-clock limit of 60s" in exit_.detail
    assert exit_.at == VirtualClock().now() + 60   # the record's time is the kernel's clock's
    assert exited[0]["data"]["runtime_s"] == 60.0
