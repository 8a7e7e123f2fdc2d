"""The three holes the audit of issue 10 left open, each attempted through a real kernel.

Each test is named after the attack and asserts the refusal AND that the world did not move
(nothing delivered, run, written, sent or charged). Harness: the scenarios' one.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from test_scenarios_12_36 import World, run  # noqa: E402  (same directory)

from agentix.core.errors import InvalidRequest  # noqa: E402
from agentix.core.manifest import parse_manifest  # noqa: E402
from agentix.kernel.dispatch import Call  # noqa: E402


# ---------------------------------------------------------------------------- ipc.broadcast name race
class _SpawnDuringBroadcast:
    """A stage after the capability stage: between the decision and the handler, an agent of
    the sender's tree is spawned with a name the sender's grant covers (the race, made certain)."""

    def __init__(self, w: World, parent: Any) -> None:
        self.w, self.parent = w, parent
        self.late: list[Any] = []

    async def before(self, call: Call) -> None:
        if call.method == "ipc.broadcast" and not self.late:
            m = {"name": "peer", "program": "probe.py", "isolation": "degraded"}
            self.late.append(await self.w.k.spawn(parse_manifest(m), parent=self.parent))

    async def after(self, call: Call, result: Any, error: BaseException | None) -> None:
        return None


def test_agent_spawned_with_a_granted_name_after_the_broadcast_decision_receives_nothing(tmp_path):
    async def body(w: World):
        sender = await w.spawn([{"grant": "message_send: [peer]", "max_invocations": 5},
                                "spawn_child: [peer]"], name="sender")
        m = {"name": "peer", "program": "probe.py", "isolation": "degraded"}
        first = await w.k.spawn(parse_manifest(m), parent=sender)
        race = _SpawnDuringBroadcast(w, sender)
        w.k.pipeline.add_stage(race)
        toks = list(w.k.caps.held[sender.agent_id])
        res = await w.calls(sender, [["ipc.broadcast", {"message": "hi"}]])
        late = race.late[0]
        sent = [e["data"]["to"] for e in w.events("message.sent", sender.agent_id)]
        return res, first, late, sent, sum(w.k.caps.ledger.used(t.id) for t in toks), \
            len(late.mailbox)

    res, first, late, sent, used, late_mail = run(tmp_path, body)
    assert res[0]["ok"]["delivered"] == [first.agent_id], res
    assert late.agent_id not in sent and late_mail == 0  # the late agent got nothing
    assert sent == [first.agent_id] and used == 1  # one recipient decided, one charged, one sent


# ---------------------------------------------------------------------------- dry_run on every path
def test_operator_tool_invoke_dry_run_without_agent_id_runs_nothing(tmp_path):
    out = tmp_path / "written.txt"

    async def body(w: World):
        before = len(w.events("tool.result"))
        r1 = await w.op("tool.invoke", name="file_write", args={"path": str(out), "content": "x"},
                        dry_run=True)
        r2 = await w.op("tool.invoke", name="echo", args={"message": "x"}, dry_run=True)
        return r1, r2, w.events("tool.result")[before:]

    r1, r2, results = run(tmp_path, body)
    assert r1["allowed"] is True and r1["token_id"] is None and "echo" not in r2, (r1, r2)
    assert r2["allowed"] is True and r2["requests"] == ["tool: echo"]
    assert not out.exists()  # the write did not happen
    assert all(e["data"]["ok"] for e in results)  # answered as checks, nothing failed


def test_dry_run_on_a_method_the_table_does_not_decide_is_refused_not_run(tmp_path):
    """``agent.stop_child`` (a guard, no decision) with ``dry_run`` must not stop the child."""
    async def body(w: World):
        parent = await w.spawn(["spawn_child: [kid]"], name="parent")
        m = {"name": "kid", "program": "probe.py", "isolation": "degraded"}
        kid = await w.k.spawn(parse_manifest(m), parent=parent)
        seen: list[bool] = []

        class Observe:  # after the refused stop_child, is the child still alive?
            async def before(self, call: Call) -> None:
                if call.method == "tool.call" and call.caller.agent_id == parent.agent_id:
                    seen.append(kid.live)

            async def after(self, call: Call, result: Any, error: BaseException | None) -> None:
                return None

        w.k.pipeline.stages.insert(0, Observe())
        res = await w.calls(parent, [["agent.stop_child", {"agent_id": kid.agent_id, "dry_run": True}],
                                     ["ipc.recv", {"dry_run": True}],
                                     ["tool.call", {"name": "echo", "args": {}}]])
        alive = seen == [True]
        return res, alive

    res, alive = run(tmp_path, body)
    assert [r.get("error") for r in res[:2]] == [InvalidRequest.code] * 2, res
    assert "dry_run" in res[0]["message"] and alive  # refused, and the child still runs
