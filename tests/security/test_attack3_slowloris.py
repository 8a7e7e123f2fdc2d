"""Attack round 3: slow-header (slowloris) clients against every HTTP face agentix serves — the
HTTP API (``agentix up --http``), ``agentix mcp --http`` and ``agentix a2a serve``.

uvicorn has no deadline for receiving a request (its keep-alive timer is cancelled by the first
byte), so 200 connections dripping one header byte a second each held a slot for ever, and past
``limit_concurrency`` every real request was a 503. Fixed once, in rpc/slow_clients.py: a head
and a body deadline (408 and close) and a cap on connections waiting for a head (the longest
waiting is evicted with 503). Each test: the slow clients are refused and closed, a normal
client is served meanwhile, and nothing the slow clients sent reached the kernel."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from conftest import cli_face, serve_mcp_http, short_tmp, wait_until
from http_api.conftest import Api, free_port, start_api

# every test here opens many sockets: none may be left open in the test process (conftest.no_fd_leak)
pytestmark = pytest.mark.usefixtures("no_fd_leak")

HEAD_TIMEOUT = 3.0
N_SLOW = 200


# ------------------------------------------------------------------------------ the attacker
@dataclass
class Slow:
    """``n`` connections, each sending one more byte of ``payload`` every ``interval`` seconds,
    never finishing; records what each was answered before the server closed it."""

    port: int
    n: int = N_SLOW
    payload: bytes = b"GET /v1/whoami HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 4096
    interval: float = 1.0
    socks: list[socket.socket] = field(default_factory=list)
    answers: dict[int, bytes] = field(default_factory=dict)   # index -> bytes read before close
    closed: set[int] = field(default_factory=set)
    stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Slow:
        for _ in range(self.n):
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            s.setblocking(False)
            self.socks.append(s)
        self.thread = threading.Thread(target=self._drip, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        for s in self.socks:
            s.close()

    def _read(self, i: int, s: socket.socket) -> None:
        try:
            data = s.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.answers[i] = self.answers.get(i, b"") + data
        else:
            self.closed.add(i)

    def _drip(self) -> None:
        pos = 0
        while not self.stop.is_set():
            for i, s in enumerate(self.socks):
                if i in self.closed:
                    continue
                try:
                    s.send(self.payload[pos:pos + 1])
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    self.closed.add(i)
            pos += 1
            deadline = time.monotonic() + self.interval
            while not self.stop.is_set() and (left := deadline - time.monotonic()) > 0:
                live = [s for i, s in enumerate(self.socks) if i not in self.closed]
                # poll, not select: the test process may already hold more than FD_SETSIZE (1024) fds
                ready = _readable(live, min(left, 0.2)) if live else []
                for s in ready:
                    self._read(self.socks.index(s), s)

    def all_closed(self) -> bool:
        return len(self.closed) == self.n

    def statuses(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for i in range(self.n):
            head = self.answers.get(i, b"").split(b"\r\n", 1)[0].decode(errors="replace")
            key = head.split(" ")[1] if head.startswith("HTTP/1.1 ") else "none"
            out[key] = out.get(key, 0) + 1
        return out


def _readable(socks: list[socket.socket], timeout: float) -> list[socket.socket]:
    """The sockets of ``socks`` with something to read (or closed), waiting up to ``timeout``;
    ``select.poll``, which has no FD_SETSIZE limit (``select.select`` fails past fd 1023)."""
    poller = select.poll()
    by_fd = {}
    for s in socks:
        by_fd[s.fileno()] = s
        poller.register(s, select.POLLIN)
    return [by_fd[fd] for fd, _ in poller.poll(timeout * 1000)]


def _config(head: float = HEAD_TIMEOUT, pending: int = 256) -> str:
    return f"[kernel]\nhttp_head_timeout = {head}\nhttp_body_timeout = {head}\nhttp_max_pending = {pending}\n"


@contextlib.contextmanager
def _api(isolation_mode: str, config: str) -> Iterator[Api]:
    a, tmp = start_api(isolation_mode, files={"config.toml": config})
    try:
        yield a
    finally:
        try:
            a.daemon.stop()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


# ------------------------------------------------------------------------------ the HTTP API
def test_200_slow_header_connections_do_not_stop_the_http_api_and_are_closed_at_the_deadline(isolation_mode):
    with _api(isolation_mode, _config()) as api:
        before = api.audit_size()
        agents = api.agent_count()
        with Slow(_port(api.url)) as slow:
            time.sleep(1.5)   # every slow connection is open and has sent a byte or two
            assert not slow.closed
            # a normal client is served while the 200 hold their connections
            with api.http(api.viewer) as c:
                for _ in range(3):
                    r = c.get("/v1/whoami")
                    assert r.status_code == 200, r.text
            assert wait_until(slow.all_closed, HEAD_TIMEOUT + 20), (len(slow.closed), slow.statuses())
        # each was answered 408 with the reason, then closed
        assert slow.statuses() == {"408": N_SLOW}, slow.statuses()
        assert b"send the request line and headers at once" in slow.answers[0]
        # nothing they sent reached the pipeline; the server still serves
        assert api.agent_count() == agents
        assert api.audit_size() == before
        with api.http(api.viewer) as c:
            assert c.get("/v1/whoami").status_code == 200


def test_more_slow_connections_than_the_pending_cap_evict_the_longest_waiting(isolation_mode):
    """With a cap of 32 connections waiting for a head, 200 slow ones never fill the server's
    256 slots: the oldest are evicted (503) as new ones come, and a normal client is served."""
    with _api(isolation_mode, _config(pending=32)) as api:
        with Slow(_port(api.url)) as slow:
            assert wait_until(lambda: len(slow.closed) >= N_SLOW - 32, 20), slow.statuses()
            with api.http(api.viewer) as c:
                assert c.get("/v1/whoami").status_code == 200
            assert wait_until(slow.all_closed, HEAD_TIMEOUT + 20), slow.statuses()
        st = slow.statuses()
        assert st.get("503", 0) >= N_SLOW - 32 and st.get("503", 0) + st.get("408", 0) == N_SLOW, st
        i = next(i for i, a in slow.answers.items() if a.startswith(b"HTTP/1.1 503"))
        assert b"connections are waiting to send a request" in slow.answers[i]


def test_slow_body_after_a_complete_head_is_closed_and_spawns_nothing(isolation_mode):
    """An operator-token POST whose body drips one byte a second: 408 at the body deadline, the
    call never runs (no agent, no audit record)."""
    with _api(isolation_mode, _config()) as api:
        before, agents = api.audit_size(), api.agent_count()
        body = b'{"name": "slowbody", "program": "x.py"}'
        head = (f"POST /v1/call/agent.spawn HTTP/1.1\r\nHost: 127.0.0.1:{_port(api.url)}\r\n"
                f"Authorization: Bearer {api.operator}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", _port(api.url)), timeout=HEAD_TIMEOUT + 20) as s:
            s.sendall(head)
            got = b""
            for byte in body[:-1]:
                s.sendall(bytes([byte]))
                r = _readable([s], 1.0)
                if r:
                    got = s.recv(65536)
                    break
            else:
                got = s.recv(65536)
            assert got.startswith(b"HTTP/1.1 408"), got[:200]
            assert b"request body was not received" in got
        assert api.agent_count() == agents
        assert api.audit_size() == before


def test_a_kept_alive_connection_cannot_drip_its_next_request(isolation_mode):
    """uvicorn's keep-alive timer is cancelled by the first byte of the next request: the head
    deadline starts again there."""
    with _api(isolation_mode, _config()) as api:
        port = _port(api.url)
        with socket.create_connection(("127.0.0.1", port), timeout=HEAD_TIMEOUT + 20) as s:
            s.sendall(f"GET /v1/whoami HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      f"Authorization: Bearer {api.viewer}\r\n\r\n".encode())
            first = b""
            while not first.endswith(b"}"):   # the whole response: head, then the JSON body
                first += s.recv(65536)
            assert first.startswith(b"HTTP/1.1 200"), first[:200]
            got = b""
            for byte in b"GET /v1/whoami HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa":
                s.sendall(bytes([byte]))
                r = _readable([s], 1.0)
                if r:
                    got = s.recv(65536)
                    break
            assert got.startswith(b"HTTP/1.1 408"), got[:200]


# ------------------------------------------------------------------------------ the other faces
ENV = {"AGENTIX_HTTP_HEAD_TIMEOUT": str(HEAD_TIMEOUT), "AGENTIX_HTTP_MAX_PENDING": "256"}


def test_200_slow_header_connections_do_not_stop_mcp_http(kernel, monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    pytest.importorskip("mcp")
    tok = kernel.client.call("tokens.create", name="op", role="viewer")["token"]
    with serve_mcp_http(kernel.home) as (url, port):
        with Slow(port) as slow:
            time.sleep(1.5)
            assert not slow.closed
            r = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}},
                           headers={"Content-Type": "application/json", "Authorization": f"Bearer {tok}",
                                    "Accept": "application/json, text/event-stream"}, timeout=30)
            assert r.status_code == 200, r.text
            assert wait_until(slow.all_closed, HEAD_TIMEOUT + 20), slow.statuses()
        assert slow.statuses() == {"408": N_SLOW}, slow.statuses()


def test_200_slow_header_connections_do_not_stop_a2a_serve():
    pytest.importorskip("a2a")
    tmp = short_tmp()
    try:
        manifest = tmp / "pub.yaml"
        manifest.write_text("name: pub\ndescription: answers\nprogram: p.py\n")
        port = free_port()
        with cli_face(["--home", str(tmp / "h"), "a2a", "serve", str(manifest), "--port", str(port)],
                      port, {**ENV, "AGENTIX_A2A_TOKEN": "t0123456789abcdef0123"}, timeout=30):
            with Slow(port) as slow:
                time.sleep(1.5)
                assert not slow.closed
                r = httpx.get(f"http://127.0.0.1:{port}/.well-known/agent-card.json", timeout=30)
                assert r.status_code == 200 and r.json()["name"] == "pub", r.text
                assert wait_until(slow.all_closed, HEAD_TIMEOUT + 20), slow.statuses()
            assert slow.statuses() == {"408": N_SLOW}, slow.statuses()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("env, needle", [({"AGENTIX_HTTP_HEAD_TIMEOUT": "soon"}, "AGENTIX_HTTP_HEAD_TIMEOUT"),
                                         ({"AGENTIX_HTTP_MAX_PENDING": "0"}, "max_pending")])
def test_a_bad_guard_setting_is_refused_with_its_name(env, needle):
    tmp = short_tmp()
    try:
        r = subprocess.run([sys.executable, "-m", "agentix.cli.main", "--home", str(tmp / "h"), "mcp",
                            "--http", f"127.0.0.1:{free_port()}"], capture_output=True, text=True, timeout=60,
                           env={**os.environ, **env})
        assert r.returncode != 0
        assert needle in r.stderr, r.stderr
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

