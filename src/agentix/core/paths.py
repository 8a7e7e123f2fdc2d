"""Path semantics for file grants: normalisation and ``P/*`` matching on ``/`` boundaries.

Rules (the whole of it):

- A request path is absolute (or resolved against a workspace by ``resolve_request``), free of
  NUL bytes, and contains no ``..`` component. ``..`` is *refused*, never collapsed: collapsing
  ``/data/x/../../etc/shadow`` lexically would be wrong as soon as ``x`` is a symlink, and a
  path that needs it is never required. ``.`` components and repeated slashes are dropped.
- A path pattern is either an exact absolute path ``/data/report.txt`` or a directory glob
  ``P/*`` which matches ``P`` itself and everything below it on a ``/`` boundary: ``/data/*``
  matches ``/data``, ``/data/a`` and ``/data/a/b/c``, never ``/data-x``. ``/*`` matches every
  path. No other wildcard is accepted.
- Matching is lexical. The file actually opened is checked by ``agentix.tools.safe_fs`` (openat2
  with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS under the granted root), so a symlink can never
  carry a lexically-granted path outside the grant.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentix.core.errors import InvalidRequest

__all__ = [
    "PathPattern",
    "normalize_path",
    "parse_path_pattern",
    "path_matches",
    "resolve_request",
    "split_under",
]

MAX_PATH = 4096


def normalize_path(path: str) -> str:
    """The canonical form of an absolute request path; InvalidRequest if it is not acceptable."""
    if not isinstance(path, str) or not path:
        raise InvalidRequest("a path must be a non-empty string", path=str(path)[:200])
    if len(path) > MAX_PATH:
        raise InvalidRequest(f"path is longer than {MAX_PATH} characters", path=path[:200])
    if "\x00" in path:
        raise InvalidRequest("a path may not contain a NUL byte", path=path[:200])
    if not path.startswith("/"):
        raise InvalidRequest(f"path {path!r} must be absolute", path=path[:200])
    parts = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise InvalidRequest(f"path {path!r} contains '..'; it is refused, not collapsed", path=path[:200])
        parts.append(part)
    return "/" + "/".join(parts)


def resolve_request(path: str, workspace: str | None) -> str:
    """Normalise ``path``; a relative path is taken relative to ``workspace`` (if there is one)."""
    if isinstance(path, str) and path and not path.startswith("/"):
        if workspace is None:
            raise InvalidRequest(f"path {path!r} must be absolute (the caller has no workspace)", path=path[:200])
        path = workspace.rstrip("/") + "/" + path
    return normalize_path(path)


@dataclass(frozen=True, slots=True)
class PathPattern:
    """``base`` is a normalised absolute path; ``tree`` says whether ``/*`` followed it."""

    base: str
    tree: bool

    def __str__(self) -> str:
        if self.tree:
            return "/*" if self.base == "/" else self.base + "/*"
        return self.base

    def matches(self, path: str) -> bool:
        """Whether the *normalised* path ``path`` is covered by this pattern."""
        if path == self.base:
            return True
        if not self.tree:
            return False
        if self.base == "/":
            return True
        return path.startswith(self.base) and path[len(self.base)] == "/"

    def covers(self, other: PathPattern) -> bool:
        """Whether every path ``other`` matches is also matched by this pattern."""
        if not self.matches(other.base):
            return False
        return self.tree or not other.tree

    def root(self) -> tuple[str, str]:
        """(directory to open, relative remainder) for the pattern's own base."""
        if self.tree:
            return self.base, ""
        head, _, name = self.base.rpartition("/")
        return head or "/", name


def parse_path_pattern(text: str) -> PathPattern:
    """``/data/*`` -> tree pattern at /data; ``/data/x.txt`` -> exact pattern."""
    if not isinstance(text, str):
        raise InvalidRequest(f"a path pattern must be a string, got {type(text).__name__}")
    text = text.strip()
    tree = False
    if text == "/*":
        return PathPattern("/", True)
    if text.endswith("/*"):
        tree = True
        text = text[:-2]
    if "*" in text or "?" in text or "[" in text:
        raise InvalidRequest(
            f"path pattern {text!r}: only a trailing '/*' wildcard is supported (e.g. /data/*)"
        )
    if text.endswith("/") and text != "/":
        raise InvalidRequest(f"path pattern {text!r}: write a directory grant as {text.rstrip('/')}/*")
    try:
        base = normalize_path(text)
    except InvalidRequest as err:
        raise InvalidRequest(f"path pattern: {err.message}") from None
    if base == "/" and not tree:
        tree = True
    return PathPattern(base, tree)


def path_matches(pattern: str | PathPattern, path: str) -> bool:
    """Whether ``path`` (raw request text) is covered by ``pattern``; a bad path matches nothing."""
    pat = pattern if isinstance(pattern, PathPattern) else parse_path_pattern(pattern)
    try:
        norm = normalize_path(path)
    except InvalidRequest:
        return False
    return pat.matches(norm)


def split_under(root: str, path: str) -> str:
    """The part of normalised ``path`` below normalised ``root`` ('' for root itself)."""
    if path == root:
        return ""
    prefix = root if root == "/" else root + "/"
    if not path.startswith(prefix):
        raise InvalidRequest(f"path {path!r} is not under {root!r}")
    return path[len(prefix):]
