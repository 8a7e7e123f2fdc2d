"""Network for build steps: none unless a `run` step declares hosts, then only those, through
the kernel's build proxy (kernel/build_proxy.py) from a sandbox whose network namespace has
only its own loopback (sandbox/netbridge.py). A real kernel, real sandboxes, a real HTTP
server on the host's loopback."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentix.core.agentfile import parse_agentfile_text
from agentix.core.errors import InvalidRequest
from agentix.kernel.build_proxy import BuildProxy, _target
from agentix.sdk.errors import AgentixError

from .conftest import make_context
from .test_build_run import layer_files
from .test_run_e2e import events

FETCH = ("import urllib.request, os; os.makedirs('agent', exist_ok=True); "
         "open('agent/fetched.txt', 'wb').write(urllib.request.urlopen('{url}', timeout=10).read())")
DIRECT = ("import socket; s = socket.create_connection(('127.0.0.1', {port}), timeout=5); "
          "s.sendall(b'GET /direct HTTP/1.0\\r\\n\\r\\n'); print(s.recv(100))")


@pytest.fixture
def web() -> Iterator[tuple[str, int, list[str]]]:
    """A plain HTTP server on the host's 127.0.0.1; returns (url, port, paths it served)."""
    served: list[str] = []

    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

        def do_GET(self) -> None:
            served.append(self.path)
            body = b"fetched from the host\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True

    srv = S(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    yield f"http://127.0.0.1:{port}/pkg.txt", port, served
    srv.shutdown()
    srv.server_close()


def with_step(ctx: Path, argv: list[str], network: list[str] | None) -> Path:
    af = (ctx / "Agentfile").read_text()
    step = "      - run: " + json.dumps(argv) + "\n"
    if network is not None:
        step += "        network: " + json.dumps(network) + "\n"
    (ctx / "Agentfile").write_text(af.replace("      - copy: data/notes.txt\n", step + "      - copy: data/notes.txt\n"))
    return ctx


def test_a_step_reaches_a_declared_loopback_host_and_the_hosts_key_its_cache(
        start_kernel: Any, tmp_path: Path, web: tuple[str, int, list[str]]) -> None:
    url, port, served = web
    k = start_kernel()
    ctx = with_step(make_context(tmp_path / "ctx"), ["python3", "-c", FETCH.format(url=url)], ["127.0.0.1"])
    r = k.client.call("package.build", context=str(ctx), tag="team/hello:1.0.0")
    assert served == ["/pkg.txt"]
    assert layer_files(k.home, "team/hello:1.0.0", 1)["agent/fetched.txt"] == b"fetched from the host\n"
    [ev] = events(k, "package.build_network")
    assert ev["data"]["allowed"] == ["127.0.0.1"] and ev["data"]["refused"] == []
    # unchanged: from the cache, nothing fetched again
    again = k.client.call("package.build", context=str(ctx), tag="team/hello:1.0.0")
    assert again["digest"] == r["digest"] and again["cached"] == [True, True, True] and served == ["/pkg.txt"]
    # the declared hosts are part of the step's cache key
    af = (ctx / "Agentfile").read_text().replace('network: ["127.0.0.1"]', 'network: ["127.0.0.1", "example.com"]')
    (ctx / "Agentfile").write_text(af)
    third = k.client.call("package.build", context=str(ctx), tag="team/hello:1.0.0")
    assert third["cached"][1] is False and served == ["/pkg.txt", "/pkg.txt"]


def test_an_undeclared_host_is_refused_by_the_proxy_and_nothing_is_built(
        start_kernel: Any, tmp_path: Path, web: tuple[str, int, list[str]]) -> None:
    url, _, served = web
    k = start_kernel()
    # a wildcard never reaches loopback; a name that is not this host does not match it
    ctx = with_step(make_context(tmp_path / "ctx"), ["python3", "-c", FETCH.format(url=url)], ["*", "localhost"])
    with pytest.raises(AgentixError) as exc:
        k.client.call("package.build", context=str(ctx), tag="team/hello:1.0.0")
    assert exc.value.data["field"] == "stages.0.steps.1.run" and "403" in str(exc.value)
    assert served == [] and k.client.call("package.list")["packages"] == []
    [ev] = events(k, "package.build_network")
    assert ev["data"]["refused"] == ["127.0.0.1"] and ev["data"]["allowed"] == []


def test_a_step_that_ignores_the_proxy_reaches_nothing(start_kernel: Any, tmp_path: Path,
                                                       web: tuple[str, int, list[str]]) -> None:
    _, port, served = web
    k = start_kernel()
    # even with the host declared: a direct connection to the host's loopback is refused by the
    # sandbox (its network namespace has a loopback of its own, where nothing listens)
    ctx = with_step(make_context(tmp_path / "ctx"), ["python3", "-c", DIRECT.format(port=port)], ["127.0.0.1"])
    with pytest.raises(AgentixError) as exc:
        k.client.call("package.build", context=str(ctx), tag="team/hello:1.0.0")
    assert "ConnectionRefusedError" in str(exc.value) and served == []
    # and no name resolves inside: the proxy resolves, never the sandbox
    ctx2 = with_step(make_context(tmp_path / "ctx2"),
                     ["python3", "-c", "import socket; socket.getaddrinfo('example.com', 80)"], ["example.com"])
    with pytest.raises(AgentixError) as exc:
        k.client.call("package.build", context=str(ctx2), tag="team/hello:1.0.0")
    assert "gaierror" in str(exc.value)


def test_a_step_without_hosts_still_has_no_inet_socket_at_all(start_kernel: Any, tmp_path: Path) -> None:
    k = start_kernel()
    ctx = with_step(make_context(tmp_path / "ctx"), ["python3", "-c", "import socket; socket.socket()"], None)
    with pytest.raises(AgentixError) as exc:
        k.client.call("package.build", context=str(ctx), tag="team/hello:1.0.0")
    assert "PermissionError" in str(exc.value)
    assert events(k, "package.build_network") == []


# ------------------------------------------------------------------ bad input
AF = """\
apiVersion: agentix/v1
metadata: {{name: x, version: 1.0.0}}
stages:
  - steps:
      - run: [python3, -c, pass]
        network: {hosts}
agent: {{program: a.py}}
"""


@pytest.mark.parametrize("hosts", ['["http://example.com"]', '["example.com:443"]', '["*.*.com"]', '["ex*.com"]',
                                   '["*.1.2.3.4"]', '["*.com"]', '["bad host"]', '[""]', '[7]'])
def test_a_malformed_declared_host_names_the_line_and_field(hosts: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        parse_agentfile_text(AF.format(hosts=hosts))
    assert exc.value.data["field"].startswith("stages.0.steps.0.network") and exc.value.data["line"] == 6


def test_declared_hosts_are_normalised_and_sorted() -> None:
    af = parse_agentfile_text(AF.format(hosts='"PyPI.org, files.pythonhosted.org, pypi.org"'))
    assert af.stages[0].steps[0].network == ["files.pythonhosted.org", "pypi.org"]  # type: ignore[union-attr]


@pytest.mark.parametrize("method, target", [
    ("GET", "https://example.com/"), ("GET", "/relative"), ("GET", "ftp://example.com/"),
    ("CONNECT", "example.com"), ("CONNECT", "example.com:0"), ("CONNECT", "example.com:99999"),
    ("CONNECT", "example.com:x"), ("GET", "http://user:pw@example.com/"),
])
def test_the_proxy_refuses_request_forms_it_does_not_serve(method: str, target: str) -> None:
    with pytest.raises(ValueError):
        _target(method, target)


def _ask(path: Path, request: bytes) -> bytes:
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
        try:
            s.sendall(request)
        except BrokenPipeError:
            pass  # the proxy answered and closed before reading it all
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass  # it closed with our request unread: what it answered came first
        return out


def test_the_proxy_answers_refusals_without_connecting(tmp_path: Path, web: tuple[str, int, list[str]]) -> None:
    _, port, served = web

    async def main() -> list[bytes]:
        async with BuildProxy(("example.com", "*"), tmp_path / "p.sock") as proxy:
            proxy.serve_only(os.getpid())   # this test plays the build step
            answers = [await asyncio.to_thread(_ask, proxy.path, req) for req in (
                f"GET http://127.0.0.1:{port}/x HTTP/1.1\r\nHost: x\r\n\r\n".encode(),   # loopback, not named
                f"CONNECT localhost:{port} HTTP/1.1\r\n\r\n".encode(),                   # a name for loopback
                b"GARBAGE\r\n\r\n",
                b"GET http://" + b"a" * 40000 + b"/ HTTP/1.1\r\n\r\n",
            )]
            assert [d["allowed"] for d in proxy.decisions] == [False, False]
            return answers

    answers = asyncio.run(main())
    assert [a.split(b" ")[1] for a in answers] == [b"403", b"403", b"400", b"431"]
    assert b"not among the hosts this build step declares" in answers[0]
    assert served == []


def test_the_proxy_serves_a_bounded_number_of_connections_at_once(tmp_path: Path) -> None:
    import socket

    from agentix.kernel import build_proxy

    async def main() -> bytes:
        async with BuildProxy(("example.com",), tmp_path / "p.sock") as proxy:
            proxy.serve_only(os.getpid())   # this test plays the build step
            held = []
            for _ in range(build_proxy.MAX_CONNECTIONS):  # each sends nothing: its task waits for a head
                s = socket.socket(socket.AF_UNIX)
                s.connect(str(proxy.path))
                held.append(s)
            while len(proxy._tasks) < build_proxy.MAX_CONNECTIONS:
                await asyncio.sleep(0.01)
            answer = await asyncio.to_thread(_ask, proxy.path, b"CONNECT example.com:443 HTTP/1.1\r\n\r\n")
            for s in held:
                s.close()
            assert proxy.decisions == []   # refused before anything was decided or connected
            return answer

    assert asyncio.run(main()).split(b" ")[1] == b"503"


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["GET", "CONNECT", "POST"]), st.text(max_size=60))
def test_no_request_target_parses_into_a_port_out_of_range_or_a_hidden_authority(method: str, target: str) -> None:
    try:
        host, port, path = _target(method, target)
    except ValueError:
        return
    assert 0 < port < 65536
    assert "@" not in host or method == "CONNECT"   # http:// with credentials is refused
    assert path == "" if method == "CONNECT" else path.startswith("/")
    if method != "CONNECT":
        # the checked host is the one the origin-form request goes to: nothing after it names another
        assert target.lower().startswith("http://") and "/" not in host


def test_connect_to_a_declared_host_is_a_tunnel_to_the_checked_address(
        tmp_path: Path, web: tuple[str, int, list[str]]) -> None:
    _, port, served = web

    async def main() -> bytes:
        async with BuildProxy(("127.0.0.1",), tmp_path / "p.sock") as proxy:
            proxy.serve_only(os.getpid())   # this test plays the build step
            answer = await asyncio.to_thread(
                _ask, proxy.path, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode()
                + b"GET /tunnelled HTTP/1.0\r\nHost: anything.example\r\n\r\n")
            assert proxy.decisions == [{"host": "127.0.0.1", "port": port, "allowed": True}]
            return answer

    answer = asyncio.run(main())
    assert answer.startswith(b"HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.0 200")
    assert answer.endswith(b"fetched from the host\n") and served == ["/tunnelled"]


TUNNEL = """\
import os, socket
proxy = os.environ["HTTPS_PROXY"].split("//")[-1].rstrip("/")
host, port = proxy.rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=10)
s.sendall(b"CONNECT 127.0.0.1:{port} HTTP/1.1\\r\\nHost: 127.0.0.1:{port}\\r\\n\\r\\n")
head = b""
while b"\\r\\n\\r\\n" not in head:
    head += s.recv(1)
assert head.startswith(b"HTTP/1.1 200"), head
s.sendall(b"SSH-2.0-not-http\\r\\n")
got = b""
while not got.endswith(b"\\r\\n"):
    got += s.recv(100)
udp = "no udp"
try:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"q", ("1.1.1.1", 53))
    udp = "udp sent"
except OSError as err:
    udp = type(err).__name__
os.makedirs("agent", exist_ok=True)
open("agent/tunnel.txt", "wb").write(got + udp.encode())
"""


def test_a_connect_tunnel_carries_any_tcp_protocol_to_a_declared_host_and_nothing_else_leaves(
        start_kernel: Any, tmp_path: Path) -> None:
    """What docs/packages.md says of build network, exactly: the proxy checks the host, not
    the protocol — a CONNECT tunnel to a declared host (any port) carries whatever bytes the
    step sends (here an SSH-like banner to a line echo server, not HTTP); no UDP leaves."""
    import socket

    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def echo_one() -> None:
        conn, _ = srv.accept()
        with conn:
            line = b""
            while not line.endswith(b"\r\n"):
                chunk = conn.recv(100)
                if not chunk:
                    return
                line += chunk
            conn.sendall(b"echo " + line)

    t = threading.Thread(target=echo_one, daemon=True)
    t.start()
    try:
        k = start_kernel()
        ctx = with_step(make_context(tmp_path / "ctx"), ["python3", "-c", TUNNEL.format(port=port)], ["127.0.0.1"])
        k.client.call("package.build", context=str(ctx), tag="team/hello:1.0.0")
        got = layer_files(k.home, "team/hello:1.0.0", 1)["agent/tunnel.txt"]
        assert got.startswith(b"echo SSH-2.0-not-http\r\n")
        assert got.endswith(b"OSError") or got.endswith(b"PermissionError"), got  # no route out: no UDP
        [ev] = events(k, "package.build_network")
        assert ev["data"]["allowed"] == ["127.0.0.1"]
    finally:
        srv.close()
