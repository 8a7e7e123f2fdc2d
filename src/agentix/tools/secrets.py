"""Secret injection into outgoing requests, and redaction before anything is logged.

Rules:

- A secret is injected by the kernel only where a ``secret: NAME`` grant allows it
  (``Request("secret", NAME)``); the agent names the secret, never sees its value.
- ``inject`` places the value as a header, an ``Authorization: Bearer`` header, or a query
  parameter; it returns the *secret-bearing* parts separately (``Injection``) so the caller
  can send them without storing them next to what the agent supplied.
- ``redact`` replaces every occurrence of every secret value (and its URL-encoded, base64,
  JSON- and repr-escaped forms) in any string, bytes, list or dict (keys too) with
  ``[secret:NAME]`` — ``kernel/vault.py`` runs it over replies, errors, events and log
  records before they leave the kernel.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, quote_plus, urlencode, urlsplit, urlunsplit

from agentix.core.errors import InvalidRequest

__all__ = ["Injection", "inject", "redact"]

How = Literal["header", "bearer", "query"]


@dataclass(frozen=True)
class Injection:
    """What to add to the request: ``headers`` (secret-bearing) and the final ``url``."""

    url: str
    headers: dict[str, str] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:  # never print the value
        return f"Injection(url=<redacted>, headers={sorted(self.headers)})"


def inject(url: str, value: str, how: How, name: str | None = None) -> Injection:
    """Inject ``value`` into a request for ``url``: as header ``name``, as a bearer token, or as
    query parameter ``name``."""
    if not isinstance(value, str) or not value:
        raise InvalidRequest("a secret value must be a non-empty string")
    if any(c in value for c in "\r\n\x00"):
        raise InvalidRequest("a secret value may not contain line breaks or NUL")
    if how == "bearer":
        return Injection(url, {"Authorization": f"Bearer {value}"})
    if how == "header":
        if not name or any(c in name for c in ":\r\n ") or not name.isascii():
            raise InvalidRequest(f"invalid header name {name!r} for secret injection")
        return Injection(url, {name: value})
    if how == "query":
        if not name:
            raise InvalidRequest("query injection needs a parameter name")
        parts = urlsplit(url)
        extra = urlencode({name: value})
        query = f"{parts.query}&{extra}" if parts.query else extra
        return Injection(urlunsplit(parts._replace(query=query)), {})
    raise InvalidRequest(f"unknown injection kind {how!r}; use header, bearer or query")


def _forms(value: str) -> list[str]:
    """Every form ``value`` takes on its way out: as is, percent-encoded (query or path style,
    either hex case), base64 (standard and URL-safe), JSON- and ``repr``-escaped."""
    raw = value.encode()
    forms = {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1],
             repr(value)[1:-1], base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode(),
             base64.b64encode(raw).decode().rstrip("="), base64.urlsafe_b64encode(raw).decode().rstrip("=")}
    for enc in (quote(value, safe=""), quote_plus(value), quote(value), quote(value, safe=_URL_SAFE)):
        forms.add(enc)
        forms.add(re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), enc))
    return sorted((f for f in forms if f), key=len, reverse=True)


#: characters an URL library may leave unencoded in a query or path (RFC 3986 sub-delims etc.)
_URL_SAFE = ":/?#[]@!$&'()*+,;=~"


def redact(obj: Any, secrets: dict[str, str]) -> Any:
    """A copy of ``obj`` with every secret value replaced by ``[secret:NAME]``."""
    if not secrets:
        return obj
    table = [(form, f"[secret:{name}]") for name, value in secrets.items() if value for form in _forms(value)]
    table.sort(key=lambda t: len(t[0]), reverse=True)

    def walk(x: Any) -> Any:
        if isinstance(x, str):
            for form, mark in table:
                if form in x:
                    x = x.replace(form, mark)
            return x
        if isinstance(x, (bytes, bytearray)):
            b = bytes(x)
            for form, mark in table:
                b = b.replace(form.encode(), mark.encode())
            return b
        if isinstance(x, dict):
            return {walk(k): walk(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(walk(v) for v in x)
        return x

    return walk(obj)
