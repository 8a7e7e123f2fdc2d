"""Attack round 4 on the slow-client guard (rpc/slow_clients.py): the request forms round 3 did
not try. Each connection keeps dripping a byte at a time after its opening, so a guard that
let any of them out of its deadlines would hold the connection for ever; each must end with
a ``408`` (after what was complete was served) and be closed, with no slot left counted.

Held (no change needed): a pipelined second head after a served request; an HTTP/1.1 chunked
body that never ends; ``Expect: 100-continue`` and then no body; a WebSocket or h2c upgrade
(no face upgrades: served as plain HTTP, then the next head is held to the deadline); HTTP/1.0;
a body followed by a pipelined head."""

from __future__ import annotations

import socket
import time

import pytest

from security import test_attack3_slow_props

# every test here opens many sockets: none may be left open in the test process (conftest.no_fd_leak)
pytestmark = pytest.mark.usefixtures("no_fd_leak")

guarded_uvicorn = test_attack3_slow_props.server  # the fixture ``server``: a guarded uvicorn, real sockets

H = b"Host: 127.0.0.1\r\n"
FORMS = {
    "pipelined head after a served request": (b"GET / HTTP/1.1\r\n" + H + b"\r\nGET / HTTP/1.1\r\nX-a: ", b"a"),
    "chunked body that never ends": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n",
                                     b"1\r\na\r\n"),
    "expect 100-continue, then no body": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 10\r\n"
                                          b"Expect: 100-continue\r\n\r\n", b""),
    "websocket upgrade": (b"GET / HTTP/1.1\r\n" + H + b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
                          b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", b"x"),
    "h2c upgrade": (b"GET / HTTP/1.1\r\n" + H + b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                    b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", b"x"),
    "http/1.0 head": (b"GET / HTTP/1.0\r\n" + H, b"X"),
    "body, then a pipelined head": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nabcdeGET / HTTP/1.1\r\n",
                                    b"X"),
}
#: how long a dripping connection is kept trying (the guard's deadlines are 0.4 s; uvicorn's
#: keep-alive 5 s): a liveness bound for the test, not a speed goal
GIVE_UP = 30.0


@pytest.mark.parametrize("form", list(FORMS))
def test_no_request_form_escapes_the_deadlines(guarded_uvicorn, form: str) -> None:
    port, config = guarded_uvicorn
    first, drip = FORMS[form]
    got, closed = b"", False
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.settimeout(0.1)
        s.sendall(first)
        end = time.monotonic() + GIVE_UP
        while time.monotonic() < end:
            try:
                chunk = s.recv(65536)
                if not chunk:
                    closed = True
                    break
                got += chunk
            except socket.timeout:
                pass
            except ConnectionResetError:
                closed = True
                break
            try:
                if drip:
                    s.sendall(drip)
            except OSError:
                closed = True
                break
    assert closed, f"{form}: still open after {GIVE_UP} s of dripping; got {got[:200]!r}"
    assert b"HTTP/1.1 408" in got, got[:400]
    assert got.count(b"HTTP/1.1 200") == (1 if form in ("pipelined head after a served request", "websocket upgrade",
                                                          "h2c upgrade", "body, then a pipelined head") else 0)
    end = time.monotonic() + 10
    while config.guard_stats().pending and time.monotonic() < end:
        time.sleep(0.02)
    assert config.guard_stats().pending == 0
