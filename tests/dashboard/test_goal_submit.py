"""A goal submitted in the browser (`agentix run --goal`): one orchestrator, however many
clicks; its plan is drawn as the model makes it and each subtask's state follows. The model
is a fake OpenAI-compatible server on 127.0.0.1 (the real wire format)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from http_api.conftest import Api, start_api
from tests.fakes.routed_openai import AgentScripts, RoutedOpenAIServer, config_toml, text

PLAN = {"subtasks": [
    {"id": "alpha", "role": "writer", "goal": "say alpha", "capabilities": [],
     "system_prompt": "[agent:alpha] You say alpha."},
    {"id": "beta", "role": "writer", "goal": "say beta after alpha", "capabilities": [], "depends_on": ["alpha"],
     "system_prompt": "[agent:beta] You say beta."},
]}


@pytest.fixture(scope="module")
def dash(isolation_mode: str) -> Iterator[Api]:
    server = RoutedOpenAIServer(AgentScripts({"alpha": [text("alpha done")], "beta": [text("beta done")]},
                                             plan=PLAN, synthesis="# both said"), latency=0.1)
    server.start()
    a, tmp = start_api(isolation_mode, files={"config.toml": config_toml(server.base_url, kernel=False)})
    yield a
    try:
        a.daemon.stop()
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_goal_submitted_in_the_browser_runs_once_and_its_plan_is_drawn(dash: Api, tab: Any, shots: Path) -> None:
    t = tab().sign_in(dash.operator).go("#/goals")
    form = t.page.locator("#goal-form")
    form.wait_for()
    form.locator("[name=goal]").fill("say alpha, then beta")
    before = dash.audit_size()
    form.locator("button[type=submit]").dblclick()
    t.page.wait_for_function("() => /^#\\/goals\\/.+/.test(location.hash)")
    root = t.page.evaluate("() => decodeURIComponent(location.hash.split('/')[2])")
    t.page.wait_for_selector('g.node[data-subtask="beta"]', timeout=60_000)
    t.page.wait_for_selector('g.node[data-subtask="beta"][data-state="done"]', timeout=90_000)
    assert t.page.locator('g.node[data-subtask="alpha"]').get_attribute("data-state") == "done"
    t.page.evaluate("() => window.scrollTo(0, 0)")
    t.page.screenshot(path=str(shots / "goal-submitted.png"), full_page=True)
    submitted = [e for e in dash.audit_after(before) if e["kind"] == "goal.submitted"]
    assert [e["agent"] for e in submitted] == [root], submitted   # one goal run for the double click
    assert submitted[0]["data"]["goal"] == "say alpha, then beta"
    info = dash.daemon.client.wait(root, timeout=60)
    assert info.reason == "completed"
    assert "say alpha, then beta" in t.page.locator("#goal-list").inner_text()


def test_a_goal_refused_by_the_kernel_shows_its_error_and_starts_nothing(dash: Api, tab: Any) -> None:
    t = tab().sign_in(dash.operator).go("#/goals")
    form = t.page.locator("#goal-form")
    form.wait_for()
    n = dash.agent_count()
    form.locator("[name=goal]").fill("anything")
    form.locator("[name=output]").fill("relative/dir")
    form.locator("button[type=submit]").click()
    err = form.locator("p.error")
    err.wait_for()
    assert err.get_attribute("data-code") == "invalid_request" and "absolute" in err.inner_text()
    assert dash.agent_count() == n


def test_an_orchestrator_manifest_given_in_the_browser_replaces_the_built_in_one(dash: Api, tab: Any) -> None:
    """`agentix run --goal GOAL MANIFEST` in the browser: the JSON manifest is the orchestrator's
    (its name here); a manifest that is not a JSON object is refused in the page, nothing starts."""
    t = tab().sign_in(dash.operator).go("#/goals")
    form = t.page.locator("#goal-form")
    form.wait_for()
    n = dash.agent_count()
    form.locator("[name=goal]").fill("say alpha, then beta")
    for bad in ("{not json", "[1, 2]"):
        form.locator("[name=manifest]").fill(bad)
        form.locator("button[type=submit]").click()
        err = form.locator("p.error")
        err.wait_for()
        assert err.get_attribute("data-code") == "invalid_request", err.inner_text()
        assert dash.agent_count() == n
    before = dash.audit_size()
    form.locator("[name=manifest]").fill('{"name": "my-orchestrator", "capabilities": []}')
    form.locator("button[type=submit]").click()
    t.page.wait_for_function("() => /^#\\/goals\\/.+/.test(location.hash)")
    root = t.page.evaluate("() => decodeURIComponent(location.hash.split('/')[2])")
    submitted = [e for e in dash.audit_after(before) if e["kind"] == "goal.submitted"]
    assert [(e["agent"], e["data"]["name"]) for e in submitted] == [(root, "my-orchestrator")], submitted
    dash.daemon.client.wait(root, timeout=60)   # without a model grant it cannot think: it ends
