"""``agentix mcp``: serve the operator's work to MCP clients over stdio, and manage the MCP
servers the operator declared as agent tools (``servers``, ``tools``, ``approve``, ``restart``;
docs/integrations.md). The management commands are calls of the kernel's ``mcp.*`` methods."""

from __future__ import annotations

from typing import Any

import click

from agentix.cli.onecall import CallRow, Params, command
from agentix.cli.render import line, table
from agentix.cli.views import EXIT_USAGE, Ctx, fail

__all__ = ["mcp"]


@click.group(invoke_without_command=True)
@click.option("--read-only", is_flag=True,
              help="offer only the tools that change nothing (the kernel refuses the rest on this "
                   "connection too)")
@click.option("--http", "http", default=None, metavar="HOST:PORT",
              help="serve Streamable HTTP at http://HOST:PORT/mcp instead of stdio, authenticated with "
                   "the HTTP API's tokens (`agentix tokens create NAME --role viewer|operator`)")
@click.option("--allow-remote", is_flag=True, help="with --http: allow a non-loopback address")
@click.pass_context
def mcp(cctx: click.Context, read_only: bool, http: str | None, allow_remote: bool) -> None:
    """Serve agentix as an MCP server on stdin/stdout (for Claude Desktop/Code and IDEs).

    Calls reach the kernel as the operator's `mcp` face: its state-changing calls are
    audited `by: mcp`. Needs a running kernel (`agentix up`) and the `mcp` extra.

    With a subcommand: the MCP servers declared in config.toml ([mcp.servers.NAME]) whose
    tools agents call under `mcp: SERVER/TOOL` grants.
    """
    if cctx.invoked_subcommand is not None:
        return
    ctx: Ctx = cctx.obj
    try:
        from agentix.mcp.server import serve
    except ImportError as err:
        fail(f"the MCP server needs the optional mcp extra ({err.name or err} is missing): "
             "pip install 'agentix[mcp]'", EXIT_USAGE)
    if http is None:
        serve(ctx.home, read_only=read_only)
        return
    if read_only:
        fail("--read-only is for stdio; over HTTP a viewer token gets the read-only tools", EXIT_USAGE)
    import os

    from agentix.mcp.http import parse_address, serve_http
    from agentix.rpc.slow_clients import SlowClientLimits
    from agentix.sdk.errors import InvalidRequest

    try:
        parse_address(http, allow_remote=allow_remote)
        limits = SlowClientLimits.from_env(os.environ)
    except InvalidRequest as err:
        fail(err.message, EXIT_USAGE)
    except ValueError as err:
        fail(str(err), EXIT_USAGE)
    line(f"MCP over Streamable HTTP at http://{http}/mcp (bearer tokens: `agentix tokens create`)", err=True)
    serve_http(ctx.home, http, allow_remote=allow_remote, limits=limits)


def _servers(items: list[dict[str, Any]], _: Params) -> None:
    table(["NAME", "KIND", "STATE", "PID", "STARTS", "CRASHES", "TOOLS", "LAST ERROR"],
          [[s["name"], s["kind"], s["state"], str(s["pid"] or "-"), str(s["starts"]), str(s["crashes"]),
            str(s["tools"]), s["last_error"] or ""] for s in items])


def _tools(items: list[dict[str, Any]], _: Params) -> None:
    rows = []
    for t in items:
        if "error" in t:
            rows.append([t["server"], "-", "error", t["message"]])
        else:
            rows.append([t["server"], t["tool"], t["state"], t["digest"][:19]])
    table(["SERVER", "TOOL", "STATE", "DIGEST"], rows)


def _approved(items: list[dict[str, Any]], _: Params) -> None:
    for a in items:
        if a["changed"]:
            line(f"approved {a['tool']} ({a['digest'][:19]}...)", "green")
        else:
            line(f"{a['tool']} was already approved as listed")


mcp.add_command(command(CallRow(
    "servers", "mcp.servers", "List the declared MCP servers: state, pid, restarts, isolation.",
    field="servers", show=_servers)))
mcp.add_command(command(CallRow(
    "tools", "mcp.tools",
    "List the tools of every declared server (or SERVER's), with their pin state.\n\n"
    "Starts a server that is not running (in its sandbox) to list it. A tool whose state is\n"
    "`changed` or `new` cannot be called until `agentix mcp approve SERVER/TOOL`.",
    [click.Argument(["server"], required=False)], _tools, field="tools")))
mcp.add_command(command(CallRow(
    "approve", "mcp.approve",
    "Approve TOOL (SERVER/TOOL, or SERVER/* for all): pin its current description and schema.",
    [click.Argument(["tool"])], _approved, field="approved")))
mcp.add_command(command(CallRow(
    "restart", "mcp.restart", "Restart SERVER (also clears a `failed` state after too many crashes).",
    [click.Argument(["server"])], field="server",
    show=lambda s, _: line(f"restarted {s['name']} (pid {s['pid']}, {s['tools']} tools)", "green"))))
