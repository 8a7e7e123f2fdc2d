"""What `agentix run --goal` prints: denials counted right, progress while agents run, the model."""

from __future__ import annotations

from agentix.cli.goal import GoalWatch, model_line
from agentix.llm.config import describe_model, load_config


def ev(kind, agent, ts=100.0, **data):
    return {"kind": kind, "agent": agent, "ts": ts, "data": data}


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
    line = w.progress_line(130.0, stats)
    assert "alpha model thinking 30s, 1 tool call, 1 model call" in line
    assert "beta waiting for the model 20s, 0 tool calls, 0 model calls" in line
    w.feed(ev("agent.exited", "kid1", runtime_s=31.0, reason="completed"))
    assert "alpha" not in w.progress_line(131.0, None)


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
