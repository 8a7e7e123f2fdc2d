"""Taint labels and the policy that decides what a tainted context may call.

Rules:

- A label says where untrusted data entered: ``source`` is one of ``fetched_url``,
  ``untrusted_file``, ``agent_message``, ``external_tool``; ``origin`` says from where (the
  URL, the path, the sending agent, the tool). The kernel attaches labels to an agent's
  context when data enters it; the caller never chooses its own labels.
- Labels only accumulate: a message sent or a child spawned from a tainted context carries
  the sender's labels (``TaintSet.union``). Only an approval or an ``untaint: SOURCE``
  capability clears a label (``TaintSet.without``), and the kernel audits it.
- The policy is an ordered table of rules ``(tool pattern, condition, sources, action)``; the
  first rule whose pattern and condition match and whose sources intersect the context's
  labels decides ``refuse`` or ``ask`` (approval). No matching rule: ``allow``.
- Safe defaults (``DEFAULT_RULES``): ``exec``; ``a2a_call``; ``web_fetch`` carrying a body or a query (data
  could leave in it); sending tools (``send_*``, ``post_*``, ``email_*``, ``*_send``,
  ``*_post``); and ``file_write``/``file_edit`` outside the workspace refuse ``fetched_url``,
  ``untrusted_file``, ``external_tool`` and ``agent_message`` taint.
- What the kernel keeps is bounded (``cap_labels``): an agent's labels, a call's
  (``Call.taint``), a saved state's, a file record's and a memory record's are at most ``MAX_LABELS``; past it the rest are kept as
  one ``SOURCE:(N more)`` label per source, so every source survives and the policy (which
  decides by source) decides exactly as it would on the whole set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable, Literal, get_args

from agentix.core.errors import InvalidRequest, TaintViolation
from agentix.core.paths import normalize_path

__all__ = [
    "DEFAULT_RULES",
    "CappedLabels",
    "MAX_LABELS",
    "TaintDecision",
    "TaintLabel",
    "TaintPolicy",
    "TaintRule",
    "TaintSet",
    "TaintSource",
    "cap_labels",
    "parse_rules",
    "parse_untrusted_paths",
    "untrusted_path_match",
    "web_fetch_has_payload",
]

TaintSource = Literal["fetched_url", "untrusted_file", "agent_message", "external_tool"]
SOURCES: tuple[str, ...] = get_args(TaintSource)
Condition = Literal["always", "with_payload", "outside_workspace"]
Action = Literal["refuse", "ask"]


@dataclass(frozen=True, slots=True)
class TaintLabel:
    source: TaintSource
    origin: str

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise InvalidRequest(f"unknown taint source {self.source!r}; sources are " + ", ".join(SOURCES))

    def to_data(self) -> dict[str, str]:
        return {"source": self.source, "origin": self.origin}


@dataclass(frozen=True, slots=True)
class TaintSet:
    """An immutable set of labels (what one agent context carries)."""

    labels: frozenset[TaintLabel] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.labels)

    def __iter__(self):
        return iter(sorted(self.labels, key=lambda lb: (lb.source, lb.origin)))

    def add(self, source: str, origin: str) -> TaintSet:
        return TaintSet(self.labels | {TaintLabel(source, origin)})  # type: ignore[arg-type]

    def union(self, other: TaintSet | Iterable[TaintLabel]) -> TaintSet:
        others = other.labels if isinstance(other, TaintSet) else frozenset(other)
        return TaintSet(self.labels | others)

    def without(self, source: str, origin: str | None = None) -> TaintSet:
        """Labels of ``source`` (and ``origin``, when given) removed — after an approval or
        an ``untaint`` capability, never otherwise."""
        return TaintSet(
            frozenset(lb for lb in self.labels if not (lb.source == source and origin in (None, lb.origin)))
        )

    def sources(self) -> frozenset[str]:
        return frozenset(lb.source for lb in self.labels)

    def to_data(self) -> list[dict[str, str]]:
        return [lb.to_data() for lb in self]

    def to_strings(self) -> list[str]:
        """``source:origin`` strings (``source`` alone when the origin is empty), sorted."""
        return [f"{lb.source}:{lb.origin}" if lb.origin else lb.source for lb in self]

    @classmethod
    def from_strings(cls, items: Iterable[str]) -> TaintSet:
        """Labels from ``source`` or ``source:origin`` strings (the kernel's ``Call.taint``)."""
        out = set()
        for item in items:
            source, _, origin = item.partition(":")
            out.add(TaintLabel(source, origin))  # type: ignore[arg-type]
        return cls(frozenset(out))

    @classmethod
    def from_data(cls, data: Iterable[dict[str, str]]) -> TaintSet:
        return cls(frozenset(TaintLabel(d["source"], d["origin"]) for d in data))  # type: ignore[arg-type]


#: the most labels the kernel keeps in one place (an agent, a saved state, a file record, a
#: memory record): a context that read 10,000 untrusted files would otherwise hold 10,000
MAX_LABELS = 64

_MORE = re.compile(r"\((\d+) more\)")


def cap_labels(labels: Iterable[str], limit: int = MAX_LABELS) -> list[str]:
    """``labels`` (``source:origin`` strings) sorted, and at most ``limit`` of them: past it the
    first ones (sorted) are kept and the rest become one ``SOURCE:(N more)`` per source (an
    earlier ``SOURCE:(N more)`` adds its N), so every source (what the policy and ``untaint``
    decide by) survives. Capping a capped list changes nothing."""
    out = sorted({str(x) for x in labels})
    if len(out) <= limit:
        return out
    exact: list[str] = []
    more: dict[str, int] = {}
    for x in out:
        src, _, origin = x.partition(":")
        m = _MORE.fullmatch(origin)
        if m:
            more[src] = more.get(src, 0) + int(m.group(1))
        else:
            exact.append(x)
    keep = max(limit - len({x.partition(":")[0] for x in out}), 0)
    for x in exact[keep:]:
        src = x.partition(":")[0]
        more[src] = more.get(src, 0) + 1
    return sorted([*exact[:keep], *(f"{src}:({n} more)" for src, n in more.items())])


class CappedLabels(set[str]):
    """An agent's labels as the kernel holds them: a set of ``source:origin`` strings that
    caps itself (``cap_labels``) after every addition, so it never holds more than
    ``MAX_LABELS`` however much the agent reads; removal (``untaint``) is a set's."""

    def __init__(self, labels: Iterable[str] = ()) -> None:
        super().__init__(labels)
        self._cap()  # within the bound (the common case: a call with a few labels) nothing to do

    def _cap(self) -> None:
        if len(self) > MAX_LABELS:
            capped = cap_labels(self)
            self.clear()
            super().update(capped)

    def add(self, label: str) -> None:
        super().add(label)
        self._cap()

    def update(self, *others: Iterable[str]) -> None:
        super().update(*others)
        self._cap()

    def __ior__(self, other: Iterable[str]) -> CappedLabels:  # type: ignore[override]
        self.update(other)
        return self


@dataclass(frozen=True, slots=True)
class TaintRule:
    tool: str  # exact name, "prefix*", "*suffix" or "*"
    sources: frozenset[str]
    action: Action = "refuse"
    when: Condition = "always"

    def applies(self, tool: str, has_payload: bool, outside_workspace: bool) -> bool:
        pat = self.tool
        if pat == "*":
            ok = True
        elif pat.endswith("*"):
            ok = tool.startswith(pat[:-1])
        elif pat.startswith("*"):
            ok = tool.endswith(pat[1:])
        else:
            ok = tool == pat
        if not ok:
            return False
        if self.when == "with_payload":
            return has_payload
        if self.when == "outside_workspace":
            return outside_workspace
        return True


_WEB_AND_MESSAGES = frozenset({"fetched_url", "untrusted_file", "external_tool", "agent_message"})

DEFAULT_RULES: tuple[TaintRule, ...] = (
    TaintRule("exec", _WEB_AND_MESSAGES),
    TaintRule("web_fetch", _WEB_AND_MESSAGES, when="with_payload"),
    # a message to a remote A2A agent carries what the context holds out of the machine
    TaintRule("a2a_call", _WEB_AND_MESSAGES),
    TaintRule("send_*", _WEB_AND_MESSAGES),
    TaintRule("post_*", _WEB_AND_MESSAGES),
    TaintRule("email_*", _WEB_AND_MESSAGES),
    TaintRule("*_send", _WEB_AND_MESSAGES),
    TaintRule("*_post", _WEB_AND_MESSAGES),
    TaintRule("file_write", _WEB_AND_MESSAGES, when="outside_workspace"),
    TaintRule("file_edit", _WEB_AND_MESSAGES, when="outside_workspace"),
)


@dataclass(frozen=True, slots=True)
class TaintDecision:
    action: Literal["allow", "refuse", "ask"]
    tool: str
    label: TaintLabel | None = None

    def violation(self) -> TaintViolation:
        """The ``taint_violation`` error for a refusal: data ``{tool, source, origin}``."""
        assert self.label is not None
        return TaintViolation(
            f"{self.tool} is not allowed from a context tainted by {self.label.source} "
            f"({self.label.origin}); ask the operator for approval",
            tool=self.tool, source=self.label.source, origin=self.label.origin,
        )


class TaintPolicy:
    """The policy table. ``decide`` is pure and cheap (rules are few)."""

    def __init__(self, rules: Iterable[TaintRule] = DEFAULT_RULES) -> None:
        self.rules = tuple(rules)

    def decide(
        self,
        tool: str,
        taint: TaintSet,
        *,
        has_payload: bool = False,
        outside_workspace: bool = False,
    ) -> TaintDecision:
        if not taint:
            return TaintDecision("allow", tool)
        for rule in self.rules:
            if not rule.applies(tool, has_payload, outside_workspace):
                continue
            for lb in taint:
                if lb.source in rule.sources:
                    return TaintDecision(rule.action, tool, lb)
        return TaintDecision("allow", tool)

    def check(self, tool: str, taint: TaintSet, **facts: bool) -> TaintDecision:
        """``decide``, raising ``taint_violation`` on refuse (``ask`` is returned to the caller)."""
        d = self.decide(tool, taint, **facts)
        if d.action == "refuse":
            raise d.violation()
        return d


def web_fetch_has_payload(args: dict[str, Any]) -> bool:
    """Whether a web_fetch call carries data out: a body, or a query string."""
    from urllib.parse import urlsplit

    if args.get("body") not in (None, "", b"") or args.get("json") is not None or args.get("data"):
        return True
    url = args.get("url")
    return isinstance(url, str) and bool(urlsplit(url).query)


def parse_rules(data: Iterable[dict[str, Any]]) -> tuple[TaintRule, ...]:
    """Rules from config: ``[{tool: exec, sources: [fetched_url], action: ask, when: always}]``."""
    out = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or "tool" not in item:
            raise InvalidRequest(f"taint rule {i}: expected a mapping with 'tool' and 'sources'")
        sources = item.get("sources", list(_WEB_AND_MESSAGES))
        if isinstance(sources, str):
            sources = [sources]
        bad = [s for s in sources if s not in SOURCES]
        if bad:
            raise InvalidRequest(f"taint rule {i}: unknown source {bad[0]!r}; sources are " + ", ".join(SOURCES))
        action = item.get("action", "refuse")
        if action not in ("refuse", "ask"):
            raise InvalidRequest(f"taint rule {i}: action must be 'refuse' or 'ask', got {action!r}")
        when = item.get("when", "always")
        if when not in ("always", "with_payload", "outside_workspace"):
            raise InvalidRequest(f"taint rule {i}: 'when' must be always, with_payload or outside_workspace")
        out.append(TaintRule(str(item["tool"]), frozenset(sources), action, when))
    return tuple(out)


def parse_untrusted_paths(data: Any) -> tuple[str, ...]:
    """``[taint] untrusted_paths``: absolute host paths or globs (``*`` and ``?`` within one
    path component, ``**`` across any number); a path without a glob covers itself and all
    below it. Anything else is ``invalid_request`` naming the field."""
    field = "taint.untrusted_paths"
    if not isinstance(data, list):
        raise InvalidRequest(f"{field} must be a list of absolute paths or globs, "
                             f"e.g. [\"/data/inbox/**\"]; got {type(data).__name__}", field=field)
    out = []
    for i, item in enumerate(data):
        if not isinstance(item, str) or not item.startswith("/") or "\x00" in item:
            raise InvalidRequest(f"{field}[{i}] must be an absolute host path or glob (starting with /), "
                                 f"got {item!r}", field=field)
        # in the form the paths it is matched against have (``/data//inbox`` and ``/data/./inbox``
        # would match nothing, silently: the operator's rule off without a word)
        try:
            out.append(normalize_path(item))
        except InvalidRequest as err:
            raise InvalidRequest(f"{field}[{i}]: {err}", field=field) from None
    return tuple(out)


@lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out), re.S)


def untrusted_path_match(patterns: Iterable[str], path: str) -> bool:
    """Whether the host ``path`` lies under one of ``patterns`` (``parse_untrusted_paths``)."""
    for pat in patterns:
        if not any(c in pat for c in "*?"):
            base = pat.rstrip("/") or "/"
            if path == base or path.startswith(base.rstrip("/") + "/"):
                return True
        elif _glob_regex(pat).fullmatch(path):
            return True
    return False
