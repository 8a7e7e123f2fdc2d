"""The web dashboard's files and the security headers of every HTTP response.

The dashboard is a fixed set of files (``agentix/web/static``) read once when the server
starts: a request names a file of that set or gets 404. No request path is ever joined to a
directory, so ``..``, encoded slashes, absolute paths and symlinks cannot reach anything
else (``tests/dashboard/test_static.py`` tries them).

Every response — dashboard files, API answers, event streams — carries:

- ``Content-Security-Policy``: scripts, styles and connections from this origin only, no
  inline script or style, no plugins, no framing (``frame-ancestors 'none'``), no base or
  form targets elsewhere;
- ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``, ``Referrer-Policy:
  no-referrer``, ``Cross-Origin-Opener-Policy: same-origin``,
  ``Cross-Origin-Resource-Policy: same-origin``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CSP", "SECURITY_HEADERS", "StaticSet", "load_static", "security_headers"]

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")

SECURITY_HEADERS: dict[str, str] = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}

#: the only file kinds served (anything else in the directory is ignored)
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
    ".json": "application/json",
}
MAX_FILES = 200
MAX_FILE = 2 * 1024 * 1024


@dataclass(frozen=True)
class StaticSet:
    """The dashboard's files by URL name (``app.js``, ``vendor/LICENSE.txt``), in memory."""

    files: dict[str, tuple[bytes, str]]

    def get(self, name: str) -> tuple[bytes, str] | None:
        return self.files.get(name)


def load_static(root: Path) -> StaticSet:
    """Read every servable regular file under ``root`` (not following symlinks)."""
    files: dict[str, tuple[bytes, str]] = {}
    root = Path(root)
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file() or path.suffix not in TYPES:
            continue
        rel = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        data = path.read_bytes()
        if len(data) > MAX_FILE or len(files) >= MAX_FILES:
            raise ValueError(f"dashboard file {rel} is too large or there are too many files")
        files[rel] = (data, TYPES[path.suffix])
    return StaticSet(files)


Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


def security_headers(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: add ``SECURITY_HEADERS`` to every HTTP response start."""
    extra = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def wrapped(scope: Scope, receive: Callable[[], Awaitable[Any]],
                      send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []),
                                                  *((k, v) for k, v in extra if k not in have)]}
            await send(message)

        await app(scope, receive, send_with_headers)

    return wrapped
