"""Demo section 1: a coordinator splits a corpus among three workers; one crashes part-way.

Every figure printed comes from the agents' results and the kernel's records: how many
files the coordinator had and how many workers it spawned are in its exit result.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.table import Table

from agentix.demo.agents import PROGRAMS
from agentix.sdk import Kernel

__all__ = ["team_section"]


def _fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}s"


def team_section(k: Kernel, console: Console) -> dict[str, Any]:
    """A coordinator spawns three workers; one crashes part-way; the rest finish."""
    console.rule("[bold]1. A team of agents: coordinator + three workers (one crashes)")
    t0 = time.monotonic()
    root = k.spawn(program=str(PROGRAMS / "team"), name="coordinator", capabilities=[
        "file_read: {workspace}/*", "file_write: {workspace}/*",  # its own workspace only
        "spawn_child: worker", "message_send: [coordinator, worker]"])
    seen = 0
    names: dict[str, str] = {root.agent_id: "coordinator"}
    # stream the interesting events while the team runs
    while True:
        evs = k.events(seen, wait=0.5)
        for e in evs:
            seen = max(seen, e["seq"])
            d, who = e["data"], names.get(e["agent"] or "", e["agent"] or "kernel")
            if e["kind"] == "agent.spawned":
                names[e["agent"]] = d["name"]
                console.print(f"  [cyan]spawn[/]  {d['name']:<12} {e['agent']} pid {d['pid']}"
                              + (f"  (child of {names.get(d['parent'], d['parent'])})" if d.get("parent") else ""))
            elif e["kind"] == "agent.exited":
                colour = "green" if d["reason"] == "completed" else "red"
                console.print(f"  [{colour}]exit[/]   {d['name']:<12} {d['reason']}"
                              + (f" — {d['detail']}" if d.get("detail") else "")
                              + f"  after {d['runtime_s']:.2f}s, {d['syscalls']} system calls")
            elif e["kind"] == "message.sent" and e["agent"]:
                console.print(f"  [magenta]msg[/]    {who:<12} → {names.get(d['to'], d['to_name'])}")
        st = k.status(root.agent_id)
        if st.state == "exited" and not evs:
            break
    elapsed = time.monotonic() - t0
    agents = {a.agent_id: a for a in k.list()}
    table = Table("agent", "id", "pid", "outcome", "calls", "time", "what it did", box=None)
    coord = k.status(root.agent_id)
    result = coord.result or {}
    table.add_row("coordinator", coord.agent_id, str(coord.pid), coord.reason or coord.state,
                  str(coord.raw["syscalls"]), _fmt_s(coord.raw["runtime_s"]),
                  f"{result.get('corpus', '?')} files → {len(result.get('workers', []))} workers; "
                  f"{sum(1 for w in result.get('workers', []) if w['files'])} reports in; summary.txt")
    for w in result.get("workers", []):
        a = agents[w["agent_id"]]
        did = (f"{len(w['files'])} files, {w['words']} words" if w["files"]
               else "crashed mid-task")
        table.add_row(f"  {w['name']}", a.agent_id, str(a.pid), w["reason"], str(a.raw["syscalls"]),
                      _fmt_s(a.raw["runtime_s"]), did)
    console.print(table)
    if result.get("top_words"):
        console.print("  top words: " + ", ".join(f"{w} ({n})" for w, n in result["top_words"]))
    reasons = sorted(w["reason"] for w in result.get("workers", []))
    ok = coord.reason == "completed" and reasons == ["completed", "completed", "crashed"]
    console.print(f"  checks: coordinator completed, two workers completed, one crashed and was "
                  f"contained → {'[green]held[/]' if ok else '[red]FAILED[/]'}  ({elapsed:.2f}s)")
    return {"ok": ok, "seconds": round(elapsed, 3), "coordinator": coord.reason, "workers": reasons}
