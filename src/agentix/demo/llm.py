"""Demo row "ten agents need the LLM": ten real agent processes share one model.

``llm_section(k, console) -> dict`` spawns ten agents (program ``agents/thinker.py``) with scheduling weights 1,1,1,1,2,2,2,4,4,8 (the
manifests' ``priority``). Each keeps three ``think`` requests queued against the kernel's
default model — the local Gemma 3 270M when ``agentix[local]`` is installed, otherwise a
scripted provider, labelled *simulated* on screen — and the table shows, live from
``inference.stats``, each agent's share of the tokens against its fair share, its waits,
and the weighted Jain fairness index (1.0 = shares exactly follow the weights).

Shares are counted over the *window* in which all ten compete: from the first sample in
which every agent has asked, not from the first spawn. The agents are spawned one by one,
and the first ones are served alone until the others arrive; on a busy host spawning takes
longer, and counting that head start made the weight-1 agents look favoured (CI once saw
the index fall below 0.9 under load). The scheduler's promise is about agents that are
all waiting, and that is what the row measures.

Built on the SDK only. ``prepare_home(home)`` writes the simulated provider's config into a
fresh demo home when the local model is not installed.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from agentix.core.scheduler import weighted_jain
from agentix.demo.agents import PROGRAMS
from agentix.sdk import Kernel

__all__ = ["WEIGHTS", "llm_section", "prepare_home", "simulate_model"]

WEIGHTS = [1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 4.0, 4.0, 8.0]
PROGRAM = str(PROGRAMS / "thinker.py")
MIN_SECONDS = 12.0
MAX_SECONDS = 25.0
MIN_SERVED = 3
SIMULATED_TURNS = "demo-simulated.yaml"
SIMULATED_CONCURRENCY = 4
SIMULATED_OUTPUT_TOKENS = 8
THREADS = 3  # think requests each agent keeps queued


def prepare_home(home: Path) -> None:
    """Give a fresh demo home a simulated model when the local one is not installed."""
    if (home / "config.toml").exists() or importlib.util.find_spec("xllamacpp") is not None:
        return
    simulate_model(home)


def simulate_model(home: Path) -> None:
    """Make the scripted provider (labelled SIMULATED on screen) the home's default model."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    (home / SIMULATED_TURNS).write_text(
        "- {text: 'the simulated model answers', usage: {input_tokens: 20, output_tokens: "
        f"{SIMULATED_OUTPUT_TOKENS}}}, delay: 0.05}}\n")
    (home / "config.toml").write_text(
        'default_model = "simulated:engine"\n\n[providers.simulated]\nkind = "scripted"\n'
        f'script = "{SIMULATED_TURNS}"\nloop = true\nconcurrency = {SIMULATED_CONCURRENCY}\n')


def _rows(stats: dict[str, Any], ids: dict[str, tuple[str, float]]) -> tuple[str, dict[str, Any], list]:
    for pname, p in stats.get("providers", {}).items():
        mine = [a for a in p.get("agents") or [] if a["agent_id"] in ids]
        if mine:
            return pname, p, mine
    return "-", {}, []


def _since(mine: list[dict[str, Any]], base: dict[str, tuple[float, int]] | None) -> dict[str, dict[str, Any]]:
    """Each agent's row with ``tokens`` and ``served`` counted since ``base`` (the window's
    start: agent -> (tokens, served) then; None: since the start)."""
    out = {}
    for a in mine:
        t0, s0 = (base or {}).get(a["agent_id"], (0.0, 0))
        out[a["agent_id"]] = {**a, "tokens": a["tokens"] - t0, "served": a["served"] - s0}
    return out


def _table(stats: dict[str, Any], ids: dict[str, tuple[str, float]], elapsed: float,
           base: dict[str, tuple[float, int]] | None) -> Table:
    pname, p, mine = _rows(stats, ids)
    scripted = bool(p.get("scripted"))
    label = (f"{pname}: SIMULATED provider (scripted; install agentix\\[local] for the real model)" if scripted
             else f"{pname}: {'local model, Gemma 3 270M in-process' if pname == 'local' else 'real model'}")
    t = Table(title=f"ten agents need the LLM — {label}")
    for col in ("agent", "weight", "share", "fair share", "served", "waiting", "mean wait", "p99 wait"):
        t.add_column(col, justify="right")
    by_id = _since(mine, base)
    total = sum(a["tokens"] for a in by_id.values()) or 1.0
    wsum = sum(w for _, w in ids.values())
    for aid, (name, w) in ids.items():
        a = by_id.get(aid)
        if a is None:
            t.add_row(name, f"{w:g}", "-", f"{w / wsum:6.1%}", "0", "-", "-", "-")
            continue
        t.add_row(name, f"{w:g}", f"{a['tokens'] / total:6.1%}", f"{w / wsum:6.1%}", str(a["served"]),
                  str(a["waiting"]), f"{a['mean_wait'] * 1000:6.0f} ms", f"{a['p99_wait'] * 1000:6.0f} ms")
    fair = weighted_jain({a: (by_id[a]["tokens"], w) for a, (_, w) in ids.items() if a in by_id})
    window = "all ten competing" if base is not None else "waiting for all ten to ask"
    t.caption = (f"weighted Jain fairness {fair:.3f} ({window}) · queue {p.get('queue_length', 0)} · in flight "
                 f"{p.get('in_flight', 0)} · {p.get('tokens_per_s', 0.0):.1f} tokens/s · {elapsed:.0f}s")
    return t


def llm_section(k: Kernel, console: Console, *, max_tokens: int | None = None) -> dict[str, Any]:
    console.rule("[bold]3. Ten agents need the LLM: weighted fair shares of one model")
    providers = k.inference_stats().get("providers", {})
    local = "local" in providers and not providers["local"].get("scripted")
    if max_tokens is None:
        max_tokens = 4 if local else 8   # the 270M model on two cores: short answers, many turns
    ids: dict[str, tuple[str, float]] = {}
    spawned = []
    t0 = time.monotonic()
    #: the window: when every agent had asked, and each one's (tokens, served) then
    base: dict[str, tuple[float, int]] | None = None
    opened = t0
    stats: dict[str, Any] = {}
    now = t0
    try:
        for i, w in enumerate(WEIGHTS):
            r = k.spawn({"name": f"llm-{i}", "program": PROGRAM, "priority": w,
                         "capabilities": [f"model: {p}:*" for p in providers],  # think is a capability
                         "args": ["--max-tokens", str(max_tokens), "--threads", str(THREADS)]})
            ids[r.agent_id] = (r.name, w)
            spawned.append(r.agent_id)
        with Live(console=console, refresh_per_second=4) as live:
            while True:
                time.sleep(0.5)
                now = time.monotonic()
                stats = k.inference_stats()
                _, _, mine = _rows(stats, ids)
                if base is None and len(mine) == len(ids):
                    base, opened = {a["agent_id"]: (a["tokens"], a["served"]) for a in mine}, now
                live.update(_table(stats, ids, now - t0, base))
                served = [a["served"] for a in _since(mine, base).values()]
                if now - opened >= MAX_SECONDS or (
                        base is not None and now - opened >= MIN_SECONDS and min(served) >= MIN_SERVED):
                    break
                if any(k.status(a).state == "exited" for a in spawned):
                    break
    finally:
        for aid in spawned:
            try:
                k.send(aid, "stop")
            except Exception:  # it may have exited already; it is waited for below
                pass
    results = {}
    for aid in spawned:
        a = k.wait(aid, timeout=60)
        results[ids[aid][0]] = {"reason": a.reason, "result": a.result}
    pname, p, mine = _rows(stats, ids)
    by_id = _since(mine, base) if base is not None else {}  # no window: nothing to judge
    total = sum(a["tokens"] for a in by_id.values()) or 1.0
    fair = weighted_jain({a: (by_id[a]["tokens"], w) for a, (_, w) in ids.items() if a in by_id})
    min_served = min((by_id[a]["served"] if a in by_id else 0) for a in ids)
    completed = all(r["reason"] == "completed" for r in results.values())
    ok = completed and min_served >= MIN_SERVED and fair >= 0.9
    console.print()
    console.print(f"  checks: ten agent processes completed: {completed}; every agent served "
                  f"{MIN_SERVED}+ times: {min_served >= MIN_SERVED} (min {min_served}); shares follow weights "
                  f"(weighted Jain {fair:.3f} >= 0.9, over the {now - opened:.0f}s all ten competed) → "
                  f"{'[green]held[/]' if ok else '[red]FAILED[/]'}"
                  + ("  [yellow](SIMULATED provider)[/]" if p.get("scripted") else ""))
    if not completed:
        bad = {n: r for n, r in results.items() if r["reason"] != "completed"}
        console.print(f"  [red]agents that did not complete: {bad}[/]")
    return {"ok": ok, "provider": pname, "scripted": bool(p.get("scripted")), "fairness": round(fair, 4),
            "min_served": min_served, "seconds": round(time.monotonic() - t0, 1), "max_tokens": max_tokens,
            "window_seconds": round(now - opened, 1) if base is not None else 0.0,
            "tokens_per_s": round(p.get("tokens_per_s", 0.0), 1),
            "shares": {ids[a][0]: round(by_id[a]["tokens"] / total, 4) for a in ids if a in by_id}}
