"""Package references (docker's grammar, narrowed), parsed once into a ``Ref``::

    [HOST[:PORT]/]PATH[:TAG]      PATH = lowercase components ([a-z0-9] runs joined by . _ -)
    [HOST[:PORT]/]PATH@sha256:HEX        separated by '/'; no '..', no empty part, no '\\'

Nothing downstream re-parses a reference or turns a name into a file path. Pure; the
Agentfile model (``core/agentfile.py``) and the package rules (``core/package.py``) both
use it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from agentix.core.errors import InvalidRequest

__all__ = ["DIGEST_RE", "MAX_REF", "Ref", "check_digest", "parse_ref", "sha256_digest"]

DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}\Z")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*\Z")
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                      r"|\[[0-9a-fA-F:]+\])(?::[0-9]{1,5})?\Z")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
MAX_REF = 255


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(digest: Any, what: str = "digest") -> str:
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise InvalidRequest(f"{what} {digest!r} is not a sha256 digest (sha256:<64 hex>)", field=what)
    return digest


@dataclass(frozen=True)
class Ref:
    """A parsed package reference. ``registry`` is None for names with no host part."""

    registry: str | None
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The repository name as signed and as trust patterns see it (host included)."""
        return f"{self.registry}/{self.path}" if self.registry else self.path

    def __str__(self) -> str:
        if self.digest:
            return f"{self.name}@{self.digest}"
        return f"{self.name}:{self.tag}"

    def with_tag(self, tag: str) -> Ref:
        return Ref(self.registry, self.path, tag, None)

    def with_digest(self, digest: str) -> Ref:
        return Ref(self.registry, self.path, None, digest)


def parse_ref(text: Any, *, default_tag: str | None = "latest") -> Ref:
    """Parse ``[host/]path[:tag|@sha256:hex]``; refuse anything that could name a file."""
    if not isinstance(text, str) or not text:
        raise InvalidRequest("a package reference must be a non-empty string like team/hello:1.0.0",
                             field="ref")
    if len(text) > MAX_REF or any(c in text for c in "\\\x00\n\r\t "):
        raise InvalidRequest(f"package reference {text[:80]!r} is too long or has a forbidden character",
                             field="ref")
    digest = None
    rest = text
    if "@" in text:
        rest, _, digest = text.partition("@")
        check_digest(digest, "ref")
    registry = None
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost") and first not in (".", ".."):
        if not _HOST_RE.match(first):
            raise InvalidRequest(f"package reference {text!r}: registry host {first!r} is not valid",
                                 field="ref")
        registry, rest = first, remainder
    tag = None
    if ":" in rest:
        rest, _, tag = rest.rpartition(":")
        if not _TAG_RE.match(tag):
            raise InvalidRequest(f"package reference {text!r}: tag {tag!r} is not valid "
                                 "(letters, digits, '_', '.', '-'; at most 128)", field="ref")
    if not _PATH_RE.match(rest):
        raise InvalidRequest(
            f"package reference {text!r}: name {rest!r} must be lowercase parts of letters and "
            "digits joined by '.', '_' or '-', separated by '/' (no '..', no empty parts)", field="ref")
    if digest is None and tag is None:
        if default_tag is None:
            raise InvalidRequest(f"package reference {text!r} needs a :TAG or @sha256:DIGEST", field="ref")
        tag = default_tag
    if digest is not None:
        tag = None  # NAME:TAG@DIGEST pins the digest; the tag is ignored
    return Ref(registry, rest, tag, digest)
