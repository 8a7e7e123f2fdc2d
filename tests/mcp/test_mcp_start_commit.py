"""A declared MCP server reads ``running`` only once its start is recorded: a call that
finds it running (``McpServer.ensure``'s fast path) uses it only after
``mcp.server_started`` is in the log. Before, the state was set first and the record written
after, so a second caller used the server (and its tool call was recorded) while the start
was not: the test holds that record open, and fails on the old code."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("mcp")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from security._world import World, run  # noqa: E402

SERVER = Path(__file__).parent / "servers" / "notes_server.py"


def notes() -> str:
    return "\n".join([
        "[mcp.servers.notes]",
        f"command = {json.dumps([sys.executable, str(SERVER)])}",
        f"read_only_paths = {json.dumps([str(SERVER.parent)])}",
        'env = { MODE = "good" }', ""])


def test_a_second_caller_uses_the_server_only_once_its_start_is_recorded(tmp_path: Path) -> None:
    async def body(w: World):
        srv = w.k.mcp.servers["notes"]
        events = w.k.events
        record = events.record
        reached, release = asyncio.Event(), asyncio.Event()

        async def held(kind, *args, **kw):
            if kind == "mcp.server_started":
                reached.set()
                await release.wait()
            return await record(kind, *args, **kw)

        events.record = held  # type: ignore[method-assign]
        first = asyncio.ensure_future(srv.ensure())
        await asyncio.wait_for(reached.wait(), 60)
        second = asyncio.ensure_future(srv.ensure())
        done, _ = await asyncio.wait({second}, timeout=1.0)  # the old code let it through at once
        early = bool(done)
        recorded_then = len(w.events("mcp.server_started"))
        release.set()
        await asyncio.wait_for(asyncio.gather(first, second), 60)
        return early, recorded_then, srv.state

    early, recorded_then, state = run(tmp_path, body, config_toml=notes())
    assert not early, "a caller used the server before mcp.server_started was recorded"
    assert recorded_then == 0
    assert state == "running"
