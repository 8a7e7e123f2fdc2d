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
query, which may carry a pre-signed credential). A name is checked by resolving it here; the
connection then resolves it again, so a name whose answers change between the two (DNS
rebinding) is not covered — docs/packages.md says so.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from agentix.core.errors import RegistryError

__all__ = ["MAX_REDIRECTS", "check_url"]

MAX_REDIRECTS = 5

Resolver = Callable[[str], list[str]]


def _resolve(host: str) -> list[str]:
    try:
        return sorted({ai[4][0] for ai in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)})
    except (OSError, UnicodeError):
        return []  # unresolvable: the request itself fails as unreachable


def _split(host_port: str) -> tuple[str, str]:
    """``host[:port]`` / ``[v6][:port]`` -> (host, port or "")."""
    if host_port.startswith("["):
        host, _, rest = host_port[1:].partition("]")
        return host.lower(), rest.removeprefix(":")
    host, _, port = host_port.partition(":")
    return host.lower().rstrip("."), port


def _zone(addr: str) -> str:
    """``loopback``, ``local`` (link-local, multicast, unspecified, reserved: never), ``private``
    or ``public``."""
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return "local"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local or ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        return "local"
    if ip.is_private or not ip.is_global:
        return "private"
    return "public"


def _zones(host: str, resolve: Resolver) -> set[str]:
    try:
        return {_zone(str(ipaddress.ip_address(host)))}
    except ValueError:
        pass
    if host == "localhost" or host.endswith(".localhost"):
        return {"loopback"}
    return {_zone(a) for a in resolve(host)}


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
