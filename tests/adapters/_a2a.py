"""One published A2A agent for the A2A tests: a real kernel daemon in a temporary home and
the manifest published in front of it by ``agentix.a2a.server`` on uvicorn, on loopback."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from agentix.a2a.server import A2AServerConfig, build_app
from agentix.sdk import Kernel
from tests.agents.daemon_util import start_daemon, stop_daemon

__all__ = ["TOKEN", "Served", "serve"]

TOKEN = "t0ken-" + "x" * 26


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    def __init__(self, home: Path, url: str, server: uvicorn.Server) -> None:
        self.home, self.url, self.server = home, url, server

    def agents(self) -> list:
        with Kernel(self.home) as k:
            return k.list()

    def events(self, kind: str) -> list[dict]:
        with Kernel(self.home) as k:
            return k.events(kind=kind, limit=1000)


@contextlib.contextmanager
def serve(tmp_path: Path, manifest: dict, base_dir: Path, executor=None, **cfg) -> Iterator[Served]:
    """A real kernel daemon in ``tmp_path/home`` and ``manifest`` published in front of it by
    ``agentix.a2a.server`` on uvicorn, on a loopback port (``executor`` instead of the one that
    runs the manifest, for protocol tests that need no agent)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text('[kernel]\nbackend = "auto"\n')
    keys = home / "keys"
    keys.mkdir(mode=0o700)
    fd = os.open(keys / "secrets.toml", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, f'[A2A_TOKEN]\nvalue = "{TOKEN}"\nhosts = ["127.0.0.1"]\n'.encode())
    os.close(fd)
    proc = start_daemon(home)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    a2a_cfg = A2AServerConfig(home=home, manifest=manifest, token=TOKEN, url=url, base_dir=base_dir,
                              **{"max_body": 64 * 1024, "timeout": 60, **cfg})
    server = uvicorn.Server(uvicorn.Config(build_app(a2a_cfg, executor=executor), host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the A2A server did not start"
        time.sleep(0.05)
    try:
        yield Served(home, url, server)
    finally:
        server.should_exit = True
        t.join(10)
        stop_daemon(home, proc)


