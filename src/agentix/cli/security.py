"""``agentix approvals|approve|deny|caps``: the operator's side of approvals and capabilities.

Added to the main group by ``cli/main.py``; uses only the SDK.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click
from rich.console import Console
from rich.table import Table

__all__ = ["COMMANDS"]

out = Console()


def _dump(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


@click.command()
@click.option("--all", "show_all", is_flag=True, help="answered ones too")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def approvals(obj: Any, show_all: bool, as_json: bool) -> None:
    """List approval requests waiting for an answer."""
    items = obj.kernel.approvals(all=show_all)
    if as_json:
        return _dump(items)
    if not items:
        out.print("no approval requests" + ("" if show_all else " pending"))
        return
    t = Table("ID", "AGENT", "TOOL", "ARGS", "STATE", "EXPIRES IN", box=None)
    now = time.time()
    for a in items:
        args = json.dumps(a.get("args"), sort_keys=True)
        t.add_row(a["id"], str(a["agent"]), a["tool"], args if len(args) < 80 else args[:77] + "...",
                  a["state"], f"{max(0, a['deadline'] - now):.0f}s")
    out.print(t)


@click.command()
@click.argument("approval_id")
@click.option("--reason", default=None, help="recorded with the answer")
@click.pass_obj
def approve(obj: Any, approval_id: str, reason: str | None) -> None:
    """Approve one pending action (exactly as shown by `agentix approvals`)."""
    a = obj.kernel.approve(approval_id, reason)
    out.print(f"[green]approved[/] {a['id']} ({a['tool']} for {a['agent']})")


@click.command()
@click.argument("approval_id")
@click.option("--reason", default=None, help="told to the agent")
@click.pass_obj
def deny(obj: Any, approval_id: str, reason: str | None) -> None:
    """Deny one pending action; the agent's call fails with the reason."""
    a = obj.kernel.deny(approval_id, reason)
    out.print(f"[red]denied[/] {a['id']} ({a['tool']} for {a['agent']})")


@click.group()
def caps() -> None:
    """Capability tokens held by agents."""


@caps.command("ls")
@click.argument("agent", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def caps_ls(obj: Any, agent: str | None, as_json: bool) -> None:
    """List tokens (of one agent, or of all)."""
    toks = obj.kernel.caps(agent)
    if as_json:
        return _dump(toks)
    t = Table("TOKEN", "HOLDER", "PARENT", "GRANTS", "LEFT", "STATE", box=None)
    for tok in toks:
        t.add_row(tok["id"][:16], tok["holder"], (tok["parent_id"] or "-")[:16], ", ".join(tok["grants"]),
                  "∞" if tok["remaining"] is None else str(tok["remaining"]),
                  "[red]revoked[/]" if tok["revoked"] else "live")
    out.print(t)


@caps.command("revoke")
@click.argument("token_id")
@click.pass_obj
def caps_revoke(obj: Any, token_id: str) -> None:
    """Revoke a token and every token derived from it."""
    r = obj.kernel.revoke(token_id)
    out.print(f"revoked {r['revoked']}" + (f" and {len(r['derived'])} derived" if r["derived"] else ""))


COMMANDS = [approvals, approve, deny, caps]
