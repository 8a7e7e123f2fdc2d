"""Durability follows the effect: which records the pipeline waits for.

An effect call (file_write, exec, web_fetch, think, spawn ...) has a durable intent record
before its handler runs and a durable outcome record before the reply; a no-effect call
(echo, reads, listings) posts its records. Unknown tools and methods count as effects.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from agentix.core.errors import CapabilityDenied
from agentix.kernel.dispatch import Call, Caller, MethodPolicy, MethodSpec, Pipeline
from agentix.tools.base import ToolRegistry, ToolSpec


class RecordingSink:
    """An EventSink that keeps what it was asked, and whether the caller waited."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bool]] = []

    async def record(self, kind: str, agent_id: str | None, data: dict[str, Any],
                     taint: tuple[str, ...] = (), *, durable: bool = True) -> None:
        self.records.append((kind, durable))


class Deny:
    async def before(self, call: Call) -> None:
        if call.args.get("deny"):
            raise CapabilityDenied("no", reason="test")

    async def after(self, call: Call, result: Any, error: BaseException | None) -> None:
        return None


def _pipeline() -> tuple[Pipeline, RecordingSink, list[str]]:
    sink = RecordingSink()
    tools = ToolRegistry()
    handled: list[str] = []

    async def handler(ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        return {}

    tools.register(ToolSpec("echo", "", {}, handler, durability="no_effect"))
    tools.register(ToolSpec("file_write", "", {}, handler))
    p = Pipeline(sink, tool_durability=tools.durability)
    p.add_stage(Deny())

    async def tool_call(call: Call) -> dict[str, Any]:
        # the intent record is already there (and, for an effect, durable) when this runs
        handled.append(f"{call.tool}:{sink.records[-1] if sink.records else None}")
        return {}

    def checked(*a: Any) -> list[Any]:
        return []

    p.register(MethodSpec("tool.call", tool_call, MethodPolicy(
        "effect", "test", resources=checked, recorded=True, tool_call=True), agent=True))
    p.register(MethodSpec("sys.info", tool_call, MethodPolicy("no_effect", "test", recorded=True),
                          agent=True))
    p.register(MethodSpec("agent.spawn_child", tool_call, MethodPolicy(
        "effect", "test", resources=checked, recorded=True), agent=True))
    return p, sink, handled


AGENT = Caller(agent_id="a1", name="a")


def run(p: Pipeline, method: str, params: dict[str, Any]) -> Any:
    return asyncio.run(p.run(AGENT, method, params))


def test_tool_default_is_effect():
    assert ToolSpec("t", "", {}, lambda c, a: None).durability == "effect"  # type: ignore[arg-type,return-value]


def test_no_effect_tool_does_not_wait_for_its_records():
    p, sink, handled = _pipeline()
    run(p, "tool.call", {"name": "echo", "args": {}})
    assert sink.records == [("tool.invoked", False), ("tool.result", False)]


def test_effect_tool_has_durable_intent_before_it_runs_and_durable_outcome():
    p, sink, handled = _pipeline()
    run(p, "tool.call", {"name": "file_write", "args": {}})
    assert sink.records == [("tool.invoked", True), ("tool.result", True)]
    assert handled == ["file_write:('tool.invoked', True)"]


def test_unknown_tool_counts_as_effect():
    p, sink, _ = _pipeline()
    run(p, "tool.call", {"name": "no_such_tool", "args": {}})
    assert sink.records == [("tool.invoked", True), ("tool.result", True)]


@pytest.mark.parametrize("tool,durable", [("echo", False), ("file_write", True)])
def test_a_refusal_is_recorded_with_the_calls_durability_and_nothing_runs(tool, durable):
    p, sink, handled = _pipeline()
    with pytest.raises(CapabilityDenied):
        run(p, "tool.call", {"name": tool, "args": {"deny": True}})
    assert sink.records == [("capability.denied", durable)]
    assert handled == []


def test_methods_follow_their_spec():
    p, sink, _ = _pipeline()
    run(p, "sys.info", {})
    run(p, "agent.spawn_child", {})
    assert sink.records == [("sys.info", False), ("agent.spawn_child", True)]


def test_kernel_tools_declare_their_class():
    from agentix.tools import echo, files

    by_name = {s.name: s.durability for s in [echo.SPEC, *files.make_specs(files.DiskTally(time.monotonic))]}
    assert by_name == {"echo": "no_effect", "file_read": "no_effect",
                       "file_read_many": "no_effect", "file_list": "no_effect",
                       "grep": "no_effect", "file_write": "effect", "file_edit": "effect"}


def test_an_eagerly_started_call_keeps_one_context():
    """A no-effect call runs its handler before its first suspension (no durable record to
    wait for): a context variable it sets (the file fence) must be reset in the same context
    and never leak into the connection's callbacks."""
    from contextvars import ContextVar

    from agentix.rpc.server import _start_eagerly

    var: ContextVar[int | None] = ContextVar("v", default=None)
    done: list[str] = []

    async def handler() -> None:
        tok = var.set(1)
        await asyncio.sleep(0.01)
        var.reset(tok)  # ValueError if the rest ran in another context
        done.append("reset")

    async def main() -> None:
        task = _start_eagerly(handler())
        assert task is not None
        assert var.get() is None  # the first step's set did not leak into this context
        await task

    asyncio.run(main())
    assert done == ["reset"]


@pytest.mark.parametrize("in_task", [False, True], ids=["eager", "in_a_task"])
def test_each_element_of_a_batch_keeps_a_context_of_its_own(in_task: bool):
    """The same for a JSON-RPC batch: each element's first step runs before the next element's,
    so one that sets a context variable (the file fence, the audit quota's quiet mark) and then
    blocks must neither leak it into the elements after it nor reset it from another context
    (ValueError, answered as an internal error). Both as the channel runs a batch frame eagerly
    and from a task."""
    from contextvars import ContextVar

    from agentix.rpc.server import _run_frame, _start_eagerly

    var: ContextVar[str | None] = ContextVar("v", default=None)
    seen: dict[str, str | None] = {}

    async def handler(method: str, params: dict) -> str:
        seen[method] = var.get()
        if method == "sets_and_blocks":
            tok = var.set(method)
            await asyncio.sleep(0.01)
            var.reset(tok)  # ValueError if the rest ran in another context than the first step
        return "ok"

    batch = [{"jsonrpc": "2.0", "id": i, "method": m, "params": {}}
             for i, m in enumerate(["sets_and_blocks", "after_it", "last"])]

    async def main() -> object:
        out: list[object] = []

        async def frame() -> None:
            out.append(await _run_frame(handler, batch))

        if in_task:
            await asyncio.create_task(frame())
        else:
            task = _start_eagerly(frame())
            assert task is not None
            await task
        assert var.get() is None
        return out[0]

    import orjson

    from agentix.rpc.framing import encode_reply

    replies = asyncio.run(main())  # as the peer reads them (a batch's results are sized: Encoded)
    assert orjson.loads(encode_reply(replies)) == [{"jsonrpc": "2.0", "id": i, "result": "ok"} for i in range(3)]
    assert seen == {"sets_and_blocks": None, "after_it": None, "last": None}
