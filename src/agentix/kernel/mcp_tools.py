"""MCP servers as agent tools: declared by the operator, run sandboxed, called as kernel tools.

The parts, by job (each module's docstring says more)::

    mcp_config.py   the declarations: [mcp.servers.NAME] in config.toml, validated at start
    mcp_stdio.py    a local server's wire: stdio framing on a socketpair, with its bounds
    mcp_remote.py   a remote server's wire: Streamable HTTP, with the same bounds
    mcp_server.py   one server: process lifecycle (sandboxed spawn, reap, backoff, failed),
                    its session, its tool listing, one call
    mcp_pins.py     the pins: what the operator approved of each tool, in the store
    mcp_tools.py    this module: the service the registry asks for ``mcp__*`` tools (pin
                    checks, argument checks, taint) and the ``mcp.*`` operator methods

Rules:

- Agents call a server's tools as kernel tools named ``mcp__SERVER__TOOL`` through ``tool.call``:
  the one decision needs ``mcp: SERVER/TOOL`` (core/grants.py); each call is charged, audited
  (``tool.invoked``/``tool.result``) and its result (and any error carrying the server's text)
  taints the caller's context ``external_tool:mcp:SERVER/TOOL``.
- Pinning (core/mcp_pinning.py): a tool may be called only while its description and input schema hash
  to what was approved; a changed tool is disabled (``capability_denied``, reason
  ``mcp_tool_changed``) until ``agentix mcp approve SERVER/TOOL``. Pins live in the store
  (``mcp_pins``, schema v7). Descriptions are offered to models only wrapped as untrusted.
- Bad servers: a line that is not JSON-RPC, a message over ``max_message_bytes``, more than
  ``max_notifications_per_s`` notifications in a second, or an exit stop the server; calls in
  flight get ``tool_error`` naming what happened (``mcp_server.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agentix.core.errors import (
    AgentixError,
    CapabilityDenied,
    InvalidRequest,
    NotFound,
    ToolError,
)
from agentix.core.grants import MCP_TOOL_PREFIX, MCP_TOOL_RE, mcp_tool_name
from agentix.core.mcp_pinning import Pin, pin_state, untrusted_description
from agentix.kernel.mcp_config import McpServerConfig, load_mcp_config
from agentix.kernel.mcp_pins import PinStore
from agentix.kernel.mcp_server import ListedTool, McpServer
from agentix.tools.base import ToolContext, ToolSpec

if TYPE_CHECKING:
    from agentix.kernel.dispatch import Call, Pipeline
    from agentix.kernel.mcp_host import McpHost
    from agentix.tools.base import ToolRegistry

__all__ = ["ListedTool", "McpServerConfig", "McpTools", "load_mcp_config", "register"]

log = logging.getLogger(__name__)


class McpTools:
    """The declared servers, their pins, and the ``mcp__*`` tools they provide to the registry."""

    def __init__(self, k: McpHost, servers: dict[str, McpServerConfig]) -> None:
        self.k = k  # what it uses of the kernel (kernel/mcp_host.py)
        home = os.path.realpath(k.home.root)
        for name, cfg in servers.items():
            for p in cfg.read_only_paths:
                real = os.path.realpath(p)
                if os.path.commonpath([real, home]) in (real, home):
                    raise InvalidRequest(
                        f"[mcp.servers.{name}] read_only_paths: {p} would show the server the kernel's own "
                        f"state ({home}: keys, database, secrets, workspaces); name a directory outside it",
                        field=f"mcp.servers.{name}.read_only_paths")
        self.servers = {name: McpServer(name, cfg, k, on_listed=self._listed) for name, cfg in servers.items()}
        self.pins = PinStore(k.db)
        self._validators: dict[str, Callable[[dict[str, Any]], None]] = {}

    def server(self, name: str) -> McpServer:
        try:
            return self.servers[name]
        except KeyError:
            raise NotFound(f"no MCP server named {name!r} is declared; add [mcp.servers.{name}] to "
                           "config.toml (`agentix mcp servers` lists them)", server=name) from None

    # -- pins ------------------------------------------------------------------------
    def state_of(self, srv: McpServer, t: ListedTool) -> str:
        """The tool's pin state: ``approved``, ``changed`` or ``new`` (core/mcp_pinning.py)."""
        return pin_state(self.pins.get(srv.name, t.name), t.digest)

    async def _listed(self, srv: McpServer, old: dict[str, ListedTool], why: str) -> None:
        """A server listed its tools. At a start, ``approve = "first_use"`` pins every tool of
        the server's FIRST listing (no pin of it yet: declaring the server approved what it
        offers then); a tool that appears later, at a restart or mid-session, waits unapproved
        for ``agentix mcp approve``, as under ``approve = "operator"``: a server adding tools
        after its approval is what a rug pull looks like too. A re-listing while it runs
        (``list_changed``, an operator's look) is audited when it differs from the last:
        ``mcp.tools_changed`` names each changed tool (disabled unless it matches its pin),
        each added one (new: unapproved) and each removed one. Nothing here pins a changed tool."""
        if why == "start":
            if srv.cfg.approve == "first_use" and not self.pins.of_server(srv.name):
                for t in list(srv.tools.values()):
                    await self._pin(srv, t, "first_use")
            return
        new = srv.tools
        changed = [{"tool": n, "was": old[n].digest, "now": t.digest, "state": self.state_of(srv, t)}
                   for n, t in sorted(new.items()) if n in old and old[n].digest != t.digest]
        added = [{"tool": n, "digest": t.digest, "state": self.state_of(srv, t)}
                 for n, t in sorted(new.items()) if n not in old]
        removed = sorted(set(old) - set(new))
        if changed or added or removed:
            await self.k.events.record("mcp.tools_changed", None, {
                "server": srv.name, "why": why, "changed": changed, "added": added, "removed": removed})

    async def _pin(self, srv: McpServer, t: ListedTool, by: str) -> Pin:
        old = self.pins.get(srv.name, t.name)
        pin = Pin(srv.name, t.name, t.digest, by, time.time())
        await self.pins.put(pin, t.description, t.input_schema)
        await self.k.events.record("mcp.tool_pinned", None, {
            "server": srv.name, "tool": t.name, "digest": t.digest, "by": by,
            "previous": old.digest if old is not None else None})
        return pin

    async def approve(self, pattern: str, by: str) -> list[dict[str, Any]]:
        server, sep, tool = pattern.partition("/")
        if not sep or not tool:
            raise InvalidRequest(f"{pattern!r}: name SERVER/TOOL (or SERVER/* for all its tools)", field="tool")
        srv = self.server(server)
        await self._fresh(srv)
        names = sorted(srv.tools) if tool == "*" else [tool]
        out = []
        for n in names:
            t = srv.tools.get(n)
            if t is None:
                raise NotFound(f"MCP server {server} lists no tool {n!r} (`agentix mcp tools {server}`)",
                               server=server, tool=n)
            pin = self.pins.get(server, n)
            if pin is not None and pin.digest == t.digest:
                out.append({"tool": f"{server}/{n}", "digest": t.digest, "changed": False})
                continue
            await self._pin(srv, t, by)
            out.append({"tool": f"{server}/{n}", "digest": t.digest, "changed": True,
                        "previous": pin.digest if pin is not None else None})
        return out

    async def _fresh(self, srv: McpServer) -> None:
        """What the server lists NOW, for the operator: a running server is re-listed (a
        description changed without a list_changed is seen here), a stopped one started."""
        if srv.state == "running":
            await srv.relist("operator")
        await srv.ensure()

    async def list_tools(self, server: str | None) -> list[dict[str, Any]]:
        out = []
        for srv in ([self.server(server)] if server else list(self.servers.values())):
            try:
                await self._fresh(srv)
            except AgentixError as err:
                out.append({"server": srv.name, "error": err.code, "message": err.message})
                continue
            for t in sorted(srv.tools.values(), key=lambda t: t.name):
                st = self.state_of(srv, t)
                pin = self.pins.get(srv.name, t.name)
                out.append({"server": srv.name, "tool": t.name, "name": mcp_tool_name(srv.name, t.name),
                            "state": st, "digest": t.digest,
                            "pinned": pin.digest if pin is not None else None,
                            "approved_by": pin.approved_by if pin is not None and st == "approved" else None,
                            "description": t.description, "input_schema": t.input_schema})
        return out

    async def prepare_for(self, agent_id: str) -> None:
        """Start (first use) the servers an agent's ``mcp:`` grants name, so that its tool list
        shows their tools; a server that cannot start is left out (its calls say why)."""
        wanted: list[McpServer] = []
        toks = self.k.caps.tokens_of(agent_id) if self.servers else []
        now = self.k.clock.monotonic()
        for srv in self.servers.values():
            # a crashed server is started again only once its backoff is over (mcp_server.py):
            # a listing neither waits for it nor restarts it sooner (a server that crashes at
            # start costs one start per backoff, not one per tool.list)
            if srv.state in ("running", "failed") or srv.state == "backoff" and (
                    srv.tools or now < srv.next_start_at):
                continue
            if any(g.value == "*" or g.value.startswith(srv.name + "/")
                   for t in toks for g in t.grants.of_kind("mcp")):
                wanted.append(srv)
        if not wanted:
            return

        async def one(srv: McpServer) -> None:
            try:
                await srv.ensure()  # first_use: its first listing is pinned as the server starts
            except AgentixError as err:
                log.warning("MCP server %s could not start for %s: %s", srv.name, agent_id, err.message)

        await asyncio.gather(*(one(s) for s in wanted))

    # -- the registry's view --------------------------------------------------------------
    def _split(self, name: str) -> tuple[McpServer, str] | None:
        server, sep, tool = name[len(MCP_TOOL_PREFIX):].partition("__")
        if not sep or server not in self.servers or not MCP_TOOL_RE.match(tool):
            return None
        return self.servers[server], tool

    def spec(self, name: str) -> ToolSpec | None:
        """The kernel tool ``mcp__SERVER__TOOL`` of a declared server (its arguments are checked
        against the approved schema when it runs: the server may not be started yet)."""
        got = self._split(name)
        if got is None:
            return None
        srv, tool = got
        # the description the operator approved (its pin), never what the server lists now: a
        # changed description reaches no model, whatever path asks for the spec
        approved = self.pins.approved.get((srv.name, tool))
        desc = untrusted_description(srv.name, tool, approved[0] if approved else None)
        return ToolSpec(name, desc, {"type": "object"}, self._handler(srv, tool),
                        durability=srv.cfg.durability(tool))

    def specs(self) -> list[ToolSpec]:
        """The approved tools: of a running server, those whose listing matches their pin; of a
        server not started yet, what its pins approved (a first_use server never started has
        none yet: ``agentix mcp tools`` starts and pins it)."""
        out = []
        for srv in self.servers.values():
            if srv.tools:
                shown = [(t.name, t.description, t.input_schema) for t in srv.tools.values()
                         if (pin := self.pins.get(srv.name, t.name)) is not None and pin.digest == t.digest]
            else:
                shown = [(tool, d, schema) for (server, tool), (d, schema) in self.pins.approved.items()
                         if server == srv.name]
            for name, desc, schema in shown:
                out.append(ToolSpec(mcp_tool_name(srv.name, name), untrusted_description(srv.name, name, desc),
                                    schema, self._handler(srv, name), durability=srv.cfg.durability(name)))
        return out

    def _handler(self, srv: McpServer, tool: str) -> Any:
        async def run(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
            return await self.call(ctx, srv, tool, args)
        return run

    async def call(self, ctx: ToolContext, srv: McpServer, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        """One call of the server's tool. Every error that leaves here once the server has been
        asked anything is labelled like a result: a start failure quotes the server's own line, a
        schema error the server's schema (``const``, ``enum``, ``pattern``), a call error its
        JSON-RPC message. Only the kernel's own pin refusals (no server text) are not."""
        label = f"external_tool:mcp:{srv.name}/{tool}"
        try:
            return await self._call(ctx, srv, tool, args, label)
        except CapabilityDenied as err:
            if err.data.get("reason") in ("mcp_tool_changed", "mcp_tool_unapproved"):
                raise
            raise err.tainted(label) from None
        except AgentixError as err:
            raise err.tainted(label) from None

    async def _call(self, ctx: ToolContext, srv: McpServer, tool: str, args: dict[str, Any],
                    label: str) -> dict[str, Any]:
        await srv.ensure()
        t = srv.tools.get(tool)
        if t is None:
            raise NotFound(f"MCP server {srv.name} lists no tool {tool!r} (`agentix mcp tools {srv.name}`)",
                           server=srv.name, tool=tool)
        st = self.state_of(srv, t)
        if st != "approved":
            pin = self.pins.get(srv.name, tool)
            if st == "changed":
                assert pin is not None
                await self.k.events.record("mcp.tool_changed", ctx.agent_id, {
                    "server": srv.name, "tool": tool, "pinned": pin.digest, "now": t.digest})
                raise CapabilityDenied(
                    f"MCP tool {srv.name}/{tool} changed its description or input schema since it was "
                    f"approved ({pin.digest[:19]}... -> {t.digest[:19]}...); it is disabled until the operator "
                    f"re-approves it: `agentix mcp approve {srv.name}/{tool}`",
                    reason="mcp_tool_changed", server=srv.name, tool=tool, pinned=pin.digest, now=t.digest)
            why = (f"server {srv.name} has approve = \"operator\"" if srv.cfg.approve == "operator" else
                   "it appeared after the server's first listing, which is all that approve = \"first_use\" "
                   "approves")
            raise CapabilityDenied(
                f"MCP tool {srv.name}/{tool} has not been approved ({why}): "
                f"`agentix mcp approve {srv.name}/{tool}`",
                reason="mcp_tool_unapproved", server=srv.name, tool=tool, digest=t.digest)
        self._validator(srv.name, t)(args)
        res = await srv.call(tool, args, srv.cfg.call_timeout)  # errors: labelled by call()
        self._taint(ctx, label)
        return _result(srv.name, tool, res)

    def _validator(self, server: str, t: ListedTool) -> Callable[[dict[str, Any]], None]:
        """The argument check for the listed (approved) schema, built once per digest."""
        v = self._validators.get(t.digest)
        if v is None:
            v = _schema_validator(server, t.name, t.input_schema)
            if len(self._validators) > 4096:
                self._validators.clear()
            self._validators[t.digest] = v
        return v

    def _taint(self, ctx: ToolContext, label: str) -> None:
        if ctx.agent_id is not None:
            self.k.table.get(ctx.agent_id).taint.add(label)
        ctx.call.taint.add(label)

    def statistics(self) -> list[dict[str, Any]]:
        return [s.describe() for s in self.servers.values()]

    async def close(self) -> None:
        await asyncio.gather(*(s.stop() for s in self.servers.values() if s.state != "stopped"),
                             return_exceptions=True)


def _schema_validator(server: str, tool: str, schema: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    import jsonschema

    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
    except jsonschema.SchemaError as err:
        msg = (f"MCP tool {server}/{tool} has an input schema that is not valid JSON Schema: "
               f"{err.message[:200]}")

        def broken(args: dict[str, Any]) -> None:
            raise ToolError(msg, reason="mcp_bad_schema", tool=f"{server}/{tool}")
        return broken
    validator = cls(schema)

    def check(args: dict[str, Any]) -> None:
        err = jsonschema.exceptions.best_match(validator.iter_errors(args))
        if err is not None:
            where = "/".join(str(p) for p in err.absolute_path) or "(arguments)"
            raise InvalidRequest(f"MCP tool {server}/{tool}: {where}: {err.message[:300]}",
                                 field=where, tool=f"{server}/{tool}")
    return check


def _result(server: str, tool: str, res: Any) -> dict[str, Any]:
    content = [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in res.content]
    text = "\n".join(c.get("text", "") for c in content if c.get("type") == "text")
    return {"server": server, "tool": tool, "is_error": bool(res.is_error), "text": text,
            "content": content, "structured_content": res.structured_content}


# ---------------------------------------------------------------------------- methods
def register(pipeline: Pipeline, registry: ToolRegistry, host: McpHost) -> McpTools:
    """Read the declarations, add the ``mcp__*`` tools to ``registry`` and the ``mcp.*``
    operator methods to ``pipeline`` (rows in kernel/methods.py)."""
    from agentix.kernel.methods import method

    svc = McpTools(host, load_mcp_config(host.home.root))
    registry.add_provider(MCP_TOOL_PREFIX, svc)

    async def servers(call: Call) -> dict[str, Any]:
        return {"servers": svc.statistics()}

    async def tools(call: Call) -> dict[str, Any]:
        server = call.params.get("server")
        if server is not None and not isinstance(server, str):
            raise InvalidRequest('"server" must be a server name', field="server")
        return {"tools": await svc.list_tools(server)}

    async def approve(call: Call) -> dict[str, Any]:
        tool = call.params.get("tool")
        if not isinstance(tool, str):
            raise InvalidRequest('"tool" must be SERVER/TOOL or SERVER/*', field="tool")
        return {"approved": await svc.approve(tool, call.caller.label())}

    async def restart(call: Call) -> dict[str, Any]:
        name = call.params.get("server")
        if not isinstance(name, str):
            raise InvalidRequest('"server" must be a server name', field="server")
        srv = svc.server(name)
        await srv.stop()
        srv.crashes, srv.next_start_at, srv.last_error = 0, 0.0, None
        await srv.ensure()
        return {"server": srv.describe()}

    for name, fn in (("mcp.servers", servers), ("mcp.tools", tools), ("mcp.approve", approve),
                     ("mcp.restart", restart)):
        pipeline.register(method(name, fn, operator=True))
    return svc
