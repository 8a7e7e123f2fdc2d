"""MCP servers as agent tools, part 4: the pins (what the operator approved of each tool).

The decision is pure (``core/mcp_pinning.py``: a tool's digest against its pin: ``approved``,
``changed`` or ``new``); here is where the pins are kept: in memory, and durable in the store
(table ``mcp_pins``, schema v7), with what each pin approved (description, input schema) so that
a server not started yet can be offered to models in the words the operator approved.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentix.core.mcp_pinning import Pin

if TYPE_CHECKING:
    from agentix.store.db import Database

__all__ = ["PinStore"]


class PinStore:
    """The approved digests, in memory and durable in the store (``mcp_pins``)."""

    def __init__(self, db: Database | None) -> None:
        self.db = db
        self.pins: dict[tuple[str, str], Pin] = {}
        #: what each pin approved (description, input schema): offered before the server starts
        self.approved: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        if self.db is not None:
            import orjson

            for r in self.db.reader().execute(
                    "SELECT server, tool, digest, approved_by, approved_at, description, input_schema "
                    "FROM mcp_pins").fetchall():
                self.pins[(r[0], r[1])] = Pin(r[0], r[1], r[2], r[3], r[4])
                try:
                    self.approved[(r[0], r[1])] = (r[5], orjson.loads(r[6]))
                except orjson.JSONDecodeError:
                    pass

    def get(self, server: str, tool: str) -> Pin | None:
        return self.pins.get((server, tool))

    def of_server(self, server: str) -> list[Pin]:
        return [p for (s, _), p in self.pins.items() if s == server]

    async def put(self, pin: Pin, description: str | None, schema: Any) -> None:
        if self.db is not None:
            import orjson

            def op(txn: Any) -> None:
                txn.conn.execute(
                    "INSERT OR REPLACE INTO mcp_pins VALUES (?,?,?,?,?,?,?)",
                    (pin.server, pin.tool, pin.digest, description or "", orjson.dumps(schema).decode(),
                     pin.approved_by, pin.approved_at))

            await self.db.write(op)
        self.pins[(pin.server, pin.tool)] = pin
        self.approved[(pin.server, pin.tool)] = (description or "", schema)

