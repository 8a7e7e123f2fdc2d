"""Demo row "ten agents need the LLM": ten agents with different weights share one model.

With the ``agentix[local]`` extra the agents share the real local model (Gemma 3 270M,
in-process). Without it they share a *simulated* provider (labelled as such on screen):
a fake engine with four slots that takes time proportional to the tokens it "generates".
The table shows, live, each agent's weight, its share of tokens against its fair share,
its queue waits, and the weighted Jain fairness index (1.0 = shares exactly follow weights).

Run it alone with ``python -m agentix.kernel.llm_demo``; the CLI's ``agentix demo`` calls
``run_ten_agents``.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentix.core.scheduler import weighted_jain
from agentix.kernel.inference import InferenceService
from agentix.llm.base import DeltaCallback, InferenceRequest, InferenceResponse, Provider, TokenUsage
from agentix.llm.config import load_config, local_available

__all__ = ["SimulatedProvider", "demo_section", "render_stats", "render_table", "run_ten_agents"]

WEIGHTS = {"agent-0": 1.0, "agent-1": 1.0, "agent-2": 1.0, "agent-3": 1.0, "agent-4": 2.0,
           "agent-5": 2.0, "agent-6": 2.0, "agent-7": 4.0, "agent-8": 4.0, "agent-9": 8.0}


class SimulatedProvider(Provider):
    """A fake engine: ``tokens_per_second`` per request, answers with numbered tokens.
    Its responses are marked ``scripted`` so every display labels them as not real."""

    scripted = True

    def __init__(self, name: str = "simulated", tokens_per_second: float = 200.0) -> None:
        self.name = name
        self.tps = tokens_per_second

    async def _complete(self, req: InferenceRequest, on_delta: DeltaCallback | None = None) -> InferenceResponse:
        n = req.max_tokens
        await asyncio.sleep(n / self.tps)
        return InferenceResponse(text=" ".join(f"t{i}" for i in range(n)), usage=TokenUsage(10, n),
                                 stop_reason="max_tokens", model="simulated", provider=self.name, scripted=True)


def render_table(stats: dict[str, Any], provider: str, label: str) -> Any:
    """A rich Table of per-agent shares for one provider's stats."""
    from rich.table import Table

    p = stats["providers"][provider]
    agents = [a for a in p["agents"] if a["agent_id"] in WEIGHTS]
    wsum = sum(WEIGHTS.values())
    total = sum(a["tokens"] for a in agents) or 1.0
    t = Table(title=f"ten agents need the LLM — {label}")
    for col in ("agent", "weight", "share", "fair share", "served", "mean wait", "p99 wait"):
        t.add_column(col, justify="right")
    for a in agents:
        t.add_row(a["agent_id"], f"{a['weight']:g}", f"{a['tokens'] / total:6.1%}", f"{a['weight'] / wsum:6.1%}",
                  str(a["served"]), f"{a['mean_wait'] * 1000:6.0f} ms", f"{a['p99_wait'] * 1000:6.0f} ms")
    fair = weighted_jain({a["agent_id"]: (a["tokens"], a["weight"]) for a in agents})
    t.caption = (f"weighted Jain fairness {fair:.3f} · queue {p['queue_length']} · in flight {p['in_flight']} · "
                 f"{p['tokens_per_s']:.0f} tokens/s")
    return t


def render_stats(stats: dict[str, Any]) -> Any:
    """A rich renderable of a whole ``inference.stats`` snapshot, for ``agentix top``."""
    from rich.console import Group
    from rich.table import Table

    parts = []
    for name, p in stats["providers"].items():
        lim = p.get("limiter") or {}
        t = Table(title=f"{name}{' (scripted)' if p.get('scripted') else ''}: queue {p['queue_length']} · "
                        f"in flight {p['in_flight']}/{lim.get('concurrency_cap', '-')} · "
                        f"{p['tokens_per_s']:.0f} tokens/s · fairness {p['fairness']:.3f} · "
                        f"429s {lim.get('throttled', 0)} · retries {p['retries']}")
        for col in ("agent", "weight", "waiting", "running", "served", "tokens", "share", "p99 wait"):
            t.add_column(col, justify="right")
        for a in sorted(p["agents"], key=lambda a: -a["tokens"]):
            t.add_row(a["agent_id"], f"{a['weight']:g}", str(a["waiting"]), str(a["running"]), str(a["served"]),
                      f"{a['tokens']:.0f}", f"{a['share']:.1%}", f"{a['p99_wait'] * 1000:.0f} ms")
        parts.append(t)
    return Group(*parts)


async def run_ten_agents(duration: float = 15.0, on_update: Callable[[dict[str, Any], str, str], None] | None = None,
                         use_local: bool | None = None, min_served: int = 6,
                         max_duration: float = 90.0) -> dict[str, Any]:
    """Run the ten agents for at least ``duration`` seconds and until every agent has been
    served ``min_served`` times (a slow machine needs longer to show shares), but no longer
    than ``max_duration``; call ``on_update(stats, provider, label)`` twice a second."""
    local = local_available() if use_local is None else use_local
    with tempfile.TemporaryDirectory() as d:
        home = Path(d)
        if local:
            (home / "config.toml").write_text("[providers.local]\nkind = 'local'\nparallel = 4\n")
            cfg = load_config(home, {}, local_installed=True)
            svc = InferenceService(cfg)
            provider, label, max_tokens = "local", "local model (Gemma 3 270M, in-process)", 8
        else:
            (home / "config.toml").write_text(
                "default_model = 'simulated:engine'\n[providers.simulated]\nkind = 'openai'\n"
                "base_url = 'http://127.0.0.1:9/unused'\nconcurrency = 4\n")
            cfg = load_config(home, {}, local_installed=False)
            svc = InferenceService(cfg, providers={"simulated": SimulatedProvider()})
            provider, label, max_tokens = "simulated", "SIMULATED provider (agentix\\[local] not installed)", 40
        req = {"messages": [{"role": "user", "content": "Continue the story: the robot opened the door and"}],
               "max_tokens": max_tokens}
        stop = asyncio.Event()
        await svc.think("warm-up", 1.0, dict(req, max_tokens=1))  # load the engine before the clock starts

        async def agent(name: str) -> None:
            while not stop.is_set():
                await svc.think(name, WEIGHTS[name], req)

        # each agent keeps three requests in flight (parallel sub-tasks), so all stay backlogged
        tasks = [asyncio.create_task(agent(a)) for a in WEIGHTS for _ in range(3)]
        t0 = time.monotonic()
        try:
            while True:
                await asyncio.sleep(0.5)
                st = svc.stats()
                if on_update is not None:
                    on_update(st, provider, label)
                served = [a["served"] for a in st["providers"][provider]["agents"] if a["agent_id"] in WEIGHTS]
                elapsed = time.monotonic() - t0
                if elapsed >= max_duration or (elapsed >= duration and len(served) == len(WEIGHTS)
                                               and min(served) >= min_served):
                    break
        finally:
            stop.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        stats = svc.stats()
        await svc.aclose()
    p = stats["providers"][provider]
    agents = [a for a in p["agents"] if a["agent_id"] in WEIGHTS]
    return {"provider": provider, "label": label, "scripted": p["scripted"],
            "seconds": round(time.monotonic() - t0, 1), "min_served": min(a["served"] for a in agents),
            "fairness": weighted_jain({a["agent_id"]: (a["tokens"], a["weight"]) for a in agents}),
            "shares": {a["agent_id"]: a["share"] for a in agents}, "stats": stats}


def demo_section(kernel: Any, console: Any, duration: float = 15.0) -> dict[str, Any]:
    """The ``agentix demo`` row: ``(kernel, console) -> figures`` like the other sections.
    (The agents here are in-process callers of the inference service, not sandboxed
    processes: the row shows the scheduler, not spawning.)"""
    from rich.live import Live

    console.rule("[bold]ten agents need the LLM: weighted fair shares of one model")
    with Live(console=console, refresh_per_second=4) as live:
        result = asyncio.run(run_ten_agents(duration, on_update=lambda s, p, lbl: live.update(render_table(s, p, lbl))))
        live.update(render_table(result["stats"], result["provider"], result["label"]))
    served = result["min_served"] >= 6
    ok = served and result["fairness"] >= 0.9
    console.print()
    console.print(f"  checks: every agent served 6+ times in {result['seconds']}s: {served}; shares follow weights (weighted Jain index {result['fairness']:.3f} >= 0.9) → "
                  f"{'[green]held[/]' if ok else '[red]FAILED[/]'}"
                  + ("  [yellow](simulated provider: install agentix\\[local] for the real model)[/]"
                     if result["scripted"] else ""))
    return {"ok": ok, "fairness": round(result["fairness"], 4), "provider": result["provider"],
            "seconds": result["seconds"],
            "scripted": result["scripted"], "shares": result["shares"]}


def main() -> None:
    from rich.live import Live

    with Live(refresh_per_second=4) as live:
        result = asyncio.run(run_ten_agents(on_update=lambda s, p, lbl: live.update(render_table(s, p, lbl))))
        live.update(render_table(result["stats"], result["provider"], result["label"]))


if __name__ == "__main__":
    main()
