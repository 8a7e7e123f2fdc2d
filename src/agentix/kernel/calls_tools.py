"""System calls that run tools: ``tool.list`` (both), ``tool.call`` (agents), ``tool.invoke``
(operator). The capability stage has decided the call; the handler runs the tool with that
``Authorization`` and the open-time fence."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from agentix.kernel.cap_service import CapabilityService
from agentix.kernel.dispatch import Call, Pipeline
from agentix.kernel.methods import method
from agentix.kernel.param_checks import caller_record
from agentix.kernel.process import AgentRecord, ProcessTable
from agentix.tools.base import ToolContext, ToolRegistry

__all__ = ["register"]


def register(pipeline: Pipeline, *, table: ProcessTable, tools: ToolRegistry, caps: CapabilityService,
             prepare_tools: Callable[[str], Awaitable[None]]) -> None:
    """``prepare_tools(agent_id)`` starts what an agent's tool list needs first (the MCP
    servers its grants name: ``mcp_tools.McpTools.prepare_for``)."""
    caller_rec = partial(caller_record, table)

    async def tool_list(call: Call) -> dict[str, Any]:
        if call.caller.agent_id is not None:  # an agent's list: the MCP servers its grants name, started
            await prepare_tools(call.caller.agent_id)
        return {"tools": tools.describe()}

    async def run_tool(call: Call, subject: AgentRecord | None) -> dict[str, Any]:
        assert call.tool is not None
        spec = tools.get(call.tool)
        ctx = ToolContext(call=call, agent=subject, agent_id=subject.agent_id if subject else None,
                          workspace=subject.workspace if subject else None,
                          authorization=call.authorization, reauthorize=caps.reauthorizer(call),
                          make_fence=partial(caps.fence, subject.workspace if subject else None))
        # checks the arguments (unless the capability stage did); only the family leaves
        return await spec.run(ctx, call.args, checked=call.args_checked)

    async def tool_call(call: Call) -> dict[str, Any]:
        if call.dry_run is not None:  # a pure check: nothing charged, nothing run
            return call.dry_run
        return await run_tool(call, caller_rec(call))

    async def tool_invoke(call: Call) -> dict[str, Any]:
        if call.dry_run is not None:
            return call.dry_run
        # the capability stage bound call.subject to the named agent (and decided as it)
        subject = table.get(call.subject) if call.subject is not None else None
        return await run_tool(call, subject)

    pipeline.register(method("tool.list", tool_list, operator=True, agent=True))
    pipeline.register(method("tool.invoke", tool_invoke, operator=True))
    pipeline.register(method("tool.call", tool_call, agent=True))
