"""Where a registry may send the kernel: redirects and token realms (packages/remote.py).

A registry answers with URLs the kernel then fetches on its own: a ``Location`` of a redirect
(blob downloads go to object storage on another host, legitimately) and the ``realm`` of a
bearer-token challenge (``auth.example`` for ``registry.example``). A hostile or compromised
registry could point them anywhere the kernel can reach: ``http://169.254.169.254/`` (cloud
metadata), a service on the kernel's loopback, ``file://``. The rule, one function:

- the scheme is ``http`` or ``https``; a registry spoken to over HTTPS never sends us to plain
  HTTP (its credentials and the bytes would travel in clear);
- the registry's own host (and port) is always fine;
- another host must not be, or resolve to, a link-local, multicast or unspecified address
  (metadata services live there), nor loopback unless the registry itself is on loopback, nor a
  private address unless the registry itself is private or loopback (an in-house registry may
  keep blobs on an in-house store; one on the internet may not walk us into the LAN);
- at most ``MAX_REDIRECTS`` redirects per request.

A refusal is ``registry_error`` with ``reason: redirect``, naming the URL's host (never its
query, which may carry a pre-signed credential).

A name is resolved once per session (``pin_session``): that answer is what ``check_url``
judges and where every connection of the session goes (``net.pinned_requests.PinnedAdapter``; ``Host``
and the TLS name stay the name), and each new connection is judged again on it. So a name
whose DNS answers change between the check and the connection (DNS rebinding) reaches only
the address that was checked. (A proxy from the environment, ``HTTPS_PROXY``, resolves names
itself: the operator's proxy then decides where a connection goes.)
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from agentix.core.errors import RegistryError
from agentix.core.hosts import address_zone
from agentix.net.pinned import system_addresses
from agentix.net.pinned_requests import PinnedAdapter

__all__ = ["MAX_REDIRECTS", "check_url", "pin_session"]

MAX_REDIRECTS = 5

Resolver = Callable[[str], list[str]]

_resolve: Resolver = system_addresses  # unresolvable: [] (the request itself fails as unreachable)


class _Answers:
    """One lookup per host for a session's life: every check and every connection of the
    session uses the same answer."""

    def __init__(self, resolve: Resolver) -> None:
        self._resolve = resolve
        self._seen: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def __call__(self, host: str) -> list[str]:
        with self._lock:
            if host not in self._seen:
                self._seen[host] = list(self._resolve(host))
            return list(self._seen[host])


def pin_session(session: Any, registry: str, registry_scheme: str, *, resolve: Resolver = _resolve,
                connections: Any = None) -> Resolver:
    """Mount on ``session`` (``requests``) an adapter whose every connection goes to an address
    ``check_url`` judged (and is added to ``connections``, if given); returns the session's
    resolver, for the caller's own ``check_url``."""
    answers = _Answers(resolve)

    def address(scheme: str, host: str, port: int) -> str:
        shown = f"[{host}]" if ":" in host else host
        check_url(registry, registry_scheme, f"{scheme}://{shown}:{port}/", resolve=answers)
        try:
            return str(ipaddress.ip_address(host))
        except ValueError:
            pass
        addrs = answers(host)
        if not addrs:
            raise RegistryError(f"cannot reach {host}: the name does not resolve", reason="unreachable",
                                registry=registry, target=host)
        return addrs[0]

    adapter = PinnedAdapter(address, connections)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return answers


def _split(host_port: str) -> tuple[str, str]:
    """``host[:port]`` / ``[v6][:port]`` -> (host, port or "")."""
    if host_port.startswith("["):
        host, _, rest = host_port[1:].partition("]")
        return host.lower(), rest.removeprefix(":")
    host, _, port = host_port.partition(":")
    return host.lower().rstrip("."), port


def _zones(host: str, resolve: Resolver) -> set[str]:
    try:
        return {address_zone(str(ipaddress.ip_address(host)))}
    except ValueError:
        pass
    if host == "localhost" or host.endswith(".localhost"):
        return {"loopback"}
    return {address_zone(a) for a in resolve(host)}


def check_url(registry: str, registry_scheme: str, url: str, *, resolve: Resolver = _resolve) -> None:
    """Raise ``RegistryError(reason="redirect")`` unless the registry ``registry`` (its
    ``host[:port]``, spoken to over ``registry_scheme``) may send the kernel to ``url``."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise RegistryError(f"the registry {registry} sent us to a malformed URL; refused", reason="redirect",
                            registry=registry, target="(a malformed URL)") from None
    scheme = parts.scheme.lower()
    try:
        shown = f"{scheme or '(no scheme)'}://{parts.hostname or ''}"
    except ValueError:  # a malformed port or bracket: name nothing of it
        shown = "(a malformed URL)"

    def refuse(why: str) -> RegistryError:
        return RegistryError(f"the registry {registry} sent us to {shown}: {why}; refused (a registry "
                             "may redirect to its own host or to another public one over the same "
                             "security)", reason="redirect", registry=registry, target=shown)

    if scheme not in ("http", "https"):
        raise refuse(f"the scheme {scheme or '(none)'!r} is not http or https")
    if registry_scheme == "https" and scheme != "https":
        raise refuse("it would downgrade HTTPS to plain HTTP")
    target = parts.netloc.rpartition("@")[2]
    try:
        parts.port  # noqa: B018 - a port that is not a number is refused here, not by the request
    except ValueError:
        raise refuse("its port is not a number") from None
    if not parts.hostname:
        raise refuse("it names no host")
    own_host, own_port = _split(registry)
    host, port = _split(target)
    default = "443" if scheme == "https" else "80"
    if host == own_host and (port or default) == (own_port or ("443" if registry_scheme == "https" else "80")):
        return
    own = _zones(own_host, resolve)
    theirs = _zones(host, resolve)
    if "local" in theirs:
        raise refuse("it is a link-local, multicast or unspecified address (metadata services live there)")
    if "loopback" in theirs and own != {"loopback"}:
        raise refuse("it is a loopback address and the registry is not")
    if "private" in theirs and not own & {"private", "loopback"}:
        raise refuse("it is a private address and the registry is public")
