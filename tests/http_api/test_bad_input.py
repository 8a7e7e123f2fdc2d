"""Bad HTTP input: each is refused with the right status and JSON error, and the world is
unchanged (no agent started, no audit record)."""

from __future__ import annotations

import threading

import httpx
import pytest

from conftest import STANDARD, program

SPAWN = {"manifest": {"name": "bad-input", "program": program("sleeper.py"), "args": ["30"],
                      "capabilities": list(STANDARD)}}


def unchanged(api):
    """A context that asserts no agent and no audit record appeared."""

    class _C:
        def __enter__(self):
            self.agents, self.seq = api.agent_count(), api.audit_size()

        def __exit__(self, *exc):
            if exc[0] is None:
                assert api.agent_count() == self.agents, "an agent appeared"
                assert api.audit_after(self.seq) == [], "an audit record appeared"

    return _C()


def _post(api, content: bytes, headers: dict[str, str]) -> httpx.Response:
    with api.http(api.operator) as c:
        return c.post("/v1/call/agent.spawn", content=content, headers=headers)


@pytest.mark.parametrize("body", [b"{", b"{'manifest': 1}", b"\xff\xfe", b'{"a": NaN}', b"[1,"])
def test_malformed_json_is_400_parse_error(api, body):
    with unchanged(api):
        r = _post(api, body, {"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "parse_error"
    assert r.json()["error"]["rpc_code"] == -32700


@pytest.mark.parametrize("body", [b"[]", b'"spawn"', b"42", b"null"])
def test_a_body_that_is_not_an_object_is_400(api, body):
    with unchanged(api):
        r = _post(api, body, {"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("nest", ["[", '{"a":'])
def test_a_body_nested_deeper_than_the_kernel_socket_allows_is_400(api, nest):
    """The same depth bound as the kernel socket's frames (rpc/framing.MAX_DEPTH): a value the
    kernel could not write back is refused at the door, not kept."""
    close = "]" if nest == "[" else "}"
    deep = nest * 200 + "1" + close * 200
    body = ('{"manifest": {"name": "deep", "program": "x", "env": {"X": ' + deep + '}}}').encode()
    with unchanged(api):
        r = _post(api, body, {"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_request" and err["data"]["limit"] == 128


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                   "application/jsonx", None])
def test_a_wrong_content_type_is_415(api, ctype):
    import json

    with unchanged(api):
        r = _post(api, json.dumps(SPAWN).encode(), {"Content-Type": ctype} if ctype else {})
    assert r.status_code == 415 and r.json()["error"]["code"] == "invalid_request"


def test_an_oversized_body_is_413(api):
    big = b'{"manifest": {"name": "x"}, "pad": "' + b"a" * (1024 * 1024 + 10) + b'"}'
    with unchanged(api):
        r = _post(api, big, {"Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"]["data"]["limit"] == 1024 * 1024


def test_an_oversized_chunked_body_without_content_length_is_413(api):
    def chunks():
        for _ in range(40):
            yield b"a" * 32768

    with unchanged(api):
        with api.http(api.operator) as c:
            r = c.post("/v1/call/agent.spawn", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:1",
                                    "https://127.0.0.1", "http://localhost.evil.example"])
def test_a_foreign_browser_origin_is_refused(api, origin):
    with unchanged(api):
        with api.http(api.operator) as c:
            r = c.post("/v1/call/agent.spawn", json=SPAWN, headers={"Origin": origin})
    assert r.status_code == 403 and r.json()["error"]["data"]["reason"] == "origin"
    assert "access-control-allow-origin" not in r.headers  # no CORS


def test_the_servers_own_origin_is_accepted(api):
    with api.http(api.operator) as c:
        r = c.post("/v1/call/agent.list", json={}, headers={"Origin": api.url})
    assert r.status_code == 200


def test_a_cors_preflight_gets_no_cors(api):
    with api.http() as c:
        r = c.options("/v1/call/agent.spawn", headers={"Origin": "http://evil.example",
                                                       "Access-Control-Request-Method": "POST"})
    assert r.status_code in (404, 405)
    assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize("path", ["/v1/call/../../etc/passwd", "/v1/call/%2e%2e%2fetc", "/static/../x", "/v1"])
def test_unknown_routes_are_404_json(api, path):
    with unchanged(api):
        with api.http(api.operator) as c:
            r = c.post(path, json={})
    assert r.status_code in (404, 405)
    assert r.headers["content-type"] == "application/json"


def test_a_handler_refusal_keeps_its_code_and_status(api):
    r = api.post("agent.status", {"agent_id": "nobody"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = api.post("agent.wait", {"agent_id": 5})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"


def test_the_kernel_shuts_down_with_a_stream_open(fresh_api):
    """An open SSE connection does not hold the kernel up (the stream is cut at shutdown)."""
    opened = threading.Event()

    def follow() -> None:
        try:
            with fresh_api.http(fresh_api.viewer) as c, c.stream("GET", "/v1/events") as s:
                opened.set()
                for _ in s.iter_lines():
                    pass
        except httpx.HTTPError:
            pass

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    assert opened.wait(10)
    fresh_api.daemon.client.shutdown()
    fresh_api.daemon.proc.wait(timeout=30)
    assert fresh_api.daemon.proc.returncode == 0
    t.join(10)
    assert not t.is_alive()
