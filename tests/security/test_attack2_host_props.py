"""The Host rule as a property (rpc/http.py ``host_guard``, ``own_origins``): over any Host
header bytes, a request reaches the app if and only if the header names the bound address
(on loopback: a loopback name and the port), compared without case; otherwise 421 and the app
never runs. The attack tests (test_attack2_http.py) run it against the real server."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings, strategies as st

from agentix.rpc.http import host_guard, own_origins

PORT = 8470
GOOD = ["127.0.0.1:8470", "localhost:8470", "[::1]:8470", "LocalHost:8470"]
hosts = st.one_of(
    st.sampled_from(GOOD),
    st.sampled_from(["127.0.0.1", "localhost", "[::1]", "evil.example", "127.0.0.1.nip.io", "127.1",
                     "0.0.0.0", "localhost.", "2130706433", "[::ffff:127.0.0.1]"]).flatmap(
        lambda h: st.sampled_from([h, f"{h}:{PORT}", f"{h}:80", f"{h}:{PORT}0", f"{h}:+{PORT}"])),
    st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b),
)


def _run(host: bytes | None, bound: str = "127.0.0.1") -> tuple[bool, int | None]:
    reached = []
    sent: list[dict] = []

    async def app(scope, receive, send):
        reached.append(True)

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(msg):
        sent.append(msg)

    headers = [] if host is None else [(b"host", host)]
    scope = {"type": "http", "method": "GET", "path": "/", "headers": headers, "query_string": b""}
    asyncio.run(host_guard(own_origins(bound, PORT), app)(scope, receive, send))
    status = next((m["status"] for m in sent if m["type"] == "http.response.start"), None)
    return bool(reached), status


@settings(max_examples=300, deadline=None)
@given(host=hosts)
def test_a_request_reaches_the_app_iff_its_host_is_the_bound_address(host):
    raw = host if isinstance(host, bytes) else host.encode()
    reached, status = _run(raw)
    expected = raw.decode("latin-1").lower() in {g.lower() for g in GOOD}
    assert reached == expected, (raw, reached, status)
    if not reached:
        assert status == 421


def test_no_host_header_is_refused():
    assert _run(None) == (False, 421)


def test_a_specific_remote_bind_accepts_only_its_own_address():
    assert _run(b"10.0.0.5:8470", bound="10.0.0.5")[0]
    assert not _run(b"localhost:8470", bound="10.0.0.5")[0]
    assert not _run(b"evil.example:8470", bound="10.0.0.5")[0]
