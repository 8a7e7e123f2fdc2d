"""``agentix demo``: the main job, run against a real kernel, with a clear account.

Each section is a function ``(kernel, console) -> dict`` that runs real agents and returns
its figures; the demo prints them and returns 0 only if every section's checks held.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agentix.cli.demo_isolation import isolation_section
from agentix.sdk import Kernel

__all__ = ["run_demo"]

# the built-in programs are data to the CLI: located, never imported (the CLI sits on the SDK)
PROGRAMS = Path(str(importlib.resources.files("agentix.agents")))


def _fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}s"


def team_section(k: Kernel, console: Console) -> dict[str, Any]:
    """A coordinator spawns three workers; one crashes part-way; the rest finish."""
    console.rule("[bold]1. A team of agents: coordinator + three workers (one crashes)")
    t0 = time.monotonic()
    root = k.spawn(program=str(PROGRAMS / "demo_team"), name="coordinator", capabilities=[
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
                  f"9 files → 3 workers; {sum(1 for w in result.get('workers', []) if w['files'])} "
                  "reports in; summary.txt")
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


from agentix.cli.demo_llm import llm_section, prepare_home  # noqa: E402

SECTIONS = [team_section, isolation_section, llm_section]


def run_demo(home: Path | None, *, as_json: bool = False, console: Console | None = None) -> int:
    from agentix.cli.main import kernel_running, start_kernel

    console = console or Console()
    if as_json:
        console = Console(file=open("/dev/null", "w"))  # noqa: SIM115 — the account goes to JSON only
    tmp = None
    if home is None:
        tmp = Path(tempfile.mkdtemp(prefix="agentix-demo-"))
        home = tmp / "home"
    home = home.resolve()
    started = False
    t0 = time.monotonic()
    if not kernel_running(home):
        prepare_home(home)   # a simulated model when the local one is not installed
        with console.status("starting a kernel…"):
            start_kernel(home, isolation=_isolation_for_host())
        started = True
    figures: dict[str, Any] = {}
    ok = True
    try:
        with Kernel(home) as k:
            info = k.info()
            iso = info["isolation"]
            console.print(f"[bold]agentix demo[/] — kernel pid {info['pid']}, home {home}, "
                          f"isolation backend [bold]{iso.get('backend')}[/]")
            if iso.get("missing_layers"):
                console.print(f"[yellow]warning: this host cannot isolate agents "
                              f"(missing: {', '.join(iso['missing_layers'])}); the demo runs degraded[/]")
            for section in SECTIONS:
                res = section(k, console)
                figures[section.__name__.removesuffix("_section")] = res
                ok = ok and bool(res.get("ok"))
    finally:
        if started:  # stop the kernel we started, even when a section failed
            try:
                with Kernel(home) as k:
                    k.shutdown()
            except Exception:
                pass
            _wait_gone(home)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    total = time.monotonic() - t0
    figures["total_seconds"] = round(total, 3)
    figures["ok"] = ok
    if as_json:
        print(json.dumps(figures))
    else:
        console.rule()
        console.print(f"demo {'[green]passed[/]' if ok else '[red]FAILED[/]'} in {total:.1f}s")
    return 0 if ok else 1


def _isolation_for_host() -> str | None:
    """Strict where the sandbox backend exists; otherwise degraded, said out loud above."""
    # a probe for the backend's presence, not an import: the CLI never loads kernel-side code
    return None if importlib.util.find_spec("agentix.sandbox.bwrap") is not None else "degraded"


def _wait_gone(home: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while (home / "agentixd.sock").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
