"""An agent reads ``exited`` (``wait``, ``stop`` and ``kill`` return) once its calls at work
have ended — not once each was merely told to (its task cancelled when the exit revoked its
tokens): a call's cleanup (an exec's process tree killed and waited for, a thread's write
finished) runs after the cancel. Before, the reaper went on and said exited while an ended
call was still unwinding, so an effect of the dead agent's authority could land after.

The call here is a tool whose cleanup takes half a second and then leaves a mark (what a
thread finishing its write does); the test fails on the old code. (``cap.revoke`` itself
answers at once, as before: tests/security/test_attack5.py and test_attack6.py revoke while
a call's thread is held and let it go after; the call answers once its thread is done.)"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _sleeper import SleeperWorld, as_agent  # noqa: E402
from security._world import World, run  # noqa: E402

from agentix.tools.base import ToolSpec  # noqa: E402


def slow_unwinding_tool(w: World, mark: Path) -> asyncio.Event:
    """Register ``slow_unwind``: it runs until ended, then takes 0.5 s to unwind and writes
    ``mark``; the event is set once a call of it is at work."""
    started = asyncio.Event()

    async def handler(ctx, args):
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(0.5)  # a thread finishing its write, a process tree being reaped
            mark.write_text("the ended call's last effect")
            raise
        return {}

    w.k.tools.register(ToolSpec("slow_unwind", "test: slow to end", {"type": "object"}, handler))
    return started


async def calling(w: World, name: str, mark: Path):
    """An agent with a ``slow_unwind`` call at work: (its record, the call's task)."""
    started = slow_unwinding_tool(w, mark)
    rec = await w.spawn(["tool: slow_unwind"], name=name, program="sleeper.py")
    call = asyncio.ensure_future(w.k.pipeline.run(as_agent(rec), "tool.call", {"name": "slow_unwind", "args": {}}))
    await asyncio.wait_for(started.wait(), 30)
    return rec, call


def test_wait_returns_once_the_exited_agents_calls_have_unwound(tmp_path: Path) -> None:
    mark = tmp_path / "mark"

    async def body(w: World):
        rec, call = await calling(w, "dies", mark)
        await w.k.kill(rec)
        await w.k.wait(rec, 30)
        marked = mark.exists()
        await asyncio.gather(call, return_exceptions=True)
        return marked

    assert run(tmp_path, body, world=SleeperWorld), "the agent read exited while a call of its was still unwinding"
