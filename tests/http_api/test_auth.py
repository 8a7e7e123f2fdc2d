"""Bearer tokens and roles over real HTTP: each refusal is asserted, then that nothing moved."""

from __future__ import annotations

import httpx
import pytest

from agentix.kernel.clock import VirtualClock
from agentix.kernel.http_api import start_http
from conftest import STANDARD, program
from security._world import run


def _manifest(name: str, prog: str = "sleeper.py", *args: str) -> dict:
    return {"manifest": {"name": name, "program": program(prog), "args": list(args),
                         "capabilities": list(STANDARD)}}


def test_a_viewer_cannot_spawn_and_nothing_is_spawned(api):
    agents, seq = api.agent_count(), api.audit_size()
    r = api.post("agent.spawn", _manifest("viewer-spawn"), token="viewer")
    assert r.status_code == 403
    err = r.json()["error"]
    assert err["code"] == "capability_denied" and err["data"]["reason"] == "role"
    assert "viewer" in err["message"]
    assert api.agent_count() == agents
    new = api.audit_after(seq)
    assert [e["kind"] for e in new] == ["http.refused"]  # the refusal, and nothing else
    assert new[0]["data"]["by"] == "http:watcher" and new[0]["data"]["method"] == "agent.spawn"


@pytest.mark.parametrize("method", ["agent.stop", "agent.kill", "cap.grant", "cap.revoke", "approval.respond",
                                    "kernel.shutdown", "tokens.create", "tokens.revoke", "tool.invoke",
                                    "package.rm", "trust.add"])
def test_a_viewer_is_refused_every_state_change(api, method):
    seq = api.audit_size()
    r = api.post(method, {"agent_id": "x", "name": "x", "token_id": "x", "id": "x", "approve": True,
                          "role": "operator", "ref": "x:1", "key": "x", "pattern": "x"}, token="viewer")
    assert r.status_code == 403 and r.json()["error"]["data"]["reason"] == "role"
    assert [e["kind"] for e in api.audit_after(seq)] == ["http.refused"]
    assert api.daemon.proc.poll() is None  # kernel.shutdown did not happen


@pytest.mark.parametrize("method", ["agent.list", "kernel.info", "audit.verify", "approval.list", "cap.list",
                                    "tool.list", "events.tail", "inference.stats", "tokens.list"])
def test_a_viewer_can_read(api, method):
    r = api.post(method, {}, token="viewer")
    assert r.status_code == 200, r.text


def test_an_operator_spawns_and_the_audit_names_the_http_caller(api):
    seq = api.audit_size()
    r = api.post("agent.spawn", _manifest("http-spawned", "exit_code.py", "0"))
    assert r.status_code == 200, r.text
    aid = r.json()["agent_id"]
    api.daemon.client.wait(aid, timeout=30)
    calls = [e for e in api.audit_after(seq) if e["kind"] == "http.call"]
    assert calls and calls[0]["data"] == {"by": "http:ops", "method": "agent.spawn", "status": 200, "ok": True}
    spawned = [e for e in api.audit_after(seq) if e["kind"] == "agent.spawned" and e["agent"] == aid]
    assert spawned


def test_a_tool_invoked_over_http_is_recorded_as_the_http_caller(api):
    seq = api.audit_size()
    r = api.post("tool.invoke", {"name": "echo", "args": {"message": "hi"}})
    assert r.status_code == 200, r.text
    invoked = [e for e in api.audit_after(seq) if e["kind"] == "tool.invoked"]
    assert invoked and invoked[0]["data"]["by"] == "http:ops"


@pytest.mark.parametrize("header", [
    None,                                   # no Authorization at all
    "Bearer",                               # no token
    "Basic b3BzOm9wcw==",                   # another scheme
    "Bearer agx_0123456789abcdef_" + "A" * 43,   # well-formed, unknown
    "Bearer not-a-token",                   # malformed
])
def test_an_invalid_token_is_401_and_nothing_happens(api, header):
    agents, seq = api.agent_count(), api.audit_size()
    with api.http() as c:
        r = c.post("/v1/call/agent.spawn", json=_manifest("no-auth"),
                   headers={"Authorization": header} if header else {})
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["error"]["code"] == "unauthenticated"
    assert api.agent_count() == agents and api.audit_size() == seq


def test_a_forged_secret_for_a_real_token_id_is_401(api):
    forged = api.operator[: -4] + ("AAAA" if not api.operator.endswith("AAAA") else "BBBB")
    seq = api.audit_size()
    r = api.post("agent.list", {}, token=forged)
    assert r.status_code == 401 and r.json()["error"]["data"]["reason"] == "invalid"
    assert api.audit_size() == seq


def test_an_expired_token_is_401(tmp_path):
    """A token with a TTL over real HTTP, served by a kernel whose clock the test steps: still
    accepted a moment before its expiry, 401 at it, and nothing moved."""
    clock = VirtualClock()

    async def body(w):
        server = await start_http(w.k.http, "127.0.0.1", 0)
        try:
            tok = (await w.op("tokens.create", name="short", role="operator", ttl="1m"))["token"]
            async with httpx.AsyncClient(base_url=server.url, timeout=30,
                                         headers={"Authorization": f"Bearer {tok}"}) as c:
                clock.advance(59.9)
                before = (await c.post("/v1/call/agent.list", json={})).status_code
                clock.advance(0.1)
                await w.k.audit.sink.sync()
                agents, seq = len(list(w.k.table)), len(w.events())
                r = await c.post("/v1/call/agent.spawn", json=_manifest("expired"))
                await w.k.audit.sink.sync()
                return before, r.status_code, r.json(), agents, seq, len(list(w.k.table)), len(w.events())
        finally:
            await server.close()

    before, status, err, agents, seq, agents_after, seq_after = run(tmp_path, body, clock=clock)
    assert before == 200
    assert status == 401 and err["error"]["data"]["reason"] == "expired"
    assert agents_after == agents and seq_after == seq


def test_a_revoked_token_is_401_and_others_still_work(api):
    tok = api.daemon.client.call("tokens.create", name="to-revoke", role="operator")["token"]
    assert api.post("agent.list", {}, token=tok).status_code == 200
    api.daemon.client.call("tokens.revoke", name="to-revoke")
    agents, seq = api.agent_count(), api.audit_size()
    r = api.post("agent.spawn", _manifest("revoked"), token=tok)
    assert r.status_code == 401 and r.json()["error"]["data"]["reason"] == "revoked"
    assert api.agent_count() == agents and api.audit_size() == seq
    assert api.post("agent.list", {}).status_code == 200


def test_tokens_are_stored_hashed_never_in_the_clear(api):
    import sqlite3

    db = sqlite3.connect(f"file:{api.daemon.home / 'agentix.db'}?mode=ro", uri=True)
    rows = db.execute("SELECT name, secret_hash FROM http_tokens").fetchall()
    blob = b"".join(bytes(h) for _n, h in rows)
    dump = "\n".join(db.iterdump())
    db.close()
    for tok in (api.operator, api.viewer):
        secret = tok.split("_", 2)[2]  # agx_<id>_<secret>; the secret itself may hold "_"
        assert secret not in dump and secret.encode() not in blob
    assert {"ops", "watcher"} <= {n for n, _h in rows}
    listed = api.daemon.client.call("tokens.list")["tokens"]
    assert all("token" not in t and "secret_hash" not in t for t in listed)


def test_a_token_name_cannot_be_reused(api):
    from agentix.sdk.errors import AgentixError

    with pytest.raises(AgentixError) as info:
        api.daemon.client.call("tokens.create", name="ops", role="viewer")
    assert info.value.code == "conflict"
