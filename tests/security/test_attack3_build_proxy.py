"""Attack round 3 on the build proxy (kernel/build_proxy.py): its unix socket must be
connectable by the sandbox's uid (mode 0666 in a 0755 directory under the kernel's TMPDIR), so
any process on the machine could use a running build's proxy as an egress to the step's
declared hosts — a private address named in an Agentfile, reached with the kernel's network
identity. Now the proxy reads the peer's pid (SO_PEERCRED) and serves only processes of the
step's sandbox: anyone else gets 403 before a request is read, is counted (``strangers`` in
``package.build_network``), and no connection is made.

Held (kept tested here against a real kernel): ``*`` never reaches loopback or the metadata
address; a name resolving to one is refused; the step itself still reaches a declared host."""

from __future__ import annotations

import asyncio
import glob
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from agentix.kernel.build_proxy import BuildProxy
from conftest import short_tmp, wait_until


def _ask(path: str, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(40)
        s.connect(path)
        try:
            s.sendall(request)
        except BrokenPipeError:
            pass
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
        return out


def test_a_process_outside_the_step_is_refused_before_anything_is_decided(tmp_path: Path) -> None:
    """Unit: the proxy serves the tree of the pid it was given; the test process is not in the
    tree of a sleeping child, so it is a stranger."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        async def main() -> tuple[bytes, BuildProxy]:
            async with BuildProxy(("127.0.0.1", "*"), tmp_path / "p.sock") as proxy:
                proxy.serve_only(child.pid)
                answer = await asyncio.to_thread(_ask, str(proxy.path), b"CONNECT 127.0.0.1:9 HTTP/1.1\r\n\r\n")
                return answer, proxy

        answer, proxy = asyncio.run(main())
    finally:
        child.kill()
        child.wait()
    assert answer.split(b" ")[1] == b"403", answer
    assert b"serves only the processes of its build step" in answer
    assert proxy.decisions == [] and proxy.strangers == 1   # nothing decided, nothing connected


def test_a_process_on_the_host_cannot_use_a_running_builds_proxy(start_kernel: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end: while a real build step (declaring the host's 127.0.0.1) runs, this test
    process finds the proxy's socket and asks it to tunnel to the same web server: 403, the
    server sees only the step's own request, and the build records one stranger."""
    import http.server
    import socketserver

    from packages.conftest import make_context
    from packages.test_build_network import with_step

    served: list[str] = []

    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            served.append(self.path)
            body = b"ok\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    tmpdir = short_tmp()   # the kernel's TMPDIR: its proxy socket is found there, no other kernel's
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    try:
        k = start_kernel()
        ctx_root = short_tmp()
        step = ("import time, urllib.request, os; time.sleep(6); os.makedirs('agent', exist_ok=True); "
                f"open('agent/f.txt', 'wb').write(urllib.request.urlopen('http://127.0.0.1:{port}/step', timeout=10).read())")
        ctx = with_step(make_context(ctx_root / "ctx"), ["python3", "-c", step], ["127.0.0.1"])
        result: dict[str, Any] = {}

        def build() -> None:
            try:
                result["ok"] = k.client.call("package.build", context=str(ctx), tag="team/hello:1.0.0")
            except Exception as err:  # noqa: BLE001 - reported by the assertion below
                result["err"] = err

        t = threading.Thread(target=build)
        t.start()
        socks: list[str] = []
        assert wait_until(lambda: socks.extend(glob.glob(str(tmpdir / "agentix-build-*" / "proxy.sock"))) or socks, 60)
        answer = _ask(socks[0], f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode()
                      + b"GET /stranger HTTP/1.0\r\n\r\n")
        t.join(120)
        assert answer.split(b" ")[1] == b"403", answer
        assert "ok" in result, result
        assert served == ["/step"]   # the step reached its host; the stranger reached nothing
        [ev] = [e for e in k.client.audit_tail(limit=1000) if e["kind"] == "package.build_network"]
        assert ev["data"]["strangers"] == 1 and ev["data"]["allowed"] == ["127.0.0.1"]
    finally:
        srv.shutdown()
        srv.server_close()
