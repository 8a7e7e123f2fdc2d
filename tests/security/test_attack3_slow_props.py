"""Property of the slow-client guard (rpc/slow_clients.py), over real sockets to a real uvicorn:
whatever way a client splits its requests into writes, a request sent in full is served and a
request left unfinished gets 408 and is closed; afterwards no connection is left counted as
waiting for a head (the guard never leaks a slot)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("uvicorn")

from agentix.rpc.slow_clients import SlowClientLimits, guarded_config  # noqa: E402

# every test here opens many sockets: none may be left open in the test process (conftest.no_fd_leak)
pytestmark = pytest.mark.usefixtures("no_fd_leak")

LIMITS = SlowClientLimits(head_timeout=0.4, body_timeout=0.4, max_pending=4)


async def echo(scope, receive, send):  # a minimal ASGI app: answers the body's length
    if scope["type"] != "http":
        return
    n = 0
    while True:
        msg = await receive()
        n += len(msg.get("body", b""))
        if not msg.get("more_body"):
            break
    body = str(n).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, object]]:
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = guarded_config(echo, LIMITS, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    srv = uvicorn.Server(config)
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    yield port, config
    srv.should_exit = True
    t.join(10)


def request(body: bytes) -> bytes:
    return (b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def read_response(s: socket.socket) -> bytes:
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = s.recv(65536)
        if not chunk:
            return got
        got += chunk
    head, _, rest = got.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bodies=st.lists(st.binary(max_size=64), min_size=1, max_size=3),
       cuts=st.lists(st.integers(min_value=1, max_value=40), max_size=6),
       unfinished=st.one_of(st.none(), st.integers(min_value=0, max_value=10_000)))
def test_full_requests_are_served_and_unfinished_ones_get_408(server, bodies, cuts, unfinished):
    port, config = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        for body in bodies:   # kept alive: each request on the same connection, split at `cuts`
            raw, pos = request(body), 0
            for c in cuts:
                s.sendall(raw[pos:pos + c])
                pos += c
            s.sendall(raw[pos:])
            resp = read_response(s)
            assert resp.startswith(b"HTTP/1.1 200"), resp[:200]
            assert resp.endswith(str(len(body)).encode())
        if unfinished is not None:   # then a request never finished: in its head or its body
            raw = request(b"z" * 32)
            s.sendall(raw[:unfinished % (len(raw) - 1) + 1])
            resp = read_response(s)
            assert resp.startswith(b"HTTP/1.1 408"), resp[:200]
            assert s.recv(10) == b""   # and closed
    deadline = time.monotonic() + 10
    while config.guard_stats().pending and time.monotonic() < deadline:  # the close is seen
        time.sleep(0.02)
    assert config.guard_stats().pending == 0


def test_limits_refuse_nonsense():
    for bad in [dict(head_timeout=0), dict(body_timeout=-1), dict(max_pending=0), dict(head_timeout="1")]:
        with pytest.raises(ValueError):
            SlowClientLimits(**bad)
    with pytest.raises(ValueError, match="AGENTIX_HTTP_BODY_TIMEOUT"):
        SlowClientLimits.from_env({"AGENTIX_HTTP_BODY_TIMEOUT": "x"})
    assert SlowClientLimits.from_env({}) == SlowClientLimits()
    assert SlowClientLimits.from_env({"AGENTIX_HTTP_MAX_PENDING": "9"}).max_pending == 9
