"""A real kernel daemon serving the HTTP API on a loopback port, and httpx clients for it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from conftest import Daemon, short_tmp, wait_until
from _ports import free_port  # noqa: F401 (the tests of this folder import it from here)


#: the TLS context every client here shares: httpx builds one per client by default, loading
#: the CA bundle each time (~50 ms of CPU), and ``Api.post`` makes a client per call
TLS = httpx.create_ssl_context()


@dataclass
class Api:
    daemon: Daemon
    url: str
    operator: str   # an operator token
    viewer: str     # a viewer token

    def http(self, token: str | None = None, **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, verify=TLS, **kw)

    def post(self, method: str, body: Any = None, token: str | None = "operator", **kw: Any) -> httpx.Response:
        tok = {"operator": self.operator, "viewer": self.viewer}.get(token or "", token)
        with self.http(tok) as c:
            if body is None:
                return c.post(f"/v1/call/{method}", **kw)
            return c.post(f"/v1/call/{method}", json=body, **kw)

    # the world, read over the operator socket (not over HTTP)
    def audit_size(self) -> int:
        ev = self.daemon.client.call("events.tail", after=0, limit=1)["events"]
        return ev[-1]["seq"] if ev else 0

    def audit_after(self, seq: int) -> list[dict[str, Any]]:
        return self.daemon.client.call("events.tail", after=seq, limit=1000)["events"]

    def agent_count(self) -> int:
        return len(self.daemon.client.call("agent.list", all=True)["agents"])


def start_api(isolation: str, files: dict[str, str] | None = None) -> tuple[Api, Any]:
    """A daemon serving HTTP; ``files`` are written into its home first (e.g. config.toml)."""
    tmp = short_tmp()
    port = free_port()
    for name, text in (files or {}).items():
        (tmp / "h").mkdir(exist_ok=True)
        (tmp / "h" / name).write_text(text)
    d = Daemon(tmp / "h", isolation, args=("--http", f"127.0.0.1:{port}"))
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(url + "/openapi.json", timeout=1, verify=TLS).status_code == 200
        except httpx.HTTPError:
            return False

    assert wait_until(up, timeout=10), d.daemon_log()
    op = d.client.call("tokens.create", name="ops", role="operator")["token"]
    vw = d.client.call("tokens.create", name="watcher", role="viewer")["token"]
    return Api(d, url, op, vw), tmp


@pytest.fixture(scope="module")
def api(isolation_mode: str) -> Iterator[Api]:
    a, tmp = start_api(isolation_mode)
    yield a
    try:
        a.daemon.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def fresh_api(isolation_mode: str) -> Iterator[Api]:
    a, tmp = start_api(isolation_mode)
    yield a
    try:
        a.daemon.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
