"""Read-only is derived from the method table: over EVERY row of ``kernel/methods.py``, a
connection bound read-only is refused exactly the ``effect`` methods — before any stage or
handler runs, with one refusal record naming the face — and runs every ``no_effect`` one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentix.core.errors import CapabilityDenied
from agentix.kernel.dispatch import OPERATOR, Caller, MethodSpec, OperatorSession, Pipeline
from agentix.kernel.methods import POLICIES

READ_ONLY_MCP = Caller(agent_id=None, name="mcp", read_only=True)


class Sink:
    def __init__(self) -> None:
        self.records: list[tuple[str, Any, dict[str, Any]]] = []

    async def record(self, kind: str, agent_id: Any, data: dict[str, Any], taint: tuple[str, ...] = (),
                     durable: bool = True) -> None:
        self.records.append((kind, agent_id, data))


class Stage:
    def __init__(self) -> None:
        self.before_calls = 0

    async def before(self, call: Any) -> None:
        self.before_calls += 1

    async def after(self, call: Any, result: Any, error: Any) -> None:
        pass


def pipeline() -> tuple[Pipeline, Sink, Stage, list[str]]:
    ran: list[str] = []
    sink, stage = Sink(), Stage()
    p = Pipeline(sink)
    p.add_stage(stage)
    for name, policy in POLICIES.items():
        async def handler(call: Any, name: str = name) -> dict[str, Any]:
            ran.append(name)
            return {}
        p.register(MethodSpec(name, handler, policy, operator=True, agent=True))
    return p, sink, stage, ran


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_a_read_only_face_is_refused_exactly_the_effect_rows(name: str) -> None:
    p, sink, stage, ran = pipeline()
    params = {"name": "echo", "args": {}}
    if POLICIES[name].durability == "effect":
        with pytest.raises(CapabilityDenied) as ei:
            asyncio.run(p.run(READ_ONLY_MCP, name, params))
        assert ei.value.data == {"reason": "read_only", "method": name}
        # nothing ran, nothing was checked or charged; one record, naming the face
        assert ran == [] and stage.before_calls == 0
        assert [(k, d["by"], d["reason"]) for k, _, d in sink.records] == [("capability.denied", "mcp", "read_only")]
    else:
        asyncio.run(p.run(READ_ONLY_MCP, name, params))
        assert ran == [name]


def test_the_operator_and_a_writable_face_are_not_refused_effects() -> None:
    p, sink, _stage, ran = pipeline()
    asyncio.run(p.run(OPERATOR, "agent.stop", {"agent_id": "ag-1"}))
    assert sink.records == []  # the operator's own calls keep their table's recording
    asyncio.run(p.run(Caller(agent_id=None, name="mcp"), "agent.stop", {"agent_id": "ag-1"}))
    assert ran == ["agent.stop", "agent.stop"]
    assert sink.records == [("agent.stop", None, {"ok": True, "by": "mcp", "agent_id": "ag-1"})]


def test_a_session_holds_the_caller_its_bind_returned() -> None:
    sink = Sink()
    p = Pipeline(sink)

    async def bind(call: Any) -> dict[str, Any]:
        return {"caller": call.params["face"], "read_only": True, "methods": {}}
    p.register(MethodSpec("session.bind", bind, POLICIES["session.bind"], operator=True))
    s = OperatorSession()
    assert s.caller is OPERATOR
    asyncio.run(s.run(p, "session.bind", {"face": "mcp"}))
    assert s.caller == READ_ONLY_MCP
