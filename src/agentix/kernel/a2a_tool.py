"""The kernel tool ``a2a_call``: an agent sends a message to a remote A2A agent.

- Needs ``network: HOST`` for the URL's host (``core.grants.requests_for_tool``; the method
  table's ``tool.call`` row decides it like ``web_fetch``); the resolved address is a new
  decision before the connection (private/loopback only when a grant names them), and the
  connection is pinned to it (``agentix.tools.a2a_call``).
- A bearer token for the remote agent comes from the vault: ``secret: NAME`` (granted, and
  bound to that host in the vault's config) — the agent never sees it; the result, events and
  audit are redacted.
- The answer — and any error the exchange raises — taints the caller's context with
  ``external_tool:a2a:<url>``: a remote agent's text is text from the world.
- From a context already tainted by web, external-tool or message data the call is refused by
  the default taint policy (the message would carry that data out of the machine).
- Registered only when ``a2a-sdk`` is installed (``pip install agentix[a2a]``).
"""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

from agentix.core.errors import AgentixError, InvalidRequest
from agentix.core.grants import Request
from agentix.kernel.cap_service import CapabilityService
from agentix.kernel.config import KernelConfig
from agentix.kernel.process import ProcessTable
from agentix.tools.base import ToolContext, ToolRegistry, ToolSpec

__all__ = ["SCHEMA", "make_spec", "register"]

SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["url", "message"],
    "properties": {
        "url": {"type": "string", "description": "the remote A2A agent's base URL"},
        "message": {"type": "string", "description": "the text to send"},
        "task_id": {"type": "string", "description": "continue this remote task"},
        "context_id": {"type": "string", "description": "continue this remote conversation"},
        "secret": {"type": "string", "description": "a vault secret sent as the bearer token"},
        "timeout": {"type": "number"}}}


def make_spec(*, caps: CapabilityService, table: ProcessTable, config: KernelConfig) -> ToolSpec:
    """The tool: ``caps`` holds the vault's secrets and the ledger; the caller's record in
    ``table`` is tainted by the answer; ``config.fetch_max_timeout`` caps its timeout."""

    async def a2a_call_tool(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        from agentix.core.grants import check_secret_host
        from agentix.kernel.net_exec import _capped_timeout, network_permits
        from agentix.tools.a2a_call import a2a_call
        from agentix.tools.secrets import redact

        ctx.require_authorization()
        again = ctx.reauthorize
        assert again is not None
        url = args["url"]
        name = args.get("secret")
        headers: dict[str, str] = {}
        used: dict[str, str] = {}
        if name is not None:
            ctx.require_authorization().token_for(Request("secret", name))
            value = caps.secrets.get(name)
            if value is None:
                raise InvalidRequest(f"the vault holds no secret {name!r}", field="secret")
            from urllib.parse import urlsplit

            check_secret_host(name, caps.secret_hosts.get(name), urlsplit(url).hostname or "")
            headers = {"Authorization": f"Bearer {value}"}
            used[name] = value

        permits = network_permits(again)
        timeout = _capped_timeout(args, 60.0, config.fetch_max_timeout, "a2a_call")
        label = f"external_tool:a2a:{url}"
        await caps.ledger.flush()  # the call's charge is durable before the message leaves
        try:
            res = await asyncio.create_task(a2a_call(
                url, args["message"], permits=permits, task_id=args.get("task_id"),
                context_id=args.get("context_id"), headers=headers, timeout=timeout))
        except InvalidRequest:
            raise  # the caller's own argument: no world text in it
        except AgentixError as err:
            raise err.tainted(label) from None
        if ctx.agent_id is not None:
            table.get(ctx.agent_id).taint.add(label)
        ctx.call.taint.add(label)
        return redact(res, {**caps.secrets, **used})

    return ToolSpec("a2a_call", "Send a message to a remote A2A agent (its base URL) the network grants "
                    "allow; returns its answer (tainted external_tool).", SCHEMA, a2a_call_tool)


def register(tools: ToolRegistry, *, caps: CapabilityService, table: ProcessTable,
             config: KernelConfig) -> bool:
    """Register ``a2a_call`` if ``a2a-sdk`` is installed; whether it was."""
    if importlib.util.find_spec("a2a") is None:
        return False
    tools.register(make_spec(caps=caps, table=table, config=config))
    return True
