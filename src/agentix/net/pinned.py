"""Resolve once, check every answer, connect to the checked address: every outbound request the
kernel makes on an agent's or a remote's behalf goes through here.

A check that resolves a name and a connection that resolves it again can be told two different
things (DNS rebinding: a public address for the check, ``169.254.169.254`` or a loopback service
for the connection). So the name is resolved once, the caller's rule decides on those answers,
and the connection is made to the address it chose, with the original name kept as ``Host``
and as the TLS server name (SNI and certificate check), never looked up again:

- ``pick_address(host, port, permits, resolve)``: the host, then each address it resolves to,
  asked of ``permits(host, address)``; the first permitted address, or ``capability_denied``
  (``private_address``) naming the answers. Used by ``web_fetch``, ``a2a_call``, ``a2a.push``
  and the build proxy.
- ``PinnedTransport``: an httpx transport that sends every request to one checked
  ``scheme://host:port`` at its checked address (a request for anything else is refused), and
  bounds what is read back.
- ``net/pinned_requests.PinnedAdapter``: the same for a ``requests`` session (the registry
  client, oras); a module of its own, so the kernel loads ``requests`` only at the first push
  or pull.
- ``Resolver`` / ``system_resolver``: the one seam a test replaces (async);
  ``system_addresses`` is the same answer for synchronous callers.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from agentix.core.errors import CapabilityDenied, LimitExceeded, ToolError
from agentix.core.hosts import is_ip_literal, normalize_host

__all__ = ["Permits", "PinnedTransport", "Resolver", "default_tls", "pick_address", "system_addresses",
           "system_resolver"]

Permits = Callable[[str, "str | None"], bool]
Resolver = Callable[[str, int], Awaitable[list[str]]]


def _unique(infos: list[Any]) -> list[str]:
    out: list[str] = []
    for info in infos:
        addr = str(info[4][0])
        if addr not in out:
            out.append(addr)
    return out


async def system_resolver(host: str, port: int) -> list[str]:
    """Addresses for ``host`` from the system resolver, in its order, without duplicates."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise ToolError(f"cannot resolve {host}: {err.strerror}", host=host) from None
    return _unique(infos)


def system_addresses(host: str) -> list[str]:
    """``system_resolver`` for synchronous callers: ``[]`` when the name does not resolve (the
    request then fails as unreachable)."""
    try:
        return _unique(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM))
    except (OSError, UnicodeError):
        return []


async def pick_address(host: str, port: int, permits: Permits, resolve: Resolver) -> str:
    """The address to connect to for ``host`` (normalised): ``permits(host, None)`` first, then
    the first of its addresses (one lookup) that ``permits(host, address)``."""
    if not permits(host, None):
        raise CapabilityDenied(f"no capability allows network access to {host}", reason="not_granted", host=host)
    addrs = [host] if is_ip_literal(host) else await resolve(host, port)
    for addr in addrs:
        if permits(host, addr):
            return addr
    raise CapabilityDenied(
        f"{host} resolves to {', '.join(addrs) or 'nothing'}: a private, loopback or link-local "
        f"address needs a grant naming the host explicitly",
        reason="private_address", host=host, addresses=addrs,
    )


_TLS: list[ssl.SSLContext] = []


def default_tls() -> ssl.SSLContext:
    """The verifying TLS context (httpx's: certifi's CA bundle), made once: loading the bundle
    costs ~57 ms of CPU, which every fetch spent on the kernel's event loop when each client
    made its own. An ``SSLContext`` is safe to share between connections."""
    if not _TLS:
        _TLS.append(httpx.create_ssl_context(trust_env=False))
    return _TLS[0]


class PinnedTransport(httpx.AsyncBaseTransport):
    """Sends each request to the checked address ``addr`` of the one permitted
    ``scheme://host:port`` (``Host`` and TLS name stay ``host``), and bounds what is read back
    (``limit_exceeded`` past ``max_bytes``; ``None``: the caller bounds it)."""

    def __init__(self, scheme: str, host: str, port: int, addr: str, max_bytes: int | None = None, *,
                 verify: Any = True) -> None:
        self.scheme, self.host, self.port, self.addr, self.max_bytes = scheme, host, port, addr, max_bytes
        self._inner = httpx.AsyncHTTPTransport(trust_env=False, verify=default_tls() if verify is True else verify)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        if url.scheme != self.scheme or normalize_host(url.host) != self.host or port != self.port:
            raise CapabilityDenied(
                f"the remote at {self.host} pointed to {url.scheme}://{url.host}:{port}; the kernel talks only "
                f"to the host it was given (and checked)", reason="not_granted", host=url.host)
        request.url = url.copy_with(host=self.addr)
        if self.scheme == "https" and not is_ip_literal(self.host):
            request.extensions = {**request.extensions, "sni_hostname": self.host}
        resp = await self._inner.handle_async_request(request)
        if self.max_bytes is None:
            return resp
        return httpx.Response(resp.status_code, headers=resp.headers, stream=_Bounded(resp.stream, self.max_bytes),
                              extensions=resp.extensions)

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Bounded(httpx.AsyncByteStream):
    def __init__(self, inner: Any, limit: int) -> None:
        self._inner, self._limit = inner, limit

    async def __aiter__(self) -> Any:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise LimitExceeded(f"the response is over {self._limit} bytes", limit=self._limit)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


#: ``address(scheme, host, port)``: the checked address a connection to ``host`` goes to, or
