"""``agentix run --goal`` and ``agentix top``. Built on the SDK only.

``run --goal "…" [--output DIR] [MANIFEST]`` submits the goal (``agent.submit_goal``),
streams what the goal's agents do as it happens (spawns with their capabilities, tool
calls, denials, plan and wave progress, exits — read from ``events.tail`` with a wait),
and ends with one row per agent: tokens, cost, time and outcome (from the kernel's
``usage.reported`` and ``agent.exited`` events and the orchestrator's summary). The
kernel copies the orchestrator's ``output/`` to ``--output`` when it exits.

The model the goal runs on (``provider:model``) is printed first, with a notice when it is
scripted or a tiny local model (what it can and cannot do). While agents run and nothing
else was printed for ``PROGRESS_EVERY`` seconds, a progress line says, per live agent of
the goal, how long it has run, its tool calls and model calls so far, and whether it is
waiting for the model, thinking or running tools (from ``inference.stats``). Denials
counted are refusals only (``capability.denied``, ``call.refused``, ``taint.violation``,
``approval.denied``/``expired``), never grants or revocations.

Exit status: 0 when the orchestrator completed every subtask, 1 otherwise (partial,
error, crash), 5 on ``--timeout``.

``top`` shows ``inference.stats`` live: per provider queue length, in-flight requests,
tokens/s, fairness; per agent weight, waits, served requests and share.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from rich.console import Console, Group
from rich.table import Table

from agentix.cli.render import markup_safe as escape  # markup escaped and control characters shown
from agentix.sdk import Kernel


__all__ = ["DENIAL_KINDS", "GoalWatch", "model_line", "render_stats", "run_goal", "top"]

EVENT_LIMIT = 10_000
PROGRESS_EVERY = 10.0
# refusals; capability.granted / revoked / delegated are not denials
DENIAL_KINDS = frozenset({"capability.denied", "call.refused", "taint.violation", "approval.denied",
                          "approval.expired"})


@dataclass
class _Agent:
    agent_id: str
    name: str
    parent: str | None
    capabilities: list[str] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0
    denied: int = 0
    runtime_s: float | None = None
    reason: str | None = None
    started: float = 0.0
    thinks: int = 0
    model: str | None = None


class GoalWatch:
    """Follows the events of one goal's agent tree; renders lines as they arrive."""

    def __init__(self, root: str, name: str) -> None:
        self.root = root
        self.agents: dict[str, _Agent] = {root: _Agent(root, name, None, started=time.time())}
        self.finished: dict[str, Any] | None = None

    def name(self, aid: str | None) -> str:
        a = self.agents.get(aid or "")
        return a.name if a else (aid or "kernel")

    def feed(self, e: dict[str, Any]) -> str | None:
        """Take one event; return a line to print (rich markup, agent text escaped) or None."""
        return self._feed(e)

    def _feed(self, e: dict[str, Any]) -> str | None:
        kind, aid, d = e["kind"], e.get("agent"), e.get("data") or {}
        if kind == "agent.spawned" and (aid in self.agents or d.get("parent") in self.agents):
            caps = d.get("capabilities") or []
            a = self.agents.setdefault(aid, _Agent(aid, d.get("name", aid), d.get("parent")))
            a.name, a.capabilities, a.started = d.get("name", aid), list(caps), _epoch(e["ts"])
            by = f" by {self.name(d.get('parent'))}" if d.get("parent") else ""
            return f"[cyan]spawned[/] {escape(a.name)} [dim]{aid}{escape(by)}[/] grants: {escape(', '.join(map(str, caps)) or '-')}"
        if kind == "agent.spawn_failed" and d.get("parent") in self.agents:
            return escape(f"spawn refused {d.get('name')} by {self.name(d.get('parent'))}: {d.get('message')}")
        if aid not in self.agents:
            return None
        a = self.agents[aid]
        if kind == "usage.reported":
            a.thinks += 1
            a.model = f"{d.get('provider')}:{d.get('model')}" if d.get("model") else a.model
            a.input_tokens += int(d.get("input_tokens") or 0)
            a.output_tokens += int(d.get("output_tokens") or 0)
            a.cost_usd += float(d.get("cost_usd") or 0.0)
            return None
        if kind == "tool.invoked":
            a.calls += 1
            args = json.dumps(d.get("args") or {}, default=str)
            return f"  {escape(a.name)} → [bold]{escape(str(d.get('tool')))}[/] [dim]{escape(args[:100])}[/]"
        if kind == "tool.result" and not d.get("ok"):
            return escape(f"  {a.name} ← {d.get('tool')} failed: {d.get('error')}: {str(d.get('message'))[:120]}")
        if kind in DENIAL_KINDS:
            a.denied += 1
            what = d.get("tool") or d.get("method")
            return "  [red]denied[/] " + escape(f"{a.name}: {what}: {str(d.get('message'))[:160]}")
        if kind == "loop.progress":
            stage = d.get("stage")
            if stage == "plan":
                subs = d.get("subtasks") or []
                lines = [f"[magenta]plan[/] by {escape(a.name)}: {len(subs)} subtasks"]
                for s in subs:
                    dep = f" (after {', '.join(s.get('depends_on') or [])})" if s.get("depends_on") else ""
                    lines.append(escape(f"    {s.get('id')} [{s.get('role')}]{dep}: {str(s.get('goal'))[:100]}"))
                return "\n".join(lines)
            if stage == "wave":
                skipped = f", skipped {d.get('skipped')}" if d.get("skipped") else ""
                running = ", ".join(d.get("subtasks") or []) or "nothing"
                return f"[magenta]wave {d.get('index')}[/]: " + escape(f"running {running}{skipped}")
            if stage == "subtask":
                colour = "green" if d.get("ok") else "red"
                return f"[magenta]subtask[/] {escape(str(d.get('id')))}: [{colour}]{escape(str(d.get('outcome')))}[/]"
            if stage == "plan_invalid":
                return f"[yellow]invalid plan[/] (attempt {d.get('attempt')}): " + escape(str(d.get("error")))
            return escape(f"{stage} {json.dumps(d, default=str)[:160]}")
        if kind == "loop.repeat_call":
            return "  [yellow]" + escape(f"{a.name} repeats {d.get('tool')} ({d.get('count')}x)") + "[/]"
        if kind == "loop.context_summarised":
            return "  [dim]" + escape(f"{a.name} summarised {d.get('messages')} messages → {d.get('archive')}") + "[/]"
        if kind == "loop.context_cut":
            return "  [dim]" + escape(f"{a.name} cut {d.get('messages_cut')} messages to fit its "
                                      f"{d.get('window')}-token window") + "[/]"
        if kind == "budget.exceeded":
            return "  [red]budget exceeded[/] " + escape(f"{a.name}: {d.get('message')}")
        if kind == "agent.exited":
            a.runtime_s, a.reason = d.get("runtime_s"), d.get("reason")
            colour = "green" if a.reason == "completed" else "red"
            return f"[{colour}]exited[/] {escape(a.name)} ({a.reason}) after {a.runtime_s or 0:.1f}s"
        if kind == "goal.finished" and aid == self.root:
            self.finished = d
            return None
        return None

    def progress_line(self, now: float, stats: dict[str, Any] | None = None) -> str | None:
        """One line on the goal's live agents (``now`` is wall-clock time, as event ``ts``);
        ``stats`` is an ``inference.stats`` snapshot, to say who waits for the model."""
        model_state: dict[str, str] = {}
        for p in ((stats or {}).get("providers") or {}).values():
            for s in p.get("agents") or []:
                if s.get("running"):
                    model_state[s["agent_id"]] = "model thinking"
                elif s.get("waiting"):
                    model_state[s["agent_id"]] = "waiting for the model"
        parts = []
        for a in self.agents.values():
            if a.reason is not None:
                continue
            state = model_state.get(a.agent_id, "running")
            parts.append(f"{a.name} {state} {max(0.0, now - a.started):.0f}s, {a.calls} tool call"
                         f"{'' if a.calls == 1 else 's'}, {a.thinks} model call{'' if a.thinks == 1 else 's'}")
        if not parts:
            return None
        return "[dim]… " + escape("; ".join(parts)) + "[/]"

    def summary_table(self, result: Any) -> Table:
        per_sub = {}
        if isinstance(result, dict):
            per_sub = {x.get("agent_id"): x for x in result.get("agents") or [] if isinstance(x, dict)}
        t = Table("AGENT", "ID", "OUTCOME", "IN TOK", "OUT TOK", "COST $", "TIME", "CALLS", "DENIED",
                  title="agents of this goal")
        total = _Agent("", "total", None)
        for a in self.agents.values():
            outcome = a.reason or "running"
            stop = (result.get("stop_reason") if a.agent_id == self.root and isinstance(result, dict)
                    else per_sub.get(a.agent_id, {}).get("stop_reason"))
            if stop:
                # exit status 1 with a summary is a reported failure, not a crash
                outcome = f"{'failed' if outcome == 'crashed' else outcome} / {stop}"
            t.add_row(escape(a.name), a.agent_id, escape(outcome), str(a.input_tokens), str(a.output_tokens),
                      f"{a.cost_usd:.4f}", f"{a.runtime_s:.1f}s" if a.runtime_s is not None else "-",
                      str(a.calls), str(a.denied))
            total.input_tokens += a.input_tokens
            total.output_tokens += a.output_tokens
            total.cost_usd += a.cost_usd
        t.add_row("[bold]total[/]", "", "", str(total.input_tokens), str(total.output_tokens),
                  f"{total.cost_usd:.4f}", "", "", "")
        return t

    def to_data(self) -> dict[str, Any]:
        return {aid: {"name": a.name, "parent": a.parent, "capabilities": a.capabilities,
                      "input_tokens": a.input_tokens, "output_tokens": a.output_tokens,
                      "cost_usd": round(a.cost_usd, 6), "runtime_s": a.runtime_s, "reason": a.reason,
                      "tool_calls": a.calls, "denied": a.denied} for aid, a in self.agents.items()}


def _epoch(ts: Any) -> float:
    """An event's ``ts`` (UTC ``YYYY-MM-DDTHH:MM:SS.ffffffZ``, or seconds) as seconds since the epoch."""
    if isinstance(ts, (int, float)):
        return float(ts)
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time()


def _load_manifest(path: str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    import yaml

    p = Path(path)
    if not p.is_file():
        raise click.UsageError(f"{path}: no such manifest file")
    data = yaml.safe_load(p.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise click.UsageError(f"{path}: a manifest must be a mapping")
    return data


def run_goal(k: Kernel, goal: str, *, output: str | None, manifest: str | None, timeout: float | None,
             as_json: bool, console: Console) -> int:
    """Submit, stream, summarise; return the exit status."""
    latest = k.events(0, limit=1)
    after = latest[-1]["seq"] if latest else 0
    r = k.submit_goal(goal, output=output, manifest=_load_manifest(manifest))
    watch = GoalWatch(r["agent_id"], r["name"])
    model = r.get("model") or {}
    if not as_json:
        console.print(f"[bold]goal[/] submitted to {escape(str(r['name']))} [bold]{r['agent_id']}[/]"
                      f" (workspace {escape(str(r['workspace']))})")
        console.print(model_line(model), highlight=False)
    deadline = None if timeout is None else time.monotonic() + timeout
    quiet_since = time.monotonic()
    while watch.finished is None:
        if deadline is not None and time.monotonic() > deadline:
            console.print(f"[red]timed out after {timeout:g}s; the goal's agents keep running "
                          f"(agentix stop {r['agent_id']})[/]")
            return 5
        for e in k.events(after, limit=EVENT_LIMIT, wait=1.0):
            after = max(after, e["seq"])
            line = watch.feed(e)
            if line and not as_json:
                console.print(line, highlight=False)
                quiet_since = time.monotonic()
        if not as_json and watch.finished is None and time.monotonic() - quiet_since >= PROGRESS_EVERY:
            try:
                stats = k.inference_stats()
            except Exception:   # progress is best effort: never fail the run over it
                stats = None
            line = watch.progress_line(time.time(), stats)
            if line:
                console.print(line, highlight=False)
            quiet_since = time.monotonic()
    status = k.status(r["agent_id"])
    result = status.result
    ok = status.reason == "completed" and isinstance(result, dict) and result.get("stop_reason") == "complete"
    if as_json:
        click.echo(json.dumps({"agent_id": r["agent_id"], "result": result, "agents": watch.to_data(),
                               "output": watch.finished}, indent=2, default=str))
        return 0 if ok else 1
    console.print()
    console.print(watch.summary_table(result))
    if isinstance(result, dict):
        if result.get("error"):
            err = result["error"]
            console.print("[red]the orchestrator stopped:[/] " + escape(f"{err.get('error')}: {err.get('message')}"))
        console.print(f"outcome: [bold]{escape(str(result.get('stop_reason')))}[/]"
                      + (f" — {len(result.get('plan') or [])} subtasks" if result.get("plan") else ""))
    else:
        console.print(f"[red]the orchestrator ended {status.reason} without a summary; "
                      f"see `agentix logs {r['agent_id']}`[/]")
    if model.get("model"):
        console.print(escape(f"model: {model['model']} (provider {model.get('provider')})")
                      + (" [yellow](see the note above)[/]" if model.get("notice") else ""), highlight=False)
    fin = watch.finished or {}
    if fin.get("output"):
        console.print(escape(f"output: {fin['output']} ({', '.join(fin.get('files') or []) or 'no files'})"))
    if fin.get("error"):
        console.print(f"[red]{escape(str(fin['error']))}[/]")  # the agent's words
    return 0 if ok else 1


def model_line(model: dict[str, Any]) -> str:
    """The model line printed when a goal starts (rich markup)."""
    if not model.get("model"):
        return "[yellow]model: unknown (no inference provider resolved; see `agentix doctor`)[/]"
    where = f" at {model['base_url']}" if model.get("base_url") else ""
    line = "[bold]model[/] " + escape(f"{model['model']} (provider {model.get('provider')}, {model.get('kind')}{where})")
    if model.get("notice"):
        line += "\n[yellow]note:[/] " + escape(str(model["notice"]))
    return line


# ---------------------------------------------------------------- top
def render_stats(stats: dict[str, Any], names: dict[str, str] | None = None) -> Group:
    """One table per provider of an ``inference.stats`` snapshot (for a terminal)."""
    from agentix.cli.top import HEADERS, provider_title, stats_rows

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


@click.command()
@click.option("--interval", default=1.0, show_default=True, help="seconds between refreshes")
@click.option("--once", is_flag=True, help="print one snapshot and exit (the default when piped)")
@click.option("--json", "as_json", is_flag=True, help="print one snapshot as JSON and exit")
@click.pass_obj
def top(obj: Any, interval: float, once: bool, as_json: bool) -> None:
    """Live view of the inference scheduler: queues, waits, shares, tokens/s."""
    k: Kernel = obj.kernel
    if as_json:
        click.echo(json.dumps(k.inference_stats(), indent=2, default=str))
        return
    console = Console()

    def names() -> dict[str, str]:
        return {a.agent_id: f"{a.name} ({a.agent_id})" for a in k.list(all=True)}

    from agentix.cli import render

    if once or not render.is_tty():  # piped: one plain snapshot, full ids
        from agentix.cli.top import print_plain

        print_plain(k.inference_stats(), names())
        return
    from rich.live import Live

    try:
        with Live(render_stats(k.inference_stats(), names()), console=console, refresh_per_second=4) as live:
            while True:
                time.sleep(max(0.1, interval))
                live.update(render_stats(k.inference_stats(), names()))
    except KeyboardInterrupt:
        sys.exit(0)
