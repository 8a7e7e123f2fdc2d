"""web_fetch: one HTTP(S) request on an agent's behalf, checked hop by hop.

Rules:

- Only ``http`` and ``https`` URLs (no ``file:``, ``ftp:``, ``data:`` ...).
- Before any connection the host is checked against the caller's grants (``permits(host,
  None)``); then the name is resolved and the address is checked too (``permits(host,
  address)``): private, loopback, link-local, multicast and unspecified addresses are refused
  unless a grant names that host or address explicitly.
- The connection goes to the address that was checked (``net.pinned_httpx.PinnedTransport``: the
  ``Host`` header and TLS SNI/certificate name stay the original host), so DNS cannot change
  the answer between check and connect. Proxies from the environment are ignored.
- Redirects are followed by hand, at most ``max_redirects`` (5), each hop checked the same
  way. Secret headers injected by the kernel go to the original host only.
- The body is read up to ``max_bytes``; the whole fetch has one ``timeout`` (monotonic).
- ``settle`` (the kernel passes its ledger's ``flush``) is awaited after each hop's checks and
  before its connection, so a charge a hop's check made is durable before the hop happens.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any, Awaitable, Callable

from agentix.core.errors import CapabilityDenied, InvalidRequest, LimitExceeded, Timeout, ToolError
from agentix.core.hosts import normalize_host
from agentix.net.pinned import Permits, Resolver, pick_address, system_resolver

__all__ = ["DEFAULT_MAX_BYTES", "token_permits", "web_fetch"]

DEFAULT_MAX_BYTES = 2 * 1024 * 1024
DEFAULT_TIMEOUT = 30.0
MAX_REDIRECTS = 5
_REDIRECTS = {301, 302, 303, 307, 308}

def _decode(data: bytes, content_type: str) -> tuple[str, str]:
    charset = "utf-8"
    for part in content_type.split(";")[1:]:
        k, _, v = part.strip().partition("=")
        if k.lower() == "charset" and v:
            charset = v.strip('"')
    try:
        return data.decode(charset), "text"
    except (UnicodeDecodeError, LookupError):
        return base64.b64encode(data).decode("ascii"), "base64"


async def web_fetch(
    url: str,
    *,
    permits: Permits,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: str | bytes | None = None,
    secret_headers: dict[str, str] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float = DEFAULT_TIMEOUT,
    max_redirects: int = MAX_REDIRECTS,
    resolve: Resolver = system_resolver,
    verify: Any = True,
    settle: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """Fetch ``url``; ``permits(host, address)`` is the capability check (address None = the
    host alone). Returns ``{url, status, content_type, content, encoding, bytes, truncated,
    redirects}``."""
    method = method.upper()
    if method not in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        raise InvalidRequest(f"web_fetch: unsupported method {method!r}")
    try:
        async with asyncio.timeout(timeout):
            return await _fetch(
                url, permits, method, dict(headers or {}), body, dict(secret_headers or {}),
                max_bytes, max_redirects, resolve, verify, timeout, settle,
            )
    except TimeoutError:
        raise Timeout(f"web_fetch of {url} took longer than {timeout} s", url=url, timeout=timeout) from None


async def _fetch(
    url: str, permits: Permits, method: str, headers: dict[str, str], body: str | bytes | None,
    secret_headers: dict[str, str], max_bytes: int, max_redirects: int, resolve: Resolver,
    verify: Any, timeout: float, settle: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    import httpx

    from agentix.net.pinned_httpx import PinnedTransport

    try:
        current = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as err:
        raise InvalidRequest(f"web_fetch: {url!r} is not a valid URL: {err}") from None
    first_origin: tuple[str, str, int] | None = None  # the secret goes there only
    hops: list[str] = []
    for _hop in range(max_redirects + 1):
        if current.scheme not in ("http", "https"):
            raise CapabilityDenied(f"web_fetch allows only http and https, not {current.scheme or 'no scheme'}:",
                                   reason="scheme", url=str(current))
        if not current.host:
            raise InvalidRequest(f"web_fetch: {str(current)!r} has no host")
        host = normalize_host(current.host)
        port = current.port or (443 if current.scheme == "https" else 80)
        if first_origin is None:
            first_origin = (current.scheme, host, port)
        addr = await pick_address(host, port, permits, resolve)
        if settle is not None:  # what the hop's check charged is durable before we connect
            await settle()
        send_headers = {k: v for k, v in headers.items() if k.lower() != "host"}
        if (current.scheme, host, port) == first_origin:  # never another port's service, nor plain http
            send_headers.update(secret_headers)
        transport = PinnedTransport(current.scheme, host, port, addr, verify=verify)
        async with httpx.AsyncClient(transport=transport, trust_env=False, timeout=timeout) as client:
            req = client.build_request(
                method, current, headers=send_headers,
                content=body.encode() if isinstance(body, str) else body,
            )
            try:
                resp = await client.send(req, stream=True, follow_redirects=False)
            except httpx.HTTPError as err:
                raise ToolError(f"web_fetch of {current} failed: {err}", url=str(current)) from None
            try:
                location = resp.headers.get("location")
                if resp.status_code in _REDIRECTS and location:
                    hops.append(str(current))
                    nxt = current.join(location)
                    if resp.status_code == 303 or (resp.status_code in (301, 302) and method == "POST"):
                        method, body = "GET", None
                    current = nxt
                    continue
                data = bytearray()
                truncated = False
                async for chunk in resp.aiter_bytes():
                    room = max_bytes - len(data)
                    if len(chunk) > room:
                        data += chunk[:room]
                        truncated = True
                        break
                    data += chunk
                ctype = resp.headers.get("content-type", "")
                content, enc = _decode(bytes(data), ctype)
                return {
                    "url": str(current), "status": resp.status_code, "content_type": ctype,
                    "content": content, "encoding": enc, "bytes": len(data), "truncated": truncated,
                    "redirects": hops,
                }
            finally:
                await resp.aclose()
    raise LimitExceeded(f"web_fetch: more than {max_redirects} redirects", limit=max_redirects, redirects=hops)


def token_permits(token: Any) -> Permits:
    """The ``permits`` callback for a verified ``agentix.core.caps.Token``."""
    from agentix.core.grants import Request

    def permits(host: str, address: str | None) -> bool:
        return bool(token.permits(Request.make("network", host, address)))

    return permits
