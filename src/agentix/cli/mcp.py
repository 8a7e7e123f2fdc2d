"""``agentix mcp``: serve the operator's work to MCP clients over stdio (docs/mcp.md)."""

from __future__ import annotations

import click

from agentix.cli.views import EXIT_USAGE, Ctx, fail

__all__ = ["mcp"]


@click.command()
@click.option("--read-only", is_flag=True,
              help="offer only the tools that change nothing (the kernel refuses the rest on this "
                   "connection too)")
@click.pass_obj
def mcp(ctx: Ctx, read_only: bool) -> None:
    """Serve agentix as an MCP server on stdin/stdout (for Claude Desktop/Code and IDEs).

    Calls reach the kernel as the operator's `mcp` face: its state-changing calls are
    audited `by: mcp`. Needs a running kernel (`agentix up`) and the `mcp` extra.
    """
    try:
        from agentix.mcp.server import serve
    except ImportError as err:
        fail(f"the MCP server needs the optional mcp extra ({err.name or err} is missing): "
             "pip install 'agentix[mcp]'", EXIT_USAGE)
    serve(ctx.home, read_only=read_only)
