"""A reply never carries more than ``rpc.framing.MAX_RESULT_BYTES`` of result.

Before, a handler's result went out whole however large: the kernel held it in its write
buffer until the agent read it, and a reply over ``MAX_UNREAD`` (16 MiB) closed the channel of
an agent with anything else unread. The kernel's own tools cap what they return (file_read 1
MiB, agent.logs 256 KiB, exec 256 KiB), but not every tool does: an MCP server may send up to
its ``max_message_bytes`` (at most 64 MiB), a registered tool what it likes. Here a tool of
the test's returns 20 MiB. Now such a call fails with ``limit_exceeded`` (``data.limit:
"result_bytes"``, saying what to do), is recorded as failed, and the channel goes on serving.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from agentix.core.errors import LimitExceeded
from agentix.rpc.framing import MAX_RESULT_BYTES, check_result_size
from agentix.tools.base import ToolSpec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from security._world import World, run  # noqa: E402

READER = '''
from agentix.sdk import agent
k = agent.connect()
k.recv(timeout=60)
got = {}
try:
    r = k.call("tool.call", name="bulk", args={})
    got["ok_chars"] = len(str(r))
except Exception as e:
    got.update(error=e.code, message=str(e), data=e.data)
got["after"] = k.call("tool.call", name="echo", args={"message": "still here"})
k.exit(got)
'''


class _World(World):
    programs = {"reader.py": READER}


def test_a_result_too_large_for_one_reply_is_a_clear_error_recorded_as_failed(tmp_path):
    async def body(w: World):
        async def bulk(ctx, args):
            return {"text": "x" * (20 * 1024 * 1024)}

        w.k.tools.register(ToolSpec("bulk", "20 MiB of text", {"type": "object"}, bulk))
        rec = await w.spawn(["tool: bulk", "tool: echo"], name="reader", program="reader.py")
        await w.k.deliver(None, rec, "go")
        await asyncio.wait_for(w.k.wait(rec, 120), 150)
        results = [e["data"] for e in w.events("tool.result", rec.agent_id)]
        return rec.exit, rec.result, results

    exit_, got, results = run(tmp_path, body, world=_World)
    assert exit_ is not None and exit_.reason == "completed", got
    assert "ok_chars" not in got, "the 20 MiB result was sent"
    assert got["error"] == "limit_exceeded"
    assert got["data"]["limit"] == "result_bytes" and got["data"]["reason"] == "result_too_large"
    assert got["data"]["max"] == MAX_RESULT_BYTES and got["data"]["size"] > MAX_RESULT_BYTES
    assert "in parts" in got["message"]          # it says what to do
    assert got["after"] == {"echo": "still here"}         # the channel goes on serving
    many = [r for r in results if r["tool"] == "bulk"]
    assert len(many) == 1 and many[0]["ok"] is False and many[0]["error"] == "limit_exceeded"


@pytest.mark.parametrize("size", [MAX_RESULT_BYTES - 2, MAX_RESULT_BYTES - 1])
def test_the_bound_is_on_the_results_json_size(size):
    check_result_size("m", "x" * (size - 2))  # its JSON: the quotes count
    with pytest.raises(LimitExceeded) as info:
        check_result_size("m", "x" * (size + 1 - 2) + "x" * (MAX_RESULT_BYTES - size))
    assert info.value.data["size"] == MAX_RESULT_BYTES + 1
    check_result_size("m", {1, 2})  # not JSON: left to encode_reply
