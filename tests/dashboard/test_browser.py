"""The dashboard in a real Chromium against a real kernel: the live tree, approvals answered
in the browser, the viewer role, and data from agents rendered as text, never as markup."""

from __future__ import annotations

import json
from typing import Any

import httpx

from conftest import wait_until
from http_api.conftest import Api

PAYLOAD = "<img src=x onerror=alert(1)>"
SCRIPT_PAYLOAD = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\">"


def test_the_tree_updates_when_an_agent_spawns_and_exits(dash: Api, tab: Any, shots: Any) -> None:
    t = tab().sign_in(dash.operator)
    t.page.wait_for_selector("#tree-body")
    aid = dash.daemon.spawn("sleeper.py", "4", name="napper")
    row = t.page.locator(f'tr[data-agent-id="{aid}"]')
    row.wait_for()
    assert row.get_attribute("data-state") in ("spawning", "running")
    assert "napper" in row.inner_text()
    assert "layers" in row.inner_text() or "degraded" in row.inner_text()  # isolation is shown
    t.page.screenshot(path=str(shots / "tree.png"))
    # a change to a shown agent re-reads its row only
    dash.daemon.client.call("agent.pause", agent_id=aid)
    t.page.wait_for_selector(f'tr[data-agent-id="{aid}"][data-state="paused"]')
    dash.daemon.client.call("agent.resume", agent_id=aid)
    t.page.wait_for_selector(f'tr[data-agent-id="{aid}"][data-state="running"]')
    # it exits on its own: the row changes without a reload (the tree re-reads the kernel
    # only when the event stream says so; no timer fetches)
    t.page.wait_for_selector(f'tr[data-agent-id="{aid}"][data-state="exited"]', timeout=30_000)
    assert "completed" in row.inner_text()


def test_an_approval_approved_in_the_browser_lets_the_blocked_call_proceed(dash: Api, tab: Any, shots: Any) -> None:
    calls = [["tool.call", {"name": "echo", "args": {"text": "ship it"}}]]
    aid = dash.daemon.spawn("calls.py", json.dumps(calls), name="asker", capabilities=["tool: echo"],
                            approval_required=["echo"])
    t = tab().sign_in(dash.operator).go("#/approvals")
    card = t.page.locator("article[data-approval-id]", has_text="ship it")
    card.wait_for()
    assert "asker" in card.inner_text() and "approval_required" in card.inner_text()
    phone = tab(viewport={"width": 390, "height": 844}).sign_in(dash.operator).go("#/approvals")
    phone.page.locator("article[data-approval-id]").first.wait_for()
    phone.page.screenshot(path=str(shots / "approvals-phone.png"))
    t.page.screenshot(path=str(shots / "approvals.png"))
    # the agent is still blocked: nothing ran yet
    assert dash.daemon.client.call("agent.status", agent_id=aid)["exit"] is None
    card.locator("input[name=reason]").fill("looks fine")
    card.locator("button[data-action=approve]").click()
    info = dash.daemon.client.wait(aid, timeout=30)
    assert info.result == [{"ok": {"text": "ship it"}}] or info.result[0].get("ok"), info.result
    granted = [e for e in dash.audit_after(0) if e["kind"] == "approval.granted" and e["agent"] == aid]
    assert granted and granted[0]["data"]["reason"] == "looks fine"
    t.page.wait_for_selector("#no-approvals, article[data-approval-id]:not([data-state=pending])")


def test_a_viewer_cannot_press_stop_and_the_api_refuses(dash: Api, tab: Any, shots: Any) -> None:
    aid = dash.daemon.spawn("sleeper.py", name="watched")
    try:
        t = tab().sign_in(dash.viewer).go(f"#/agent/{aid}")
        stop = t.page.locator("button[data-action='agent.stop']")
        stop.wait_for()
        t.page.wait_for_selector("#log:not(:empty)")
        t.page.screenshot(path=str(shots / "agent.png"), full_page=True)
        assert stop.is_disabled()
        assert t.page.locator("button[data-action='agent.kill']").is_disabled()
        assert t.page.locator("button[data-action='agent.pause']").is_disabled()
        # no operator form on the page either (send, grant, snapshot, fork), and no revoke
        assert t.page.locator("#ops-viewer").is_visible()
        assert t.page.locator("form#send-form, form#grant-form, form#snapshot-form, form#fork-form").count() == 0
        t.page.wait_for_selector("button[data-action='cap.revoke']")   # its preset's token
        for b in t.page.locator("button[data-action='cap.revoke']").all():
            assert b.is_disabled()
        before = dash.audit_size()
        # pressing it anyway (a viewer removing `disabled` in devtools) reaches a server that refuses
        res = t.page.evaluate("""async (id) => {
            const r = await fetch('/v1/call/agent.stop', {method: 'POST', body: JSON.stringify({agent_id: id}),
              headers: {'Content-Type': 'application/json',
                        'Authorization': 'Bearer ' + sessionStorage.getItem('agentix.token')}});
            return [r.status, await r.json()];
        }""", aid)
        assert res[0] == 403 and res[1]["error"]["code"] == "capability_denied", res
        assert res[1]["error"]["data"]["reason"] == "role"
        st = dash.daemon.client.call("agent.status", agent_id=aid)
        assert st["state"] == "running" and st["exit"] is None   # nothing changed
        refused = [e for e in dash.audit_after(before) if e["kind"] == "http.refused"]
        assert refused and refused[0]["data"]["method"] == "agent.stop"
        assert not [e for e in dash.audit_after(before) if e["kind"] in ("agent.exited", "agent.stop")]
        # the viewer's approval buttons are disabled too
        t.go("#/approvals")
        t.page.wait_for_selector("#approvals")
        for b in t.page.locator("article[data-state=pending] button").all():
            assert b.is_disabled()
    finally:
        dash.daemon.client.call("agent.kill", agent_id=aid)


def test_html_from_agents_is_shown_as_text_and_runs_no_script(dash: Api, tab: Any) -> None:
    # an agent cannot be *named* with markup: the manifest refuses it, over HTTP too, and
    # nothing is spawned
    n = dash.agent_count()
    r = dash.post("agent.spawn", {"manifest": {"name": PAYLOAD, "program": "module:agentix.agents.loop"}})
    assert r.status_code == 400 and r.json()["error"]["code"] in ("invalid_request", "invalid_params")
    assert dash.agent_count() == n
    # so the payload comes through what an agent does control: its output (log), its result,
    # the arguments of an approval it asks for, and the plan it reports (model output)
    plan = {"stage": "plan", "subtasks": [{"id": "x", "role": PAYLOAD, "goal": SCRIPT_PAYLOAD, "depends_on": []}]}
    calls = [["print", PAYLOAD], ["print", SCRIPT_PAYLOAD],
             ["loop.event", {"kind": "progress", "data": plan}],
             ["tool.call", {"name": "echo", "args": {"text": SCRIPT_PAYLOAD}}]]
    aid = dash.daemon.spawn("calls.py", json.dumps(calls), name="mallory", capabilities=["tool: echo"],
                            approval_required=["echo"])
    t = tab().sign_in(dash.operator)
    for route, wait in [(f"#/agent/{aid}", "#log:not(:empty)"), ("#/approvals", "article[data-approval-id]"),
                        ("#/audit", "#audit-rows tr"), (f"#/goals/{aid}", "svg.plan"), ("#/", "#tree-body tr")]:
        t.go(route)
        t.page.wait_for_selector(wait)
        t.page.wait_for_timeout(300)
        assert t.page.evaluate("() => window.__pwned") is None, route
        assert t.page.locator("img").count() == 0, f"markup from an agent became an element on {route}"
    t.go(f"#/agent/{aid}")
    t.page.wait_for_function("() => document.querySelector('#log').textContent.includes('onerror')")
    assert PAYLOAD in t.page.locator("#log").text_content()
    t.go(f"#/goals/{aid}")
    t.page.wait_for_selector("svg.plan")
    assert "window.__pwned" in t.page.locator("#goal-detail").text_content()
    assert t.dialogs == []
    dash.daemon.client.call("agent.kill", agent_id=aid)


def test_the_dashboard_page_carries_a_strict_csp_and_no_inline_script(dash: Api) -> None:
    r = httpx.get(dash.url + "/")
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp and "frame-ancestors 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    import re

    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", r.text, flags=re.S)
    assert scripts and all(not s.strip() for s in scripts), "inline script in index.html"
    assert not re.search(r"\son[a-z]+\s*=", r.text), "inline event handler in index.html"


def test_a_token_revoked_while_signed_in_returns_the_tab_to_the_sign_in(dash: Api, tab: Any) -> None:
    token = dash.daemon.client.call("tokens.create", name="shortlived", role="operator")["token"]
    t = tab().sign_in(token)
    t.page.wait_for_selector("#tree-body tr")
    dash.daemon.client.call("tokens.revoke", name="shortlived")
    t.go("#/approvals")   # the next request is refused: 401
    t.page.wait_for_selector("#signin:not([hidden])")
    assert "revoked" in t.page.locator("#signin-error").inner_text()
    assert t.page.evaluate("() => sessionStorage.getItem('agentix.token')") is None
