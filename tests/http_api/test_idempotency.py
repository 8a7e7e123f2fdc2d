"""Idempotency keys: a retried spawning POST returns the first result and starts nothing new."""

from __future__ import annotations

import concurrent.futures
import sqlite3

from conftest import STANDARD, program


def _spawn(name: str) -> dict:
    return {"manifest": {"name": name, "program": program("sleeper.py"), "args": ["30"],
                         "capabilities": list(STANDARD)}}


def _named(api, name: str) -> list[dict]:
    return [a for a in api.daemon.client.call("agent.list", all=True)["agents"] if a["name"] == name]


def test_a_retried_spawn_spawns_once(api):
    first = api.post("agent.spawn", _spawn("idem-once"), headers={"Idempotency-Key": "k-once"})
    assert first.status_code == 200, first.text
    again = api.post("agent.spawn", _spawn("idem-once"), headers={"Idempotency-Key": "k-once"})
    assert again.status_code == 200
    assert again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    assert "idempotent-replayed" not in first.headers
    assert len(_named(api, "idem-once")) == 1
    api.daemon.client.kill(first.json()["agent_id"])


def test_concurrent_retries_with_one_key_spawn_once(api):
    def go(_: int):
        return api.post("agent.spawn", _spawn("idem-race"), headers={"Idempotency-Key": "k-race"})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        rs = list(pool.map(go, range(8)))
    assert all(r.status_code == 200 for r in rs), [r.text for r in rs]
    assert len({r.json()["agent_id"] for r in rs}) == 1
    assert len(_named(api, "idem-race")) == 1
    api.daemon.client.kill(rs[0].json()["agent_id"])


def test_a_key_reused_for_a_different_request_is_409_and_spawns_nothing(api):
    first = api.post("agent.spawn", _spawn("idem-a"), headers={"Idempotency-Key": "k-reuse"})
    assert first.status_code == 200
    agents, seq = api.agent_count(), api.audit_size()
    r = api.post("agent.spawn", _spawn("idem-b"), headers={"Idempotency-Key": "k-reuse"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    assert api.agent_count() == agents and api.audit_size() == seq
    assert not _named(api, "idem-b")
    api.daemon.client.kill(first.json()["agent_id"])


def test_keys_are_per_token(api):
    other = api.daemon.client.call("tokens.create", name="ops2", role="operator")["token"]
    a = api.post("agent.spawn", _spawn("idem-tok"), headers={"Idempotency-Key": "k-tok"})
    b = api.post("agent.spawn", _spawn("idem-tok"), token=other, headers={"Idempotency-Key": "k-tok"})
    assert a.status_code == b.status_code == 200
    assert a.json()["agent_id"] != b.json()["agent_id"]
    for r in (a, b):
        api.daemon.client.kill(r.json()["agent_id"])


def test_a_refusal_is_replayed_too(api):
    bad = {"manifest": {"name": "idem-bad"}}  # no program
    r1 = api.post("agent.spawn", bad, headers={"Idempotency-Key": "k-bad"})
    r2 = api.post("agent.spawn", bad, headers={"Idempotency-Key": "k-bad"})
    assert r1.status_code == r2.status_code == 400
    assert r1.json() == r2.json() and r2.headers.get("idempotent-replayed") == "true"


def test_the_first_response_survives_a_kernel_restart(fresh_api):
    """Keys live in the store: a retry after a restart still returns the first result."""
    from conftest import Daemon

    first = fresh_api.post("agent.spawn", _spawn("idem-restart"), headers={"Idempotency-Key": "k-restart"})
    assert first.status_code == 200
    db = sqlite3.connect(f"file:{fresh_api.daemon.home / 'agentix.db'}?mode=ro", uri=True)
    assert db.execute("SELECT count(*) FROM http_idempotency WHERE key='k-restart'").fetchone() == (1,)
    db.close()
    d = fresh_api.daemon
    d.stop()
    port = fresh_api.url.rsplit(":", 1)[1]
    fresh_api.daemon = Daemon(d.home, d.isolation, args=("--http", f"127.0.0.1:{port}"))
    from conftest import wait_until

    import httpx

    def up() -> bool:
        try:
            return httpx.get(fresh_api.url + "/openapi.json", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    assert wait_until(up, timeout=10)
    again = fresh_api.post("agent.spawn", _spawn("idem-restart"), headers={"Idempotency-Key": "k-restart"})
    assert again.status_code == 200 and again.json() == first.json()
    # the restarted kernel lists only the first run's record: the retry started nothing
    assert [a["agent_id"] for a in _named(fresh_api, "idem-restart")] == [first.json()["agent_id"]]


def test_an_idempotency_key_on_a_method_that_does_not_take_one_is_refused(api):
    seq = api.audit_size()
    r = api.post("agent.stop", {"agent_id": "nobody"}, headers={"Idempotency-Key": "k-stop"})
    assert r.status_code == 400 and "Idempotency-Key" in r.json()["error"]["message"]
    assert api.audit_size() == seq
