"""``dashboard.agents``: the tree's one read (every agent with taint, isolation and budget),
or only the rows an event named; a read method, so a viewer may call it; bad input refused."""

from __future__ import annotations

from http_api.conftest import Api


def test_dashboard_agents_reads_all_or_only_the_ids_asked(dash: Api) -> None:
    a = dash.daemon.spawn("sleeper.py", name="one")
    b = dash.daemon.spawn("sleeper.py", name="two")
    try:
        every = dash.post("dashboard.agents", {}, token="viewer").json()["agents"]
        assert {a, b} <= {r["agent_id"] for r in every}
        row = next(r for r in every if r["agent_id"] == a)
        assert row["taint"] == [] and row["isolation"]["backend"] and "used" in row["budget"]
        some = dash.post("dashboard.agents", {"agents": [b, "ag-nosuch00"]}, token="viewer").json()["agents"]
        assert [r["agent_id"] for r in some] == [b]
    finally:
        for aid in (a, b):
            dash.daemon.client.call("agent.kill", agent_id=aid)


def test_dashboard_agents_refuses_a_bad_id_list(dash: Api) -> None:
    before = dash.audit_size()
    for bad in ["ag-1", [1, 2], ["x"] * 1001, {"a": 1}]:
        r = dash.post("dashboard.agents", {"agents": bad})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request", (bad, r.text)
        assert r.json()["error"]["data"]["field"] == "agents"
    assert [e["kind"] for e in dash.audit_after(before)] == []   # a read: nothing recorded
