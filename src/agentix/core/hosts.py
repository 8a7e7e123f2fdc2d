"""Host names, host patterns for ``network:`` grants, and the public-address rule.

Rules:

- A host is normalised before any comparison: surrounding ``[]`` of an IPv6 literal removed,
  lower case, one trailing dot removed, each label IDNA-encoded (``bücher.de`` ->
  ``xn--bcher-kva.de``); IP literals are put in their canonical text form. A name with empty
  labels, labels over 63 characters, or characters outside ``[a-z0-9-_]`` is refused.
- A pattern is ``*`` (any host), ``*.suffix`` (any name ending in ``.suffix`` on a label
  boundary — ``*.x.com`` matches ``a.x.com`` and ``a.b.x.com``, never ``x.com``, ``evilx.com``
  or ``x.com.evil.net``), or an exact host or IP literal.
- Only an *explicit* pattern (exact name or IP literal) permits connecting to an address that
  is not public (private, loopback, link-local, multicast, unspecified, reserved, shared, or
  IPv4-mapped versions of these). ``*`` and ``*.suffix`` never do.
- An address a face listens on (``--http HOST:PORT`` of the kernel's HTTP API and of ``agentix
  mcp``) is parsed by one rule, ``parse_listen_address``: a host (an IPv6 literal in brackets),
  a port from 1 to 65535 (0, "any free port", is refused: a client could not know where to
  connect, and the Host guard names the port); a host that is not loopback (``localhost``,
  127.0.0.0/8, ``::1``) needs the face's allow-remote flag.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from agentix.core.errors import InvalidRequest

__all__ = [
    "HostPattern",
    "address_zone",
    "is_ip_literal",
    "is_public_address",
    "normalize_host",
    "is_loopback_host",
    "parse_host_pattern",
    "parse_listen_address",
    "served_hosts",
]

_LABEL_RE = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\Z")


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def normalize_host(host: str) -> str:
    """Canonical host text; InvalidRequest for a malformed name."""
    if not isinstance(host, str) or not host.strip():
        raise InvalidRequest("a host name must be a non-empty string", host=str(host)[:200])
    raw = host.strip()
    if raw.startswith("[") and raw.endswith("]"):
        raw = raw[1:-1]
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        pass
    name = raw.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > 253:
        raise InvalidRequest(f"host {host!r} is not a valid name", host=host[:200])
    labels = []
    for label in name.split("."):
        if not label.isascii():
            try:
                label = label.encode("idna").decode("ascii")
            except UnicodeError:
                raise InvalidRequest(f"host {host!r} is not a valid international name", host=host[:200]) from None
        if not _LABEL_RE.match(label):
            raise InvalidRequest(f"host {host!r} has an invalid label {label!r}", host=host[:200])
        labels.append(label)
    return ".".join(labels)


def address_zone(address: str) -> str:
    """Where ``address`` leads, after unwrapping an IPv4 address carried in IPv6 (IPv4-mapped
    ``::ffff:a.b.c.d``, 6to4 ``2002:AABB:CCDD::``): ``loopback``; ``local`` (link-local — the
    cloud metadata address among them —, multicast, unspecified, reserved, or not an address);
    ``private`` (private, shared, documentation, anything not globally routable); ``public``.
    The one classification every outbound check uses (``is_public_address``, and the registry's
    redirect rule in packages/registry_urls.py)."""
    try:
        ip = ipaddress.ip_address(address.strip("[]").split("%", 1)[0])
    except ValueError:
        return "local"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv6Address) and ip.sixtofour is not None:
        ip = ip.sixtofour
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local or ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        return "local"
    if ip.is_private or not ip.is_global:
        return "private"
    return "public"


def is_public_address(address: str) -> bool:
    """True only for globally routable unicast addresses (``address_zone`` is ``public``)."""
    return address_zone(address) == "public"


@dataclass(frozen=True, slots=True)
class HostPattern:
    """``kind`` is 'any' (``*``), 'suffix' (``*.value``) or 'exact' (a name or IP literal)."""

    kind: str
    value: str

    def __str__(self) -> str:
        if self.kind == "any":
            return "*"
        if self.kind == "suffix":
            return "*." + self.value
        return self.value

    @property
    def explicit(self) -> bool:
        """Whether this pattern names one host: only those may reach non-public addresses."""
        return self.kind == "exact"

    def matches(self, host: str) -> bool:
        """``host`` must already be normalised."""
        if self.kind == "any":
            return True
        if self.kind == "suffix":
            return host.endswith("." + self.value) and not is_ip_literal(host)
        return host == self.value

    def permits(self, host: str, address: str | None) -> bool:
        """Whether a connection to ``host`` at resolved ``address`` is allowed by this pattern."""
        if not self.matches(host):
            return False
        if address is None or self.explicit:
            return True
        return is_public_address(address)

    def covers(self, other: HostPattern) -> bool:
        """Whether everything ``other`` permits is permitted by this pattern (lexically)."""
        if self.kind == "any":
            return other.kind != "exact" or is_public_literal_or_name(other.value)
        if self.kind == "suffix":
            if other.kind == "any":
                return False
            if other.kind == "suffix":
                return other.value == self.value or other.value.endswith("." + self.value)
            return self.matches(other.value)
        return other.kind == "exact" and other.value == self.value


def is_public_literal_or_name(value: str) -> bool:
    """A name (not an IP literal), or a public IP literal."""
    return not is_ip_literal(value) or is_public_address(value)


def parse_host_pattern(text: str) -> HostPattern:
    if not isinstance(text, str):
        raise InvalidRequest(f"a host pattern must be a string, got {type(text).__name__}")
    t = text.strip()
    if t == "*":
        return HostPattern("any", "*")
    if "://" in t or "/" in t:
        raise InvalidRequest(f"network grant {text!r}: give a host name, not a URL (e.g. example.com)")
    if t.startswith("*."):
        rest = t[2:]
        if "*" in rest:
            raise InvalidRequest(f"network grant {text!r}: only one leading '*.' wildcard is allowed")
        value = normalize_host(rest)
        if is_ip_literal(value):
            raise InvalidRequest(f"network grant {text!r}: a wildcard cannot apply to an IP address")
        if "." not in value:
            raise InvalidRequest(f"network grant {text!r}: a wildcard needs a domain with a dot (e.g. *.example.com)")
        return HostPattern("suffix", value)
    if "*" in t:
        raise InvalidRequest(f"network grant {text!r}: '*' is allowed only alone or as a leading '*.'")
    if ":" in t and not is_ip_literal(t):
        raise InvalidRequest(f"network grant {text!r}: ports are not part of a host grant")
    return HostPattern("exact", normalize_host(t))


#: the names a loopback-bound server is reached under
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def served_hosts(host: str, port: int) -> frozenset[str]:
    """The ``Host`` header values a server bound to ``host:port`` answers (anything else is a
    page reaching it under another name: DNS rebinding): the address itself, and when it is
    bound to loopback, each loopback name with that port."""
    names = {host}
    if host in LOOPBACK_NAMES:
        names |= set(LOOPBACK_NAMES)
    return frozenset(f"[{n}]:{port}" if ":" in n else f"{n}:{port}" for n in names)


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback IP literal (127.0.0.0/8, ``::1``): reachable only from this
    machine. ``host`` is normalised (``normalize_host``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_listen_address(addr: str, *, allow_remote: bool, option: str, remote_option: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) a face listens on -> (normalised host, port).
    A host that is not loopback needs ``allow_remote``. ``option`` and ``remote_option`` are
    the face's flags, named in the errors (``InvalidRequest``, field ``http``)."""
    malformed = InvalidRequest(f"{option} {addr!r}: expected HOST:PORT (a port from 1 to 65535; an IPv6 "
                               "address in brackets), e.g. 127.0.0.1:8470 or [::1]:8470", field="http")
    if not isinstance(addr, str):
        raise malformed
    host_s, sep, port_s = addr.rpartition(":")
    if not sep or not host_s or not port_s.isascii() or not port_s.isdigit() or not 0 < int(port_s) <= 65535:
        raise malformed
    bracketed = host_s.startswith("[") and host_s.endswith("]")
    if bracketed:
        host_s = host_s[1:-1]
    if ":" in host_s and not bracketed or bracketed and ":" not in host_s:
        raise malformed  # an IPv6 literal goes in brackets, and only it does
    try:
        host = normalize_host(host_s)
    except InvalidRequest:
        raise malformed from None
    if not allow_remote and not is_loopback_host(host):
        raise InvalidRequest(f"{option} {addr!r}: {host} is not a loopback address; it binds to loopback only "
                             f"unless {remote_option} is given (then put TLS in front of it)", field="http")
    return host, int(port_s)
