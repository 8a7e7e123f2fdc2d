"""The inference page charts each agent's share against its weight; the goals page draws a
plan reported through the orchestrator's progress events, each subtask in its state."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import wait_until
from http_api.conftest import Api, start_api

SCRIPTED = ('default_model = "sim:engine"\n\n[providers.sim]\nkind = "scripted"\n'
            'script = "turns.yaml"\nloop = true\n')
TURNS = "- text: thought\n  usage: {input_tokens: 40, output_tokens: 25}\n"


@pytest.fixture(scope="module")
def dash(isolation_mode: str) -> Iterator[Api]:   # this module's kernel has a scripted model
    a, tmp = start_api(isolation_mode, files={"config.toml": SCRIPTED, "turns.yaml": TURNS})
    yield a
    try:
        a.daemon.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_the_inference_page_charts_share_against_weight(dash: Api, tab: Any, shots: Any) -> None:
    think = ["think", {"messages": [{"role": "user", "content": "hi"}]}]
    ids = {}
    # the scheduler keeps an agent's counters while it lives: they think, then stay
    for name, priority, n in [("light", 1, 2), ("heavy", 3, 4), ("other", 1, 1)]:
        ids[name] = dash.daemon.spawn("calls.py", json.dumps([think] * n + [["sleep", 60]]), name=name,
                                      priority=priority, capabilities=["model: sim:*"])
    try:
        assert wait_until(lambda: dash.daemon.client.call("inference.stats")["providers"]["sim"]["served"] >= 7,
                          timeout=30)
        t = tab().sign_in(dash.operator).go("#/inference")
        t.page.wait_for_selector("section[data-provider=sim] svg.chart")
        text = t.page.locator("section[data-provider=sim]").inner_text()
        for name in ids:
            assert name in text
        assert "w=3" in t.page.locator("section[data-provider=sim] svg.chart").text_content()
        t.page.screenshot(path=str(shots / "inference.png"), full_page=True)
    finally:
        for aid in ids.values():
            dash.daemon.client.call("agent.kill", agent_id=aid)


def test_the_goals_page_draws_the_plan_with_each_subtask_state(dash: Api, tab: Any, shots: Any) -> None:
    plan = [{"id": "research", "role": "researcher", "goal": "find sources", "depends_on": []},
            {"id": "numbers", "role": "analyst", "goal": "collect figures", "depends_on": []},
            {"id": "write", "role": "writer", "goal": "write the report", "depends_on": ["research", "numbers"]},
            {"id": "review", "role": "reviewer", "goal": "check the report", "depends_on": ["write"]}]

    def progress(**data: Any) -> list[Any]:
        return ["loop.event", {"kind": "progress", "data": data}]

    calls = [progress(stage="plan", subtasks=plan),
             progress(stage="wave", index=0, subtasks=["research", "numbers"], skipped=[]),
             progress(stage="subtask", id="research", ok=True, outcome="completed"),
             progress(stage="subtask", id="numbers", ok=False, outcome="crashed"),
             progress(stage="wave", index=1, subtasks=[], skipped=["write"]),
             ["sleep", 60]]
    aid = dash.daemon.spawn("calls.py", json.dumps(calls), name="planner")
    try:
        t = tab().sign_in(dash.operator).go(f"#/goals/{aid}")
        t.page.wait_for_selector("svg.plan g[data-subtask=numbers][data-state=failed]")
        states = {g.get_attribute("data-subtask"): g.get_attribute("data-state")
                  for g in t.page.locator("svg.plan g[data-subtask]").all()}
        assert states == {"research": "done", "numbers": "failed", "write": "skipped", "review": "pending"}
        assert t.page.locator("svg.plan line.edge").count() == 3
        t.page.screenshot(path=str(shots / "goals.png"))
    finally:
        dash.daemon.client.call("agent.kill", agent_id=aid)
