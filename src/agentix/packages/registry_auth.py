"""Answering a registry's authentication challenge (the 401 of the OCI Distribution API).

A registry says how it wants to be authenticated in ``WWW-Authenticate``:

* ``Basic realm=…`` (distribution with htpasswd, most self-hosted registries): the username
  and password of ``registry/credentials.json``, sent as they are;
* ``Bearer realm=URL,service=S,scope=repository:NAME:ACTIONS`` (Docker Hub, GHCR, Harbor,
  GitLab, distribution with ``auth: token``): a token is fetched for that scope from the
  realm — with the username and password (Basic) when the credentials file has them,
  anonymously when it has none (public repositories) — and sent as ``Bearer``. A token is
  good for the scope it was issued for: a HEAD asks for ``pull``, an upload for
  ``pull,push``, another repository for its own; tokens are kept per (realm, service,
  scope). A ``token`` in the credentials file is sent as it is (a CI job's token).

The header that last answered is sent up front with the next request (no challenge round
trip, no request body sent twice); a challenge to it is answered again. An answer that would
repeat what was just refused is no answer (the caller reports ``unauthorized``). The realm
is fetched through the registry's own checked session (``packages/registry_urls.py``: a
realm on a forbidden address is refused like a redirect there).
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from agentix.core.canonical import bounded_loads

__all__ = ["Challenges", "parse_challenge"]

#: a token endpoint's answer is read up to this many bytes
MAX_TOKEN_ANSWER = 1 << 20
_PARAM = re.compile(r'([A-Za-z_]+)="([^"]*)"')

#: ``fetch(url, headers)``: GET ``url`` on the registry's checked session; returns the
#: status and at most ``MAX_TOKEN_ANSWER + 1`` bytes of the body
Fetch = Callable[[str, dict[str, str]], tuple[int, bytes]]


def parse_challenge(text: str) -> tuple[str, dict[str, str]]:
    """``WWW-Authenticate`` as (scheme in lower case, its quoted parameters)."""
    scheme, _, rest = text.strip().partition(" ")
    return scheme.lower(), dict(_PARAM.findall(rest))


class Challenges:
    """One registry host's answers to its challenges (one per ``RemoteRegistry``)."""

    def __init__(self, username: str | None, password: str | None, token: str | None, fetch: Fetch) -> None:
        self._basic = ("Basic " + base64.b64encode(f"{username}:{password or ''}".encode()).decode()
                       if username else None)
        self._static = f"Bearer {token}" if token and not username else None
        self._fetch = fetch
        self._tokens: dict[tuple[str, str, str], str] = {}
        self._lock = threading.Lock()
        self._current = self._basic or self._static

    def up_front(self) -> dict[str, str]:
        """The header to send with a request before any challenge to it."""
        current = self._current
        return {"Authorization": current} if current else {}

    def answer(self, original: Any, headers: dict[str, str] | None, refresh: bool = False, *,
               fetch: Fetch | None = None) -> tuple[dict[str, str], bool]:
        """oras's ``authenticate_request``: the headers to retry ``original``'s request with,
        and whether there is anything new to retry with. ``fetch``: the asking client's (its
        session, its clock) when it is not the one that made these answers — a sibling's token
        fetch must not run on (and restart) its creator's clock."""
        headers = dict(headers or {})
        sent = headers.get("Authorization")
        scheme, params = parse_challenge(original.headers.get("WWW-Authenticate", ""))
        if scheme == "basic":
            value = self._basic
        elif scheme == "bearer":
            value = self._static or self._bearer(params, refresh=refresh, sent=sent,
                                                            fetch=fetch or self._fetch)
        else:
            value = None
        if value is None or value == sent:
            return headers, False
        headers["Authorization"] = value
        self._current = value
        return headers, True

    def _bearer(self, params: dict[str, str], *, refresh: bool, sent: str | None, fetch: Fetch) -> str | None:
        realm = params.get("realm")
        if not realm:
            return None
        key = (realm, params.get("service", ""), params.get("scope", ""))
        with self._lock:
            value = self._tokens.get(key)
            if value is not None and not refresh and value != sent:
                return value
            query = ([("service", key[1])] if key[1] else []) + [("scope", s) for s in key[2].split() if s]
            url = realm + ("&" if "?" in realm else "?") + urlencode(query) if query else realm
            status, body = fetch(url, {"Authorization": self._basic} if self._basic else {})
            if status != 200 or len(body) > MAX_TOKEN_ANSWER:
                return None
            try:
                data = bounded_loads(body)
            except ValueError:
                return None
            token = data.get("token") or data.get("access_token") if isinstance(data, dict) else None
            if not isinstance(token, str) or not token or any(c in token for c in "\r\n "):
                return None
            self._tokens[key] = value = f"Bearer {token}"
            return value
