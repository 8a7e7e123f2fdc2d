"""MCP server restarts on the kernel's clock (kernel/mcp_server.py, mcp_tools.prepare_for).

A declared server an agent's ``mcp:`` grant names is started when the agent lists its tools.
Before, a server that had never listed its tools and crashed was started again by EVERY
``tool.list`` (each one waiting out the rest of its backoff on real time first): a server that
crashes at start cost one start, one log warning and up to 5 s of the listing's time per
listing. Now a listing skips a server in its backoff and starts it again only once the backoff
(0.5 s, doubling) is over, timed on the kernel's one clock, which this test steps.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

from agentix.kernel.clock import VirtualClock  # noqa: E402
from agentix.kernel.dispatch import Caller  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from security._world import World, run  # noqa: E402
from _ports import free_port  # nothing listens there once it is released

SLEEPER = "import time\nprint('ready', flush=True)\ntime.sleep(3600)\n"


class _World(World):
    programs = {"sleeper.py": SLEEPER}


def test_a_server_that_crashes_at_start_is_restarted_once_per_backoff_not_once_per_listing(tmp_path):
    clock = VirtualClock()
    toml = (f'[mcp.servers.down]\nurl = "http://127.0.0.1:{free_port()}/mcp"\n'
            "start_timeout = 10\nmax_restarts = 10\n")

    async def body(w: World) -> dict[str, Any]:
        rec = await w.spawn(["mcp: down/*", "tool: echo"], name="lister", program="sleeper.py")
        caller = Caller(agent_id=rec.agent_id, name=rec.name, workspace=rec.workspace)
        srv = w.k.mcp.servers["down"]

        async def listing() -> set[str]:
            # a listing never waits out a backoff: bounded here only so a hang fails the test
            out = await asyncio.wait_for(w.k.pipeline.run(caller, "tool.list", {}), 30)
            return {t["name"] for t in out["tools"]}

        seen: dict[str, Any] = {}
        names = await listing()                        # the first use: started, and it failed
        seen["first"] = (srv.starts, srv.state, "echo" in names)
        for _ in range(5):                             # within the 0.5 s backoff: not started
            await listing()
        seen["in_backoff"] = (srv.starts, srv.state)
        clock.advance(0.6)                             # the backoff is over: the next listing starts it
        await listing()
        seen["after_first_backoff"] = (srv.starts, srv.state)
        clock.advance(0.6)                             # the second backoff is 1 s: not over yet
        await listing()
        seen["in_second_backoff"] = srv.starts
        clock.advance(0.5)
        await listing()
        seen["after_second_backoff"] = srv.starts
        return seen

    seen = run(tmp_path, body, toml, world=_World, clock=clock)
    assert seen["first"] == (1, "backoff", True)       # the agent's other tools are listed
    assert seen["in_backoff"] == (1, "backoff")
    assert seen["after_first_backoff"] == (2, "backoff")
    assert seen["in_second_backoff"] == 2
    assert seen["after_second_backoff"] == 3
