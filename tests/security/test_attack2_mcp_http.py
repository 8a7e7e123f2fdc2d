"""Attack round 2 on ``agentix mcp --http``: a web page doing DNS rebinding against it, and an
anonymous local client flooding it with bad bearer tokens (each one used to become an audit
row through ``tokens.verify``: anyone on the machine could grow the log without bound)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

pytest.importorskip("mcp")

from agentix.core.record_quota import DEFAULT_BURST, DEFAULT_RATE  # noqa: E402
from conftest import serve_mcp_http, wait_until  # noqa: E402

BODY = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


@pytest.fixture(scope="module")
def face(module_kernel) -> Iterator[tuple[str, int]]:
    """One face for the rebinding cases (they only read); the flood test has its own kernel
    (it measures the face's record quota, which must start full)."""
    with serve_mcp_http(module_kernel.home) as face:
        yield face


@pytest.fixture(scope="module")
def op_token(module_kernel) -> str:
    return module_kernel.client.call("tokens.create", name="op", role="operator")["token"]


@pytest.fixture
def own_face(kernel) -> Iterator[tuple[str, int]]:
    with serve_mcp_http(kernel.home) as face:
        yield face


@pytest.mark.parametrize("host", ["evil.example:{port}", "evil.example", "127.0.0.1:1", ""])
def test_dns_rebinding_page_is_refused_before_its_token_is_checked(module_kernel, face, op_token, host):
    kernel = module_kernel
    url, port = face
    tok = op_token
    before = len(kernel.client.audit_tail(0, limit=10000))
    r = httpx.post(url, json=BODY, headers={**HEADERS, "Host": host.format(port=port),
                                            "Authorization": f"Bearer {tok}"}, timeout=10)
    assert r.status_code == 421, r.text
    assert r.json()["error"]["data"]["reason"] == "host"
    assert len(kernel.client.audit_tail(0, limit=10000)) == before   # nothing reached the kernel
    ok = httpx.post(url, json=BODY, headers={**HEADERS, "Host": f"localhost:{port}",
                                             "Authorization": f"Bearer {tok}"}, timeout=10)
    assert ok.status_code == 200, ok.text


def test_anonymous_bad_token_flood_cannot_grow_the_audit_log_without_bound(kernel, own_face):
    url, _port = own_face
    tail = kernel.client.audit_tail(0, limit=1)
    before = tail[-1]["seq"] if tail else 0
    n = DEFAULT_BURST + 150
    t0 = time.monotonic()
    with httpx.Client(timeout=10) as c:
        for i in range(n):
            r = c.post(url, json=BODY, headers={**HEADERS, "Authorization": f"Bearer agx_{i:016x}_{'y' * 30}"})
            assert r.status_code == 401
    elapsed = time.monotonic() - t0
    rows = kernel.client.audit_tail(before, limit=10000)
    refused = [e for e in rows if e["kind"] == "http.refused"]
    assert len(refused) <= DEFAULT_BURST + DEFAULT_RATE * elapsed + 1, (len(refused), elapsed)
    assert len(refused) < n
    assert {e["data"]["by"] for e in refused} == {"mcp-http-auth"}   # its own quota, not the clients'
    assert kernel.client.list() == []

    def accounted() -> bool:  # the rest arrives as one aggregate within its flush interval
        rows = kernel.client.audit_tail(before, limit=10000)
        held = sum(e["data"]["count"] for e in rows if e["kind"] == "audit.suppressed")
        return len([e for e in rows if e["kind"] == "http.refused"]) + held == n

    assert wait_until(accounted, timeout=30)
