"""One harness for the adapter tests: a real kernel (in-process) whose ``think`` is the
scripted provider, and an example program from ``examples/`` run as a real sandboxed agent
process (bwrap; plain where bubblewrap is missing is not accepted: the test skips)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
import yaml

from agentix.core.manifest import parse_manifest
from agentix.kernel.config import KernelConfig
from agentix.kernel.home import Home
from agentix.kernel.kernel import KernelRoot

__all__ = ["EXAMPLES", "Run", "needs_bwrap", "run_example"]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


class Run:
    """What a run left behind: the agent's record, the audit events, the workspace."""

    def __init__(self, k: KernelRoot, rec: Any) -> None:
        self.k, self.rec = k, rec
        self.events = k.audit.sink.tail(after=0, limit=100000)
        self.log = Path(rec.log_path).read_text() if rec.log_path and Path(rec.log_path).exists() else ""

    def kinds(self, agent: str | None = None) -> list[str]:
        return [e["kind"] for e in self.events if agent is None or e.get("agent") == agent]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["kind"] == kind]


def run_example(tmp: Path, example: str, message: Any, *, turns: Path | None = None,
                manifest: str = "agent.yaml", backend: str = "bwrap", timeout: float = 120,
                during: Callable[[KernelRoot, Any], Awaitable[Any]] | None = None,
                **overrides: Any) -> Run:
    """Run ``examples/EXAMPLE/MANIFEST`` with ``message`` as its first message, its model the
    scripted provider playing ``turns`` (default: the example's turns.yaml)."""
    src = EXAMPLES / example
    home = Home(tmp / "home")
    home.create()
    shutil.copy(turns or src / "turns.yaml", home.root / "turns.yaml")
    (home.root / "config.toml").write_text(
        'default_model = "sim:engine"\n\n[providers.sim]\nkind = "scripted"\nscript = "turns.yaml"\n')
    data = yaml.safe_load((src / manifest).read_text())
    data["program"] = str((src / data["program"]).resolve())
    data.setdefault("isolation", "degraded")
    data.update(overrides)

    async def go() -> Run:
        k = KernelRoot(home, KernelConfig(backend=backend, isolation="degraded", stop_grace=1.0))
        await k.start()
        try:
            rec = await k.spawn(parse_manifest(data), message=message)
            if during is not None:
                await during(k, rec)
            await k.wait(rec, timeout)
            return Run(k, rec)
        finally:
            await k.shutdown()

    return asyncio.run(go())
