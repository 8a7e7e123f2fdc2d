"""``agentix top``: the inference scheduler's ``inference.stats``, per provider and per agent.

On a terminal it refreshes in place (rich Live); piped, or with ``--once``, it prints one
snapshot as plain columns with full agent ids; ``--json`` prints the raw snapshot.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from agentix.cli import render

__all__ = ["render_stats", "stats_rows", "top"]

HEADERS = ("AGENT", "WEIGHT", "WAITING", "RUNNING", "SERVED", "TOKENS", "SHARE", "MEAN WAIT", "P99 WAIT")


def provider_title(pname: str, p: dict[str, Any]) -> str:
    lim = p.get("limiter") or {}
    return (f"{pname}{' (scripted/simulated)' if p.get('scripted') else ''}: "
            f"queue {p['queue_length']} · in flight {p['in_flight']}/{lim.get('concurrency_cap', '-')} · "
            f"{p['tokens_per_s']:.1f} tokens/s · served {p['served']} · "
            f"fairness {p['fairness']:.3f} · retries {p['retries']} · failures {p['failures']}")


def stats_rows(p: dict[str, Any], names: dict[str, str]) -> list[list[str]]:
    return [[names.get(a["agent_id"], a["agent_id"]), f"{a['weight']:g}", str(a["waiting"]),
             str(a["running"]), str(a["served"]), f"{a['tokens']:.0f}", f"{a['share']:.1%}",
             f"{a['mean_wait'] * 1000:.0f} ms", f"{a['p99_wait'] * 1000:.0f} ms"]
            for a in sorted(p.get("agents") or [], key=lambda a: -a["tokens"])]


def render_stats(stats: dict[str, Any], names: dict[str, str] | None = None) -> Any:
    """One rich table per provider of an ``inference.stats`` snapshot (for a terminal)."""
    from rich.console import Group
    from rich.table import Table

    names = names or {}
    parts = []
    for pname, p in stats.get("providers", {}).items():
        t = Table(title=provider_title(pname, p))
        for i, col in enumerate(HEADERS):
            t.add_column(col.lower(), justify="right", no_wrap=i == 0)
        for row in stats_rows(p, names):
            t.add_row(*row)
        parts.append(t)
    return Group(*parts)


def print_plain(stats: dict[str, Any], names: dict[str, str]) -> None:
    providers = stats.get("providers", {})
    if not providers:
        click.echo("no inference providers configured")
    for pname, p in providers.items():
        click.echo(provider_title(pname, p))
        click.echo(render.columns([list(HEADERS), *stats_rows(p, names)]))
        click.echo()


@click.command()
@click.option("--interval", default=1.0, show_default=True, help="seconds between refreshes")
@click.option("--once", is_flag=True, help="print one snapshot and exit (the default when piped)")
@click.option("--json", "as_json", is_flag=True, help="print one snapshot as JSON and exit")
@click.pass_obj
def top(obj: Any, interval: float, once: bool, as_json: bool) -> None:
    """Live view of the inference scheduler: queues, waits, shares, tokens/s."""
    k = obj.kernel
    if as_json:
        click.echo(json.dumps(k.inference_stats(), indent=2, default=str))
        return

    def names() -> dict[str, str]:
        return {a.agent_id: f"{a.name} ({a.agent_id})" for a in k.list(all=True)}

    if once or not render.is_tty():
        print_plain(k.inference_stats(), names())
        return
    from rich.live import Live

    console = render.console()
    try:
        with Live(render_stats(k.inference_stats(), names()), console=console, refresh_per_second=4) as live:
            while True:
                time.sleep(max(0.1, interval))
                live.update(render_stats(k.inference_stats(), names()))
    except KeyboardInterrupt:
        sys.exit(0)
