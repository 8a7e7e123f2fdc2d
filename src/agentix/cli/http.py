"""``agentix tokens create/list/revoke``: operator tokens for the HTTP API (docs/http.md).

Each command is a call of the kernel's ``tokens.*`` methods over the operator socket; the
kernel keeps only a hash of each token, so ``create`` is the one time a token is shown.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from agentix.cli.render import line, table

__all__ = ["tokens"]


def _dump(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _when(ts: float | None) -> str:
    return "never" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


@click.group()
def tokens() -> None:
    """Operator tokens for the HTTP API (`agentix up --http`): viewer or operator role."""


@tokens.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(["viewer", "operator"]), required=True,
              help="viewer: read methods only; operator: every operator method")
@click.option("--ttl", default=None, help="expire after this long: seconds, or 30m, 12h, 7d (default: never)")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON (for scripts)")
@click.pass_obj
def create(obj: Any, name: str, role: str, ttl: str | None, as_json: bool) -> None:
    """Create a token named NAME and print it (shown once: the kernel keeps only its hash)."""
    t = obj.kernel.call("tokens.create", name=name, role=role, ttl=ttl)
    if as_json:
        return _dump(t)
    click.echo(t["token"])
    line(f"created {role} token {name!r} (expires: {_when(t['expires_at'])}); send it as "
         "`Authorization: Bearer TOKEN`. It is not shown again.", "green", err=True)


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON (for scripts)")
@click.pass_obj
def list_(obj: Any, as_json: bool) -> None:
    """List tokens (names, roles, state; never the secrets)."""
    items = obj.kernel.call("tokens.list")["tokens"]
    if as_json:
        return _dump(items)
    table(["NAME", "ROLE", "STATE", "CREATED", "EXPIRES"],
          [[t["name"], t["role"], t["state"], _when(t["created_at"]), _when(t["expires_at"])] for t in items])


@tokens.command("revoke")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON (for scripts)")
@click.pass_obj
def revoke(obj: Any, name: str, as_json: bool) -> None:
    """Revoke the token NAME: every later request with it gets 401."""
    t = obj.kernel.call("tokens.revoke", name=name)
    if as_json:
        return _dump(t)
    line(f"revoked token {name!r}", "red")
