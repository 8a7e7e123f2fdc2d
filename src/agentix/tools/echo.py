"""echo: returns its arguments. The cheapest checked system call (used by benchmarks)."""

from __future__ import annotations

from typing import Any

from agentix.tools.base import ToolContext, ToolSpec

SPEC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"message": {"type": ["string", "object", "array", "number", "boolean", "null"]}},
}


async def echo(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    return {"echo": args.get("message")}


SPEC = ToolSpec("echo", "Return the message unchanged.", SPEC_SCHEMA, echo, durability="no_effect")
