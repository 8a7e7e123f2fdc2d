"""``agentix snapshot AGENT``, ``agentix restore SNAP``, ``agentix fork AGENT`` (docs/packages.md,
"Snapshots"). Each is one call of the kernel's ``snapshot.*`` methods; snapshots are pushed,
pulled, signed, listed and removed with the package commands (``agentix push/pull/sign``,
``agentix packages ls/inspect/rm``)."""

from __future__ import annotations

from typing import Any

import click

from agentix.cli import render
from agentix.cli.views import dump_json, kernel_of

__all__ = ["COMMANDS"]


def _grants(grant: tuple[str, ...]) -> list[str] | None:
    return list(grant) if grant else None


def _show(r: dict[str, Any], as_json: bool, verb: str) -> None:
    if as_json:
        dump_json(r)
        return
    grants = [s for g in r["grants"] for s in g["grants"]]
    render.console().print(f"[green]{verb}[/] {render.markup_safe(r['ref'])} as {render.markup_safe(r['name'])} ({r['agent_id']}); "
              "grants: " + (render.markup_safe(", ".join(grants)) or "nothing")
              + (f"; taint: {render.markup_safe(', '.join(r['taint']))}" if r["taint"] else ""))
    if r.get("dropped_expired"):
        render.console().print(f"[yellow]{len(r['dropped_expired'])} expired grant group(s) not restored[/]")
    if r.get("dropped_exhausted"):
        render.console().print(f"[yellow]{len(r['dropped_exhausted'])} limited grant group(s) not restored: earlier "
                               "restores of this snapshot were given its invocations (--reissue-invocations "
                               "mints them again)[/]")


@click.command()
@click.argument("agent")
@click.option("--tag", "-t", help="NAME:TAG for the snapshot (default snapshots/AGENT:snap-<digest>)")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.pass_context
def snapshot(ctx: click.Context, agent: str, tag: str | None, as_json: bool) -> None:
    """Freeze AGENT, write a content-addressed snapshot of its state, resume it."""
    r = kernel_of(ctx).call("snapshot.create", agent=agent, tag=tag)
    if as_json:
        dump_json(r)
        return
    render.console().print(f"[green]snapshot[/] {r['ref']} [bold]{r['digest']}[/]")
    if r["skipped"]:
        # names from the agent's workspace: shown literally (no markup, no escape sequence)
        render.console().print("[yellow]skipped (not regular files or directories):[/] " + render.markup_safe(", ".join(r["skipped"])))


@click.command()
@click.argument("snap")
@click.option("--grant", "-g", multiple=True,
              help="restore with only this grant (repeatable; each must be covered by a recorded one)")
@click.option("--accept-all", is_flag=True,
              help="a snapshot this kernel did not make (pulled) gets every grant it records")
@click.option("--name", help="the new agent's name (default: the snapshot's, or NAME-2, …)")
@click.option("--reissue-invocations", is_flag=True,
              help="mint the recorded invocation counts again even if earlier restores used them (audited)")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.pass_context
def restore(ctx: click.Context, snap: str, grant: tuple[str, ...], accept_all: bool, name: str | None,
            reissue_invocations: bool, as_json: bool) -> None:
    """Start a NEW agent from snapshot SNAP (NAME:TAG, NAME@sha256:…, or sha256:…)."""
    r = kernel_of(ctx).call("snapshot.restore", ref=snap, grants=_grants(grant), name=name,
                          accept_all=accept_all or None, reissue_invocations=reissue_invocations or None)
    _show(r, as_json, "restored")


@click.command()
@click.argument("agent")
@click.option("--grant", "-g", multiple=True,
              help="the fork's grant (repeatable; narrower than AGENT's, never wider)")
@click.option("--name", help="the fork's name")
@click.option("--tag", "-t", help="NAME:TAG for the fork's snapshot")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.pass_context
def fork(ctx: click.Context, agent: str, grant: tuple[str, ...], name: str | None, tag: str | None,
         as_json: bool) -> None:
    """Snapshot AGENT and start a copy of it, with narrower grants if given."""
    r = kernel_of(ctx).call("snapshot.fork", agent=agent, grants=_grants(grant), name=name, tag=tag)
    _show(r, as_json, "forked")


COMMANDS = [snapshot, restore, fork]
