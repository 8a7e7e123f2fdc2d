"""``agentix top`` without a terminal: one plain snapshot of ``inference.stats``.

The command itself (and its rich live view) is ``top`` in ``cli/goal.py``; the rows here are
shared by both, so the terminal and the pipe show the same figures, the pipe with full ids.
"""

from __future__ import annotations

from typing import Any

from agentix.cli import render

__all__ = ["HEADERS", "print_plain", "provider_title", "stats_rows"]

HEADERS = ("AGENT", "WEIGHT", "WAITING", "RUNNING", "SERVED", "TOKENS", "SHARE", "MEAN WAIT", "P99 WAIT")


def provider_title(pname: str, p: dict[str, Any]) -> str:
    lim = p.get("limiter") or {}
    return (f"{pname}{' (scripted/simulated)' if p.get('scripted') else ''}: "
            f"queue {p['queue_length']} · in flight {p['in_flight']}/{lim.get('concurrency_cap', '-')} · "
            f"{p['tokens_per_s']:.1f} tokens/s · served {p['served']} · "
            f"fairness {p['fairness']:.3f} · retries {p['retries']} · failures {p['failures']}")


def stats_rows(p: dict[str, Any], names: dict[str, str]) -> list[list[str]]:
    """One row per agent of a provider's snapshot, most tokens first."""
    return [[names.get(a["agent_id"], a["agent_id"]), f"{a['weight']:g}", str(a["waiting"]),
             str(a["running"]), str(a["served"]), f"{a['tokens']:.0f}", f"{a['share']:.1%}",
             f"{a['mean_wait'] * 1000:.0f} ms", f"{a['p99_wait'] * 1000:.0f} ms"]
            for a in sorted(p.get("agents") or [], key=lambda a: -a["tokens"])]


def print_plain(stats: dict[str, Any], names: dict[str, str]) -> None:
    providers = stats.get("providers", {})
    if not providers:
        render.echo("no inference providers configured")
    for pname, p in providers.items():
        render.echo(provider_title(pname, p))
        render.echo(render.columns([list(HEADERS), *stats_rows(p, names)]))
        render.echo()
