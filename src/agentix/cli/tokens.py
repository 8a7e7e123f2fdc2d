"""``agentix tokens create/list/revoke``: operator tokens for the HTTP API (docs/http.md).

Each command is a call of the kernel's ``tokens.*`` methods over the operator socket; the
kernel keeps only a hash of each token, so ``create`` is the one time a token is shown.
"""

from __future__ import annotations

import time
from typing import Any

import click

from agentix.cli.onecall import CallRow, Params, command
from agentix.cli.render import line, table

__all__ = ["tokens"]


def _when(ts: float | None) -> str:
    return "never" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


@click.group()
def tokens() -> None:
    """Operator tokens for the HTTP API (`agentix up --http`): viewer or operator role."""


def _created(t: dict[str, Any], p: Params) -> None:
    click.echo(t["token"])
    line(f"created {p['role']} token {p['name']!r} (expires: {_when(t['expires_at'])}); send it as "
         "`Authorization: Bearer TOKEN`. It is not shown again.", "green", err=True)


def _listed(items: list[dict[str, Any]], _: Params) -> None:
    table(["NAME", "ROLE", "STATE", "CREATED", "EXPIRES"],
          [[t["name"], t["role"], t["state"], _when(t["created_at"]), _when(t["expires_at"])] for t in items])


tokens.add_command(command(CallRow(
    "create", "tokens.create", "Create a token named NAME and print it (shown once: the kernel keeps only its hash).",
    [click.Argument(["name"]),
     click.Option(["--role"], type=click.Choice(["viewer", "operator"]), required=True,
                  help="viewer: read methods only; operator: every operator method"),
     click.Option(["--ttl"], default=None, help="expire after this long: seconds, or 30m, 12h, 7d (default: never)")],
    _created)))
tokens.add_command(command(CallRow(
    "list", "tokens.list", "List tokens (names, roles, state; never the secrets).", field="tokens", show=_listed)))
tokens.add_command(command(CallRow(
    "revoke", "tokens.revoke", "Revoke the token NAME: every later request with it gets 401.",
    [click.Argument(["name"])], lambda t, p: line(f"revoked token {p['name']!r}", "red"))))
