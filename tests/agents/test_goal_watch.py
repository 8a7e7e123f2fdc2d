"""What `agentix run --goal` prints: denials counted right, progress while agents run, the model."""

from __future__ import annotations

from agentix.cli.goal import GoalWatch, model_line
from agentix.llm.inference_config import describe_model, load_config


T0 = 1_790_000_000.0   # event times as the audit log writes them: UTC ISO strings


def iso(t: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ev(kind, agent, ts=100.0, **data):
    return {"kind": kind, "agent": agent, "ts": iso(T0 + ts), "data": data}


def watch_with_child():
    w = GoalWatch("root1", "bootstrap")
    w.feed(ev("agent.spawned", "kid1", name="alpha", parent="root1", capabilities=["tool: echo"]))
    return w


def test_granted_and_revoked_are_not_denials():
    w = watch_with_child()
    for aid in ("root1", "kid1"):
        assert w.feed(ev("capability.granted", aid, tokens=[])) is None
        assert w.feed(ev("capability.delegated", aid)) is None
        assert w.feed(ev("capability.revoked", aid, tokens=[])) is None
    assert w.to_data()["root1"]["denied"] == 0 and w.to_data()["kid1"]["denied"] == 0
    line = w.feed(ev("capability.denied", "kid1", tool="file_write", message="no capability allows it"))
    assert "denied" in line and "file_write" in line
    w.feed(ev("taint.violation", "kid1", tool="exec", message="tainted"))
    assert w.to_data()["kid1"]["denied"] == 2 and w.to_data()["root1"]["denied"] == 0


def test_progress_line_names_each_live_child_its_state_and_calls():
    w = watch_with_child()
    w.feed(ev("agent.spawned", "kid2", ts=110.0, name="beta", parent="root1"))
    w.feed(ev("tool.invoked", "kid1", tool="echo", args={}))
    w.feed(ev("usage.reported", "kid1", provider="local", model="gemma-3-270m", input_tokens=5, output_tokens=2))
    stats = {"providers": {"local": {"agents": [{"agent_id": "kid1", "waiting": 0, "running": 1},
                                                {"agent_id": "kid2", "waiting": 1, "running": 0}]}}}
    line = w.progress_line(T0 + 130.0, stats)
    assert "alpha model thinking 30s, 1 tool call, 1 model call" in line
    assert "beta waiting for the model 20s, 0 tool calls, 0 model calls" in line
    w.feed(ev("agent.exited", "kid1", runtime_s=31.0, reason="completed"))
    assert "alpha" not in w.progress_line(T0 + 131.0, None)


def test_model_line_shows_the_model_and_the_tiny_model_notice(tmp_path):
    cfg = load_config(tmp_path, {}, local_installed=True)
    d = describe_model(cfg, None)
    assert d["model"] == "local:gemma-3-270m" and d["kind"] == "local"
    line = model_line(d)
    assert "local:gemma-3-270m" in line and "note:" in line and "270M" in line and "docs/inference.md" in line
    remote = load_config(tmp_path, {"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": "http://127.0.0.1:11434/v1",
                                    "AGENTIX_MODEL": "openai:llama3.2"}, local_installed=True)
    r = describe_model(remote, None)
    assert r["notice"] is None and "note:" not in model_line(r) and "127.0.0.1:11434" in model_line(r)
    script = tmp_path / "s.yaml"
    script.write_text("- text: hi\n")
    (tmp_path / "config.toml").write_text(f'default_model = "demo:x"\n[providers.demo]\nkind = "scripted"\n'
                                          f'script = "{script}"\n')
    s = describe_model(load_config(tmp_path, {}, local_installed=False), None)
    assert s["scripted"] and "scripted" in s["notice"]


def test_run_goal_prints_progress_while_a_slow_child_runs(tmp_path, monkeypatch):
    """Real daemon, real CLI code, a model that takes its time: progress lines appear."""
    import io

    from rich.console import Console

    from agentix.cli import goal as goal_cli
    from agentix.sdk import Kernel
    from tests.agents.daemon_util import start_daemon, stop_daemon
    from tests.fakes.openai_server import Scripted
    from tests.fakes.routed_openai import AgentScripts, RoutedOpenAIServer, config_toml, text

    plan = {"subtasks": [{"id": "slow", "goal": "take a while", "capabilities": ["tool: echo"],
                          "system_prompt": "[agent:slow]"}]}
    scripts = AgentScripts({"slow": [Scripted(text="slow result", output_tokens=3)]}, plan=plan, synthesis="done")
    server = RoutedOpenAIServer(scripts, latency=1.5)
    server.start()
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(config_toml(server.base_url))
    monkeypatch.setattr(goal_cli, "PROGRESS_EVERY", 0.5)
    buf = io.StringIO()
    proc = start_daemon(home)
    try:
        with Kernel(home) as k:
            code = goal_cli.run_goal(k, "do it slowly", output=None, manifest=None, timeout=120, as_json=False,
                                     console=Console(file=buf, width=200))
    finally:
        stop_daemon(home, proc)
        server.stop()
    out = buf.getvalue()
    assert code == 0, out
    assert "model fake:fake-model (provider fake, openai" in out
    progress = [ln for ln in out.splitlines() if ln.startswith("… ")]
    assert progress, out
    assert any("model call" in ln and "tool call" in ln for ln in progress)
    assert any("waiting for the model" in ln or "model thinking" in ln for ln in progress), progress
