"""``agentix demo``: the main job, run against a real kernel, with a clear account.

Each section is a function ``(kernel, console) -> dict`` that runs real agents and returns
its figures; the demo prints them and returns 0 only if every section's checks held.

The caller (the CLI) says how to start a kernel and how to probe the host's isolation
layers (``Host``), so this package needs nothing above the SDK. The isolation the demo asks
for is what the probe found: strict when every layer works, otherwise degraded, with the
missing layers named on screen.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from agentix.demo.isolation import isolation_section
from agentix.demo.llm import llm_section, prepare_home
from agentix.demo.team import team_section
from agentix.sdk import Kernel

__all__ = ["Host", "SECTIONS", "isolation_for", "run_demo"]

SECTIONS = [team_section, isolation_section, llm_section]


@dataclass(frozen=True)
class Host:
    """What the demo needs from its caller: start a kernel, tell whether one runs, probe layers.

    ``probe()`` returns the rows of ``agentix doctor --json`` (``{"layer", "ok", "why"}``)."""

    start_kernel: Callable[[Path, str | None], object]
    kernel_running: Callable[[Path], bool]
    probe: Callable[[], list[dict[str, Any]]]


def isolation_for(rows: list[dict[str, Any]]) -> tuple[str | None, list[str]]:
    """The kernel's ``--isolation`` for a host probe: strict (None) only when every layer works."""
    missing = [str(r["layer"]) for r in rows if not r.get("ok")]
    return (None if not missing else "degraded"), missing


def run_demo(home: Path | None, host: Host, *, as_json: bool = False,
             console: Console | None = None) -> int:
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
    if not host.kernel_running(home):
        prepare_home(home)   # a simulated model when the local one is not installed
        with console.status("probing this host's isolation layers…"):
            isolation, missing = isolation_for(host.probe())
        if missing:
            console.print(f"[yellow]this host lacks {', '.join(missing)}: the demo's kernel runs with "
                          "isolation: degraded (see `agentix doctor`)[/]")
        with console.status("starting a kernel…"):
            host.start_kernel(home, isolation)
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
            figures["isolation_backend"] = iso.get("backend")
            figures["missing_layers"] = list(iso.get("missing_layers") or [])
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


def _wait_gone(home: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while (home / "agentixd.sock").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
