"""/metrics over real HTTP from a real kernel, parsed with prometheus_client's own parser:
calls by method and outcome, latencies, refusals by reason, agents by state, inference per
agent, audit size and lag, spawn latency. Any live token may scrape; no token may not."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from http_api.conftest import Api


def scrape(api: Api, token: str) -> dict[str, list[Any]]:
    with api.http(token) as c:
        r = c.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    fams: dict[str, list[Any]] = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            fams.setdefault(s.name, []).append(s)
    return fams


def value(fams: dict[str, list[Any]], name: str, **labels: str) -> float:
    got = [s.value for s in fams.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert got, f"no sample {name}{labels}; have {sorted(fams)}"
    return sum(got)


def test_metrics_count_calls_refusals_agents_and_spawns(api: Api) -> None:
    before = scrape(api, api.viewer)
    calls = [["tool.call", {"name": "echo", "args": {"text": "a"}}], ["tool.call", {"name": "nope_tool", "args": {}}]]
    aid = api.daemon.spawn("calls.py", json.dumps(calls), name="metered", capabilities=["tool: echo"])
    info = api.daemon.client.wait(aid, timeout=30)
    assert "ok" in info.result[0] and info.result[1]["error"] == "not_found", info.result
    denied = api.daemon.spawn("calls.py", json.dumps(calls[:1]), name="unarmed", capabilities=[])
    assert api.daemon.client.wait(denied, timeout=30).result[0]["error"] == "capability_denied"
    assert api.post("agent.stop", {"agent_id": "nobody-here"}, token="viewer").status_code == 403
    fams = scrape(api, api.viewer)

    def grew(name: str, **labels: str) -> float:
        old = sum(s.value for s in before.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))
        return value(fams, name, **labels) - old

    assert grew("agentix_calls_total", method="tool.call", outcome="ok") >= 1
    assert grew("agentix_calls_total", method="tool.call", outcome="capability_denied") >= 1
    assert grew("agentix_refusals_total", code="capability_denied") >= 2   # the unarmed agent, the viewer
    assert grew("agentix_refusals_total", code="capability_denied", reason="role") == 1
    assert grew("agentix_calls_total", method="tool.call", outcome="not_found") >= 1
    assert grew("agentix_call_seconds_count", method="tool.call") >= 3
    assert grew("agentix_spawn_seconds_count", method="agent.spawn") == 2
    assert value(fams, "agentix_agents", state="exited") >= 2
    assert value(fams, "agentix_audit_entries") >= api.audit_size() - 5
    assert value(fams, "agentix_audit_lag_entries") >= 0
    assert "agentix_inference_queue_length" in fams


def test_made_up_method_names_do_not_become_label_values(api: Api) -> None:
    calls = [[f"made.up_{i}", {}] for i in range(5)]
    aid = api.daemon.spawn("calls.py", json.dumps(calls), name="prober")
    res = api.daemon.client.wait(aid, timeout=30).result
    assert {r["error"] for r in res} == {"method_not_found"}
    fams = scrape(api, api.viewer)
    methods = {s.labels.get("method") for s in fams["agentix_calls_total"]}
    assert not any(m.startswith("made.up") for m in methods if m)
    assert value(fams, "agentix_calls_total", method="(unknown)", outcome="method_not_found") >= 5


def test_metrics_need_a_live_token(api: Api) -> None:
    with api.http() as c:
        r = c.get("/metrics")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    with api.http("agx_0000000000000000_" + "y" * 30) as c:
        assert c.get("/metrics").status_code == 401
    with api.http(api.viewer) as c:
        assert c.get("/metrics", headers={"Origin": "http://evil.example"}).status_code == 403
