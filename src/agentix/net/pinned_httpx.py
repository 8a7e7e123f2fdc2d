"""The httpx half of ``net/pinned.py``: ``PinnedTransport`` sends every request to one checked
``scheme://host:port`` at its checked address (``pinned.pick_address`` chose it), keeps the name
as ``Host`` and TLS server name, and bounds what is read back. A module of its own so that
``httpx`` (and what it pulls in) loads at the first outbound request, not with the kernel.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from agentix.core.errors import CapabilityDenied, LimitExceeded
from agentix.core.hosts import is_ip_literal, normalize_host

__all__ = ["PinnedTransport", "default_tls"]

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
