"""``agentix run --goal`` end to end: a real daemon, the real CLI, real agent processes, and
the model played by a fake OpenAI-compatible server on 127.0.0.1 (the real wire format),
configured through $AGENTIX_HOME/config.toml.

The root orchestrator plans three independent subtasks; the kernel spawns them as three
children at once; one child's call is refused (a path escaping a skill folder) and it
carries on; the orchestrator writes output/ and the kernel copies it to --output.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agentix.sdk import Kernel
from tests.agents.daemon_util import ROOT, _env, start_daemon, stop_daemon
from tests.fakes.routed_openai import AgentScripts, RoutedOpenAIServer, call, config_toml, text

PLAN = {"subtasks": [
    {"id": "alpha", "role": "writer", "goal": "write notes about alpha",
     "capabilities": ["file_write: {workspace}/*"],
     "system_prompt": "[agent:alpha] You write notes."},
    {"id": "beta", "role": "echoer", "goal": "echo beta", "capabilities": ["tool: echo"],
     "system_prompt": "[agent:beta] You echo."},
    {"id": "gamma", "role": "reader", "goal": "read a skill", "capabilities": ["tool: skill_read"],
     "system_prompt": "[agent:gamma] You read skills."},
]}


def _after_denial(data):
    res = [m["content"] for m in data["messages"] if m.get("role") == "tool"]
    return text("gamma recovered from " + ("capability_denied" if "capability_denied" in res[-1] else "nothing"))


SCRIPTS = {
    "alpha": [call("file_write", path="notes.md", content="alpha notes"), text("alpha result")],
    "beta": [call("echo", message="hello from beta"), text("beta result")],
    "gamma": [call("skill_read", skill_name="code-review", file="../research-report/SKILL.md"), _after_denial],
}


def test_goal_end_to_end_through_the_cli(tmp_path):
    scripts = AgentScripts(SCRIPTS, plan=PLAN, synthesis="# Final\nalpha, beta and gamma are done.")
    server = RoutedOpenAIServer(scripts, latency=0.2)
    server.start()
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(config_toml(server.base_url))
    out_dir = tmp_path / "out"
    proc = start_daemon(home)
    try:
        cli = subprocess.run([sys.executable, "-m", "agentix.cli.main", "--home", str(home), "run",
                              "--goal", "write about alpha, beta and gamma", "--output", str(out_dir),
                              "--timeout", "120"],
                             env=_env(home), capture_output=True, text=True, timeout=180)
        with Kernel(home) as k:
            events = k.events(0, limit=10_000)
        top = subprocess.run([sys.executable, "-m", "agentix.cli.main", "--home", str(home), "top", "--json"],
                             env=_env(home), capture_output=True, text=True, timeout=60)
        top_once = subprocess.run([sys.executable, "-m", "agentix.cli.main", "--home", str(home), "top", "--once"],
                                  env=_env(home), capture_output=True, text=True, timeout=60)
    finally:
        stop_daemon(home, proc)
        server.stop()
    assert cli.returncode == 0, cli.stdout + cli.stderr
    # streamed as it happened, then the summary per agent
    for needle in ("plan", "spawned alpha", "spawned beta", "spawned gamma", "echo", "capability_denied",
                   "agents of this goal", "outcome: complete", "model fake:fake-model (provider fake",
                   "model: fake:fake-model"):
        assert needle in cli.stdout, (needle, cli.stdout)
    # the files landed in --output
    assert sorted(p.name for p in out_dir.iterdir()) == ["alpha.md", "beta.md", "gamma.md", "result.md",
                                                         "summary.json"]
    assert (out_dir / "alpha.md").read_text() == "alpha result"
    assert (out_dir / "gamma.md").read_text() == "gamma recovered from capability_denied"
    assert (out_dir / "result.md").read_text().startswith("# Final")
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["stop_reason"] == "complete" and [a["id"] for a in summary["agents"]] == ["alpha", "beta", "gamma"]

    spawned = {e["data"]["name"]: e for e in events if e["kind"] == "agent.spawned"}
    root = spawned["bootstrap"]
    children = [spawned[n] for n in ("alpha", "beta", "gamma")]
    assert all(c["data"]["parent"] == root["agent"] for c in children)
    # independent subtasks ran concurrently: all three were spawned before any of them ended
    first_child_exit = min(e["seq"] for e in events if e["kind"] == "agent.exited"
                           and e["agent"] in {c["agent"] for c in children})
    assert max(c["seq"] for c in children) < first_child_exit
    # the denied call was recorded and the child went on to complete
    gamma = spawned["gamma"]["agent"]
    refused = [e for e in events if e["agent"] == gamma and e["kind"] == "tool.result" and not e["data"]["ok"]]
    assert refused and refused[0]["data"]["error"] == "capability_denied"
    assert not (home / "workspaces").joinpath(gamma, "research-report").exists()   # nothing was read out
    exits = {e["agent"]: e["data"]["reason"] for e in events if e["kind"] == "agent.exited"}
    assert all(exits[c["agent"]] == "completed" for c in children) and exits[root["agent"]] == "completed"
    # per-agent usage from the inference layer
    users = {e["agent"] for e in events if e["kind"] == "usage.reported"}
    assert users >= {root["agent"], *(c["agent"] for c in children)}
    # agentix top: the scheduler's view of the same run
    fake = json.loads(top.stdout)["providers"]["fake"]
    assert fake["served"] == server.stats.completed and fake["scripted"] is False
    assert {a["agent_id"] for a in fake["agents"]} <= {e["agent"] for e in spawned.values()}
    assert top_once.returncode == 0 and "fake" in top_once.stdout and "tokens/s" in top_once.stdout
    finished = [e for e in events if e["kind"] == "goal.finished"]
    assert finished and finished[0]["data"]["output"] == str(out_dir)

    # each child's grants are narrower than the root's (the kernel checks child grants)
    root_caps = set(root["data"]["capabilities"])
    for c in children:
        caps = set(c["data"]["capabilities"])
        assert caps and not caps >= root_caps and len(caps) < len(root_caps), c["data"]


def test_submit_goal_refusals_change_nothing(tmp_path):
    """Bad goals, outputs and manifests are refused before anything is spawned."""
    import asyncio

    from agentix.core.errors import InvalidRequest
    from agentix.kernel.config import KernelConfig
    from agentix.kernel.dispatch import OPERATOR
    from agentix.kernel.home import Home
    from agentix.kernel.kernel import KernelRoot

    (tmp_path / "file").write_text("x")

    async def go():
        home = Home(tmp_path / "home")
        home.create()
        k = KernelRoot(home, KernelConfig(backend="plain", isolation="degraded"))
        await k.start()
        errors = []
        for params in ({"goal": ""}, {"goal": 5}, {"goal": "g", "output": "relative/dir"},
                       {"goal": "g", "output": str(tmp_path / "file")}, {"goal": "g", "manifest": "nope"},
                       {"goal": "g", "manifest": {"name": "Bad Name!"}}, {"goal": "x" * 70_000}):
            try:
                await k.pipeline.run(OPERATOR, "agent.submit_goal", params)
            except InvalidRequest as err:
                errors.append(err.data.get("field"))
        n, ws = len(k.table), sorted(p.name for p in k.home.workspaces.iterdir())
        await k.shutdown()
        return errors, n, ws

    errors, n, ws = asyncio.run(go())
    assert errors == ["goal", "goal", "output", "output", "manifest", errors[5], "goal"] and len(errors) == 7
    assert n == 0 and ws == []
    assert (tmp_path / "file").read_text() == "x"
