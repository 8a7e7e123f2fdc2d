"""``agentix mcp --http HOST:PORT``: the same MCP face over Streamable HTTP, at ``/mcp``.

Authenticated with the HTTP API's tokens (``agentix tokens create NAME --role viewer|operator``,
docs/http.md): every request carries ``Authorization: Bearer <token>``, which the kernel checks
(``tokens.verify``) on every request, so a revoked or expired token stops working at once.

- no token, a malformed header, or a token the kernel does not accept: ``401`` (JSON body with
  the kernel's ``unauthenticated`` error; ``WWW-Authenticate: Bearer``); nothing reaches MCP;
- a ``viewer`` token reaches an MCP server built on a connection bound read-only (it is offered
  only the tools that change nothing, and the kernel refuses the rest on that connection too);
- an ``operator`` token reaches one built on a connection bound ``mcp-http`` (its state-changing
  calls are audited ``by: mcp-http``).

Stateless Streamable HTTP (each POST stands alone): nothing of one client's session is kept
between requests, so two tokens never share one. Served by uvicorn; loopback only unless
``--allow-remote`` (then put TLS in front of it: the token travels in a header).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import orjson

from agentix.core.hosts import parse_listen_address, served_hosts
from agentix.mcp.server import KernelLink, build_server
from agentix.rpc.slow_clients import SlowClientLimits, serve_blocking
from agentix.sdk.errors import AgentixError

__all__ = ["HTTP_FACE", "create_app", "parse_address", "serve_http"]

HTTP_FACE = "mcp-http"
PATH = "/mcp"


def parse_address(addr: str, *, allow_remote: bool) -> tuple[str, int]:
    """``agentix mcp --http HOST:PORT``: ``core.hosts.parse_listen_address`` with this face's flags."""
    return parse_listen_address(addr, allow_remote=allow_remote, option="--http", remote_option="--allow-remote")


async def _reply(send: Any, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] = ()) -> None:
    data = orjson.dumps(body)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


class _Gate:
    """ASGI: authenticate the bearer token with the kernel, then hand the request to the MCP
    app for its role. Nothing else reaches either app."""

    def __init__(self, verifier: KernelLink, viewer: Any, operator: Any, *,
                 hosts: frozenset[str] | None = None) -> None:
        self.verifier, self.viewer, self.operator = verifier, viewer, operator
        self.hosts = hosts

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if self.hosts is not None:  # DNS rebinding: a page under another name, before any token
            host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1").lower()
            if host not in self.hosts:
                await _reply(send, 421, {"error": {"code": "capability_denied", "message":
                             f"the Host header {host[:80]!r} is not this server's address "
                             f"({', '.join(sorted(self.hosts))}): a page reaching it under another "
                             "name (DNS rebinding) is refused", "data": {"reason": "host"}}})
                return
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        challenge = [(b"www-authenticate", b'Bearer realm="agentix"')]
        if scheme.lower() != "bearer" or not token.strip():
            await _reply(send, 401, {"error": {"code": "unauthenticated", "message":
                         "send Authorization: Bearer <token> (create one with `agentix tokens create NAME "
                         "--role viewer|operator`)"}}, challenge)
            return
        try:
            who = await anyio.to_thread.run_sync(
                self.verifier.call, lambda k: k.call("tokens.verify", token=token.strip()))
        except AgentixError as err:
            status = 401 if err.code in ("unauthenticated", "invalid_request") else 503
            await _reply(send, status, {"error": {"code": err.code, "message": err.message}},
                         challenge if status == 401 else [])
            return
        app = self.operator if who.get("role") == "operator" else self.viewer
        await app(scope, receive, send)


def create_app(home: str | Path | None, *, host: str = "127.0.0.1",
               port: int | None = None) -> tuple[Any, list[KernelLink]]:
    """The ASGI app and the kernel connections it holds (close them when done). With ``port``,
    a request whose ``Host`` is not ``host:port`` (or, on loopback, a loopback name with that
    port) is refused with 421 before its token is looked at."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    # its own face: the bad tokens anyone sends are recorded within *its* audit quota, never
    # using up the one of the MCP clients' calls (docs/audit.md)
    verifier = KernelLink(home, read_only=True, face=HTTP_FACE + "-auth")
    viewer_link = KernelLink(home, read_only=True, face=HTTP_FACE)
    operator_link = KernelLink(home, face=HTTP_FACE)
    servers = [build_server(viewer_link), build_server(operator_link)]
    apps = [s.streamable_http_app(streamable_http_path=PATH, stateless_http=True, host=host) for s in servers]

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for s in servers:
                await stack.enter_async_context(s.session_manager.run())
            yield

    gate = _Gate(verifier, *apps, hosts=served_hosts(host, port) if port is not None else None)
    app = Starlette(routes=[Mount("/", app=gate)], lifespan=lifespan)
    return app, [verifier, viewer_link, operator_link]


def serve_http(home: str | Path | None, address: str, *, allow_remote: bool = False,
               limits: SlowClientLimits | None = None) -> None:
    """Serve until interrupted, with the slow-client guard every HTTP face has
    (rpc/slow_clients.py: a request head/body deadline, a cap on connections waiting for one)."""
    host, port = parse_address(address, allow_remote=allow_remote)
    app, links = create_app(home, host=host, port=port)
    try:
        serve_blocking(app, host, port, limits)
    finally:
        for link in links:
            link.close()
