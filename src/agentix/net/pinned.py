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
- ``net/pinned_httpx.PinnedTransport``: an httpx transport that sends every request to one
  checked ``scheme://host:port`` at its checked address (a request for anything else is
  refused), and bounds what is read back; a module of its own, so the kernel loads ``httpx``
  only at the first outbound request (its import costs ~0.15 s of CPU at every kernel start).
- ``net/pinned_requests.PinnedAdapter``: the same for a ``requests`` session (the registry
  client, oras); a module of its own, so the kernel loads ``requests`` only at the first push
  or pull.
- ``Resolver`` / ``system_resolver``: the one seam a test replaces (async);
  ``system_addresses`` is the same answer for synchronous callers.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from agentix.core.errors import CapabilityDenied, ToolError
from agentix.core.hosts import is_ip_literal

__all__ = ["Permits", "Resolver", "pick_address", "system_addresses", "system_resolver"]

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

