"""The loop's tests against the real kernel: a real in-process ``KernelRoot`` (plain backend),
the model played by the scripted provider (``llm/scripted.py``, configured in the home's
config.toml like any provider), and ``ToolLoop`` running inside a real agent process that
talks to the kernel over its inherited socket with the real SDK.

``run_loop(tmp, turns, task, ...)`` spawns that agent, lets the loop run to its stop reason
and returns a ``Transcript``: the loop's result and messages, every system call the loop
made (method and params, recorded inside the agent on their way to the kernel), and the
``loop.*`` events the kernel audited. Nothing of the kernel is replaced.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agentix.core.manifest import parse_manifest
from agentix.kernel.config import KernelConfig
from agentix.kernel.home import Home
from agentix.kernel.kernel import KernelRoot

__all__ = ["Orchestration", "Transcript", "fail", "reply", "run_loop", "run_orchestrator"]

HOST = '''
import json
from agentix.sdk import agent
from agentix.agents.loop import LOOP_TOOLS, LoopConfig, ToolDef, ToolLoop
from agentix.core.context import ContextPolicy

k = agent.connect()
job = k.recv(timeout=30).body
if job.get("await_go"):   # the test puts files in the workspace first
    k.recv(timeout=30)
calls = []


class Recording:
    """The SDK client, recording each system call the loop makes on its way out."""

    def call(self, method, **params):
        calls.append([method, json.loads(json.dumps(params))])
        return k.call(method, **params)


tools = [ToolDef(*t) for t in job["tools"]] + [LOOP_TOOLS[n] for n in job["loop_tools"]]
cfg = dict(job["config"])
if "context" in cfg:
    cfg["context"] = ContextPolicy(**cfg["context"])
loop = ToolLoop(Recording(), tools, system_prompt=job.get("system_prompt"), config=LoopConfig(**cfg))
res = loop.run(job["task"])
with open("transcript.json", "w") as f:
    json.dump({"result": res.to_data(), "calls": calls, "messages": loop.messages}, f)
k.exit("done")
'''


# a live agent named "peer": says hello to the looper, answers each request (first with a stale
# reply to an older request, then the real one) and otherwise waits
PEER = '''
from agentix.sdk import agent
k = agent.connect()
k.send("looper", "hello")
while True:
    m = k.recv(timeout=120)
    if m is None:
        break
    b = m.body
    if isinstance(b, dict) and "request_id" in b:
        k.send("looper", {"in_reply_to": "req-old", "result": 0})
        k.send("looper", {"in_reply_to": b["request_id"], "result": {"text": "4"}})
'''


def reply(text: str | None = None, calls: list[tuple[str, dict]] | None = None, stop: str | None = None,
          usage: tuple[int, int] = (10, 5)) -> dict[str, Any]:
    """One scripted model turn (the scripted provider's file format)."""
    turn: dict[str, Any] = {"usage": {"input_tokens": usage[0], "output_tokens": usage[1]}}
    if text is not None or not calls:
        turn["text"] = text or ""
    if calls:
        turn["tool_calls"] = [{"id": f"call_{i}_{n}", "name": n, "arguments": a} for i, (n, a) in enumerate(calls)]
    if stop is not None:
        turn["stop_reason"] = stop
    return turn


def fail(message: str = "the model is down") -> dict[str, Any]:
    """A scripted turn on which the provider fails (``provider_error``)."""
    return {"error": {"message": message, "retryable": False}}


@dataclass
class Transcript:
    result: dict[str, Any]
    calls: list[tuple[str, dict[str, Any]]]
    messages: list[dict[str, Any]]
    events: list[tuple[str, dict[str, Any]]]   # (kind without "loop.", data), in order
    exit_reason: str | None
    audit: list[dict[str, Any]]                 # every event the kernel recorded, in order

    @property
    def stop_reason(self) -> str:
        return self.result["stop_reason"]

    @property
    def thinks(self) -> list[dict[str, Any]]:
        return [p for m, p in self.calls if m == "think"]

    def tool_calls(self) -> list[tuple[str, Any]]:
        """The tool calls that reached the kernel."""
        return [(p["name"], p["args"]) for m, p in self.calls if m == "tool.call"]

    def tool_results(self, n: int = -1) -> list[str]:
        """Tool-result contents the model was sent in think call ``n``."""
        return [m["content"] for m in self.thinks[n]["messages"] if m["role"] == "tool"]


def _tool(t: Any) -> list[Any]:
    return [t.name, t.description, t.schema]


def run_loop(tmp: Path, turns: list[dict[str, Any]], task: str = "t", *, tools: list[Any] = (),
             loop_tools: list[str] = (), config: dict[str, Any] | None = None,
             capabilities: list[str] = ("tool: echo",), budget: dict[str, Any] | None = None,
             peer: bool = False, kernel: dict[str, Any] | None = None, files: dict[str, str] | None = None,
             system_prompt: str | None = None, base_url: str | None = None,
             kernel_tools: list[Any] = ()) -> Transcript:
    """Run ``ToolLoop`` in a real agent against a real kernel whose model plays ``turns``
    (or, with ``base_url``, is an OpenAI-compatible server there, e.g. tests/fakes').
    ``kernel_tools`` (``ToolSpec``s) are registered in the kernel beside its own tools."""
    from tests.fakes.routed_openai import config_toml

    home = Home(tmp / "home")
    home.create()
    if base_url is None:
        (home.root / "turns.yaml").write_text(yaml.safe_dump(turns, sort_keys=False))
        (home.root / "config.toml").write_text(
            'default_model = "sim:engine"\n\n[providers.sim]\nkind = "scripted"\nscript = "turns.yaml"\n')
    else:
        (home.root / "config.toml").write_text(config_toml(base_url, kernel=False))
    prog = tmp / "loop_host.py"
    prog.write_text(HOST)
    job = {"task": task, "tools": [_tool(t) for t in tools], "loop_tools": list(loop_tools),
           "config": config or {}, "system_prompt": system_prompt, "await_go": bool(files)}

    async def go() -> Transcript:
        k = KernelRoot(home, KernelConfig(backend="plain", isolation="degraded", stop_grace=1.0, **(kernel or {})))
        for spec in kernel_tools:
            k.tools.register(spec)
        await k.start()
        try:
            m: dict[str, Any] = {"name": "looper", "program": str(prog), "isolation": "degraded",
                                 "capabilities": ["model: sim:*" if base_url is None else "model: fake:*",
                                                  *capabilities]}
            if budget:
                m["budget"] = budget
            rec = await k.spawn(parse_manifest(m), message=job)   # its first message: the job
            if files:
                for name, body in files.items():
                    (rec.workspace / name).write_text(body)
                await k.deliver(None, rec, "go")
            if peer:   # before the loop runs, so that the loop's first call finds it
                (tmp / "peer.py").write_text(PEER)
                await k.spawn(parse_manifest({"name": "peer", "program": str(tmp / "peer.py"),
                                              "isolation": "degraded", "capabilities": ["message_send: looper"]}))
            await k.wait(rec, 120)
            log = Path(rec.log_path).read_text() if Path(rec.log_path).exists() else ""
            assert rec.exit is not None and rec.exit.reason == "completed", (rec.exit, log)
            out = json.loads((rec.workspace / "transcript.json").read_text())
            audit = k.audit.sink.tail(after=0, limit=100000)
            events = [(e["kind"].removeprefix("loop."), e["data"]) for e in audit
                      if e["agent"] == rec.agent_id and e["kind"].startswith("loop.")]
            return Transcript(out["result"], [(m, p) for m, p in out["calls"]], out["messages"], events,
                              rec.exit.reason, audit)
        finally:
            await k.shutdown()

    return asyncio.run(go())


@dataclass
class Orchestration:
    """The orchestrator's run: its exit result, its workspace, the kernel's events, and every
    request the model server received (the real OpenAI wire format)."""

    result: dict[str, Any]
    workspace: Path
    audit: list[dict[str, Any]]
    requests: list[dict[str, Any]]

    def progress(self, stage: str) -> list[dict[str, Any]]:
        return [e["data"] for e in self.audit if e["kind"] == "loop.progress" and e["data"].get("stage") == stage]

    def spawned(self) -> dict[str, dict[str, Any]]:
        """The children, by name: their ``agent.spawned`` data (an agent retried keeps the last)."""
        return {e["data"]["name"]: e["data"] for e in self.audit
                if e["kind"] == "agent.spawned" and e["data"].get("parent")}

    def plan_requests(self) -> list[dict[str, Any]]:
        return [b for b in self.requests if "Decompose the goal into a plan" in _system(b)]


def _system(body: dict[str, Any]) -> str:
    return "\n".join(str(m.get("content") or "") for m in body.get("messages", []) if m.get("role") == "system")


def run_orchestrator(tmp: Path, route: Any, goal: str = "write a report", *, config_extra: str = "",
                     limits: dict[str, Any] | None = None, exit_reason: str = "completed",
                     manifest_extra: dict[str, Any] | None = None) -> Orchestration:
    """The real bootstrap orchestrator (``module:agentix.agents.orchestrator``) against a real
    kernel; the model is a fake OpenAI server on 127.0.0.1 answering through ``route``. The
    kernel home is ``tmp/home``: a second run in the same ``tmp`` finds the first one's store."""
    from agentix.agents.orchestrator import bootstrap_manifest
    from tests.fakes.routed_openai import RoutedOpenAIServer, config_toml

    server = RoutedOpenAIServer(route)
    server.start()
    home = Home(tmp / "home")
    home.create()
    (home.root / "config.toml").write_text(config_toml(server.base_url, kernel=False) + config_extra)

    async def go() -> Orchestration:
        k = KernelRoot(home, KernelConfig(backend="plain", isolation="degraded", stop_grace=1.0))
        await k.start()
        try:
            boot = bootstrap_manifest()   # think is a capability: `agentix run --goal` adds the model grant
            m = {**boot, "isolation": "degraded", "capabilities": [*boot["capabilities"], "model: *"]}
            if limits:
                m["limits"] = {**(m.get("limits") or {}), **limits}
            m.update(manifest_extra or {})
            rec = await k.spawn(parse_manifest(m), message={"goal": goal})
            await k.wait(rec, 120)
            log = Path(rec.log_path).read_text() if Path(rec.log_path).exists() else ""
            assert rec.exit is not None and rec.exit.reason == exit_reason, (rec.exit, log)
            return Orchestration(rec.result, rec.workspace, k.audit.sink.tail(after=0, limit=100000),
                                 list(server.stats.bodies))
        finally:
            await k.shutdown()

    try:
        return asyncio.run(go())
    finally:
        server.stop()
