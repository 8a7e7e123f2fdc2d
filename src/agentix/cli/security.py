"""``agentix approvals|approve|deny|caps``: the operator's side of approvals and capabilities.

Added to the main group by ``cli/main.py``; uses only the SDK.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from agentix.cli.onecall import JSON_HELP, CallRow, Params, command
from agentix.cli.render import line, table

__all__ = ["COMMANDS", "approvals", "approve", "caps", "deny"]


def _when(a: dict[str, Any], now: float) -> str:
    if a["state"] == "pending":
        return f"expires in {max(0, a['deadline'] - now):.0f}s"
    by = f" by {a['answered_by']}" if a.get("answered_by") else ""
    if a["state"] == "expired":
        return "EXPIRED (no answer)"
    return f"ANSWERED{by}"  # granted, denied, or granted and used


def _approvals(items: list[dict[str, Any]], p: Params) -> None:
    if not items:
        line("no approval requests" + ("" if p["show_all"] else " pending"))
        return
    now = time.time()
    table(["ID", "AGENT", "TOOL", "STATE", "EXPIRES IN" if not p["show_all"] else "WHEN", "ARGS"],
          [[a["id"], str(a["agent"]), a["tool"], a["state"], _when(a, now),
            json.dumps(a.get("args"), sort_keys=True)] for a in items], keep=(0, 1))


def _tokens(toks: list[dict[str, Any]], _: Params) -> None:
    table(["TOKEN", "HOLDER", "PARENT", "LEFT", "STATE", "GRANTS"],
          [[t["id"], t["holder"], t["parent_id"] or "-",
            "unlimited" if t["remaining"] is None else str(t["remaining"]),
            ("revoked", "red") if t["revoked"] else "live", ", ".join(t["grants"])] for t in toks],
          keep=(0, 1, 2))


approvals = command(CallRow(
    "approvals", lambda k, p: k.approvals(all=p["show_all"]),
    "List approval requests waiting for an answer (--all: every one).",
    [click.Option(["--all", "show_all"], is_flag=True, help="answered and expired ones too")], _approvals))
approve = command(CallRow(
    "approve", lambda k, p: k.approve(p["approval_id"], p["reason"]),
    "Approve one pending action (exactly as shown by `agentix approvals`).",
    [click.Argument(["approval_id"]), click.Option(["--reason"], default=None, help="recorded with the answer")],
    lambda a, _: line(f"approved {a['id']} ({a['tool']} for {a['agent']})", "green")))
deny = command(CallRow(
    "deny", lambda k, p: k.deny(p["approval_id"], p["reason"]),
    "Deny one pending action; the agent's call fails with the reason.",
    [click.Argument(["approval_id"]), click.Option(["--reason"], default=None, help="told to the agent")],
    lambda a, _: line(f"denied {a['id']} ({a['tool']} for {a['agent']})", "red")))


@click.group()
def caps() -> None:
    """Capability tokens held by agents."""


caps.add_command(command(CallRow(
    "ls", lambda k, p: k.caps(p["agent"]),
    "List tokens (of one agent, or of all) with the full ids `caps revoke` takes.",
    [click.Argument(["agent"], required=False)], _tokens)))


@caps.command("revoke")
@click.argument("token_ids", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.pass_obj
def caps_revoke(obj: Any, token_ids: tuple[str, ...], as_json: bool) -> None:
    """Revoke tokens (ids as `caps ls` shows them) and every token derived from each.

    Acts on each TOKEN_ID and reports each; exits non-zero if any failed."""
    from agentix.cli.views import for_each

    def show(r: dict[str, Any]) -> None:
        line(f"revoked {r['revoked']}" + (f" and {len(r['derived'])} derived" if r["derived"] else ""))

    for_each(token_ids, obj.kernel.revoke, show, as_json)


COMMANDS = [approvals, approve, deny, caps]
