"""The harness of the capability suites (scenarios 12-36, issue 10's attacks and those that
reuse them): a kernel in-process with real agent processes running ``PROBE``, which makes the
system calls it is sent and reports each answer. ``substrate`` (autouse where imported) runs a
module's tests on both backends, plain and bwrap."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from agentix.core.manifest import parse_manifest
from agentix.kernel.clock import Clock
from agentix.kernel.config import KernelConfig
from agentix.kernel.dispatch import OPERATOR
from agentix.kernel.home import Home
from agentix.kernel.kernel import KernelRoot

__all__ = ["BACKENDS", "PROBE", "SCRIPTED", "World", "run", "substrate", "tool"]


PROBE = '''
from agentix.sdk import agent
k = agent.connect()
out = []
while True:
    m = k.recv(timeout=60)
    if m is None or m.body == "exit":
        break
    if isinstance(m.body, dict) and "calls" in m.body:
        res = []
        for method, params in m.body["calls"]:
            try:
                res.append({"ok": k.call(method, **params)})
            except Exception as e:
                res.append({"error": getattr(e, "code", repr(e)), "message": str(e),
                            "data": getattr(e, "data", None)})
        out.append(res)
        if m.body.get("exit", True):
            break
k.exit(out)
'''

SCRIPTED = ('default_model = "sim:engine"\n\n[providers.sim]\nkind = "scripted"\n'
            'script = "turns.yaml"\nloop = true\n')


class World:
    """An in-process kernel on ``backend`` with the probe (and ``programs``) in ``progs/``.

    Subclass it for a suite's own world (tests/security/test_issue11_spawn_boundary.py: bwrap,
    strict, host files to attack); ``run(tmp, body, world=Sub)`` drives either."""

    #: the substrate agents run on (the module's ``substrate`` fixture runs every test on both)
    backend = "plain"
    isolation = "degraded"
    #: more programs beside probe.py: file name -> source
    programs: dict[str, str] = {}

    def __init__(self, tmp: Path, config_toml: str | None = None, *, clock: Clock | None = None,
                 **config: Any) -> None:
        self.tmp = tmp
        self.home = Home(tmp / "home")
        self.home.create()
        if config_toml is not None:
            (self.home.root / "config.toml").write_text(config_toml)
            (self.home.root / "turns.yaml").write_text(
                "- {text: 'thought', usage: {input_tokens: 5, output_tokens: 2}}\n")
        self.progs = tmp / "progs"
        self.progs.mkdir(exist_ok=True)  # a second World on the same tmp: the kernel restarted
        for name, text in {"probe.py": PROBE, **self.programs}.items():
            (self.progs / name).write_text(text)
        self.prog = self.progs / "probe.py"
        config.setdefault("stop_grace", 1.0)
        # ``clock``: the kernel's one clock (a test of expiry passes a VirtualClock and steps it)
        self.k = KernelRoot(self.home, KernelConfig(backend=self.backend, isolation=self.isolation, **config),
                            clock=clock)

    async def spawn(self, caps: Any = (), name: str = "probe", parent=None, *, program: str = "probe.py",
                    **extra: Any):
        """Spawn ``program`` (from ``progs/``, or the parent's workspace for a child)."""
        m = {"name": name, "program": str(self.progs / program) if parent is None else program,
             "isolation": self.isolation, "capabilities": list(caps), **extra}
        rec = await self.k.spawn(parse_manifest(m), parent=parent)
        assert rec.isolation["backend"] == self.backend  # never silently another substrate
        return rec

    async def calls(self, rec, calls: list, *, exit: bool = True) -> list[dict[str, Any]]:
        """Have the probe make ``calls``; with ``exit=False`` it stays alive (its tokens too)."""
        if not exit:
            await self.k.deliver(None, rec, {"calls": calls + [["sys.exit", {"result": "batch"}]],
                                             "exit": False})
            for _ in range(1200):
                if rec.result == "batch":
                    break
                await asyncio.sleep(0.05)
            assert rec.result == "batch"
            return []
        await self.k.deliver(None, rec, {"calls": calls, "exit": True})
        await self.k.wait(rec, 60)
        assert rec.exit is not None and rec.exit.reason == "completed", Path(rec.log_path).read_text()
        return rec.result[-1]

    async def op(self, method: str, **params: Any) -> Any:
        return await self.k.pipeline.run(OPERATOR, method, params)

    def events(self, kind: str | None = None, agent: str | None = None) -> list[dict[str, Any]]:
        return self.k.audit.sink.tail(after=0, agent=agent, kind=kind, limit=100000)

    def refusals(self, agent: str) -> list[dict[str, Any]]:
        return [e for e in self.events(agent=agent)
                if e["kind"] in ("capability.denied", "call.refused", "taint.violation")]

    def used(self, rec) -> dict[str, int]:
        return {t.id: self.k.caps.ledger.used(t.id) for t in self.k.caps.held.get(rec.agent_id, [])}


def run(tmp: Path, body, config_toml: str | None = None, *, world: type[World] = World,
        clock: Clock | None = None, **config: Any) -> Any:
    async def go():
        w = world(tmp, config_toml, clock=clock, **config)
        await w.k.start()
        try:
            return await body(w)
        finally:
            await asyncio.wait_for(w.k.shutdown(), 60)
    return asyncio.run(go())



# every test of this module runs on both substrates: plain (no sandbox) and bwrap (namespaces,
# mounts, seccomp); bwrap is skipped only where bubblewrap is not installed
BACKENDS = ["plain", pytest.param("bwrap", marks=pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap is not installed"))]


@pytest.fixture(autouse=True, params=BACKENDS)
def substrate(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(World, "backend", request.param)
    return request.param


def tool(name: str, **args: Any) -> list:
    return ["tool.call", {"name": name, "args": args}]
