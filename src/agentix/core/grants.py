"""Grants: what a capability allows, parsed from manifest strings; the narrowing relation.
(Over 400 lines: the grant grammar and its narrowing relation: each kind's parser sits beside
its covers rule, checked together.)

Grant syntax (one kind per string; several values as ``[a, b]`` or ``a, b``)::

    file_read: /data/*          paths: exact, or P/* (P and everything below, on / boundaries)
    file_write: /out/*
    tool: NAME | *              tools that touch no host resource (the resource tools below
                                need their resource grant instead; ``tool: *`` does not cover them)
    network: example.com, *.wikipedia.org, 10.0.0.5, *
    spawn_child: [fetcher, writer] | *
    exec: [git, python3] | *    program names (argv[0]), never a path or a shell string
    message_send: [name] | *
    secret: NAME                a vault secret a tool may inject (never shown to the agent),
                                only to the hosts the secret declares (``check_secret_host``)
    untaint: fetched_url | *    may clear that taint label
    model: openai:gpt-4o-mini | local:* | *   the models ``think`` may use (provider:model; a
                                trailing ``*`` matches any suffix)
    mcp: SERVER/TOOL | SERVER/* | SERVER/PREFIX* | *   tools of the MCP servers the operator
                                declared (kernel/mcp_tools.py); a trailing ``*`` only
    preset: standard            a named set (see PRESETS)

``{workspace}`` in a path is replaced by the agent's workspace. Zero grants is the default:
an agent holds nothing it was not given.

Which grant a checked tool needs (``requests_for_tool``): file_read/file_read_many/file_list/
grep need ``file_read`` on every path; file_write needs ``file_write``; file_edit needs both;
web_fetch and a2a_call need ``network`` on the host; exec needs ``exec`` on argv[0]; an MCP
server's tool (``mcp__SERVER__TOOL``) needs ``mcp: SERVER/TOOL``. Every other tool needs
``tool: NAME`` (or ``tool: *``; neither covers an MCP tool).

Narrowing (``covers``): a parent grant set covers a child grant when one parent grant of the
same kind includes everything the child grant allows (``/data/*`` covers ``/data/a/*`` and
``/data/x``; ``*.x.com`` covers ``a.x.com`` and ``*.a.x.com``; ``*`` covers every name). A
child may only ever be given what its parent's grants cover.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable, Literal, NamedTuple, get_args

from agentix.core.errors import HandoffEscalationDenied, InvalidRequest, LimitExceeded
from agentix.core.hosts import HostPattern, normalize_host, parse_host_pattern
from agentix.core.paths import PathPattern, normalize_path, parse_path_pattern
from agentix.core.taint import SOURCES

__all__ = [
    "GRANT_KINDS",
    "MAX_GRANTS",
    "PRESETS",
    "PRESET_DOCS",
    "TAINT_SOURCES",
    "Grant",
    "GrantKind",
    "GrantSet",
    "Request",
    "check_covered",
    "covers",
    "missing_grants",
    "parse_grant",
    "check_secret_host",
    "parse_grants",
    "parse_secret_hosts",
    "requests_for_tool",
    "MCP_SERVER_RE",
    "MCP_TOOL_PREFIX",
    "MCP_TOOL_RE",
    "mcp_resource",
    "mcp_tool_name",
]

GrantKind = Literal[
    "file_read", "file_write", "tool", "network", "spawn_child", "exec", "message_send", "secret", "untaint",
    "model", "mcp",
]
GRANT_KINDS: tuple[str, ...] = get_args(GrantKind)
TAINT_SOURCES = SOURCES   # the labels an `untaint` grant may name: every taint source

_PATH_KINDS = ("file_read", "file_write")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}\Z")
_AGENT_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}\Z")
_PROGRAM_RE = re.compile(r"^[A-Za-z0-9_+][A-Za-z0-9_.+-]{0,127}\Z")
_SECRET_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
#: ``provider:model``, a trailing ``*`` allowed (``local:*``, ``openai:gpt-4o*``)
#: ``SERVER/TOOL`` (MCP): a declared server's name, then a tool name; a trailing ``*`` allowed
MCP_SERVER_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")
MCP_TOOL_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
#: the kernel tool name of an MCP server's tool: ``mcp__SERVER__TOOL`` (a valid function name
#: for every model API; a server name holds no ``_``, so the split is unambiguous)
MCP_TOOL_PREFIX = "mcp__"
_MCP_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}/(?:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\*?|\*)\Z")
_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}:[A-Za-z0-9_.:/@+-]{0,127}\*?\Z")

PRESET_DOCS: dict[str, str] = {
    "unrestricted": "every tool, read and write anywhere except the kernel's own state "
    "($AGENTIX_HOME: keys, database, secrets, approvals, other agents' workspaces and logs), any "
    "public host, any program, spawn and message anyone, any configured model. Still no "
    "private/loopback network, no secrets, no untaint, and taint policy and approvals still "
    "apply. For trusted operator agents only.",
    "standard": "every plain tool, read and write in the workspace, any public host, spawn any "
    "child, message anyone. No exec.",
    "sandboxed": "every plain tool, read and write in the workspace only. No network, no exec, "
    "no children, no messages.",
    "readonly": "every plain tool, read the workspace. Nothing else.",
    "minimal": "read and write in the workspace and nothing else (no other tool).",
}

PRESETS: dict[str, tuple[str, ...]] = {
    "unrestricted": (
        "tool: *", "file_read: /*", "file_write: /*", "network: *", "exec: *",
        "spawn_child: *", "message_send: *", "model: *",
    ),
    "standard": (
        "tool: *", "file_read: {workspace}/*", "file_write: {workspace}/*", "network: *",
        "spawn_child: *", "message_send: *",
    ),
    "sandboxed": ("tool: *", "file_read: {workspace}/*", "file_write: {workspace}/*"),
    "readonly": ("tool: *", "file_read: {workspace}/*"),
    "minimal": ("file_read: {workspace}/*", "file_write: {workspace}/*"),
}


@dataclass(frozen=True, slots=True)
class Grant:
    """One right: ``kind`` and its canonical ``value`` (a pattern, a name or ``*``)."""

    kind: GrantKind
    value: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.value}"


class Request(NamedTuple):
    """One thing a call wants to do; build it with ``Request.make`` (which normalises).
    (A named tuple: hashing and comparing it is done in C, and the decision does it per
    resource.)"""

    kind: GrantKind
    value: str
    address: str | None = None  # network: the resolved address that will be connected to

    @staticmethod
    def make(kind: str, value: str, address: str | None = None) -> Request:
        if kind not in GRANT_KINDS:
            raise InvalidRequest(f"unknown request kind {kind!r}")
        if not isinstance(value, str):
            raise InvalidRequest(f"{kind}: expected a string, got {type(value).__name__}")
        if kind in _PATH_KINDS:
            value = normalize_path(value)
        elif kind == "network":
            value = normalize_host(value)
        return Request(kind, value, address)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.kind}: {self.value}" + (f" at {self.address}" if self.address else "")


# ----------------------------------------------------------------------------- parsing

def _split_values(raw: Any) -> list[str]:
    if isinstance(raw, (list, tuple)):
        vals = [str(v) for v in raw]
    else:
        text = str(raw).strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        vals = text.split(",")
    out = [v.strip().strip("'\"").strip() for v in vals]
    return [v for v in out if v]


def _canonical(kind: str, value: str, workspace: str | None, source: str) -> str:
    if kind in _PATH_KINDS:
        if "{workspace}" in value:
            if workspace is None:
                raise InvalidRequest(f"grant {source!r}: {{workspace}} used but there is no workspace")
            value = value.replace("{workspace}", workspace.rstrip("/"))
        try:
            return str(parse_path_pattern(value))
        except InvalidRequest as err:
            raise InvalidRequest(f"grant {source!r}: {err.message}") from None
    if kind == "network":
        try:
            return str(parse_host_pattern(value))
        except InvalidRequest as err:
            raise InvalidRequest(f"grant {source!r}: {err.message}") from None
    if value == "*" and kind != "secret":
        return "*"
    if kind == "tool":
        ok = _NAME_RE.match(value)
        what = "a tool name"
    elif kind in ("spawn_child", "message_send"):
        ok = _AGENT_RE.match(value)
        what = "an agent name (lowercase letters, digits, '_', '.', '-')"
    elif kind == "exec":
        ok = _PROGRAM_RE.match(value)
        what = "a program name such as git (no path, no spaces, no shell syntax)"
    elif kind == "model":
        ok = _MODEL_RE.match(value) and value.count("*") <= 1 and not value.endswith(":")
        what = "provider:model, e.g. openai:gpt-4o-mini or local:* (a trailing * only)"
    elif kind == "mcp":
        ok = _MCP_RE.match(value)
        what = "SERVER/TOOL, SERVER/* or SERVER/PREFIX* (a server declared in config.toml [mcp.servers.NAME]), or *"
    elif kind == "secret":
        ok = _SECRET_RE.match(value)
        what = "a secret name such as GITHUB_TOKEN (no wildcard)"
    else:  # untaint
        ok = value in TAINT_SOURCES
        what = "a taint label: " + ", ".join(TAINT_SOURCES) + " or *"
    if not ok:
        raise InvalidRequest(f"grant {source!r}: {value!r} is not {what}", grant=source)
    return value


def parse_grant(text: str, workspace: str | None = None) -> list[Grant]:
    """Parse one manifest string (``kind: value[, value]``, or ``preset: NAME``)."""
    if not isinstance(text, str):
        raise InvalidRequest(f"a grant must be a string like 'file_read: /data/*', got {type(text).__name__}")
    kind, sep, rest = text.partition(":")
    kind = kind.strip()
    if not sep or not kind:
        raise InvalidRequest(
            f"grant {text!r}: expected 'kind: value' (e.g. 'file_read: /data/*')", grant=text
        )
    if kind == "preset":
        name = rest.strip()
        if name not in PRESETS:
            raise InvalidRequest(
                f"grant {text!r}: unknown preset {name!r}; presets are " + ", ".join(PRESETS), grant=text
            )
        out: list[Grant] = []
        for item in PRESETS[name]:
            out.extend(parse_grant(item, workspace))
        return out
    if kind not in GRANT_KINDS:
        raise InvalidRequest(
            f"grant {text!r}: unknown kind {kind!r}; kinds are " + ", ".join(GRANT_KINDS) + ", preset",
            grant=text,
        )
    values = _split_values(rest)
    if not values:
        raise InvalidRequest(f"grant {text!r}: no value given", grant=text)
    return [Grant(kind, _canonical(kind, v, workspace, text)) for v in values]  # type: ignore[arg-type]


#: the most grants one set may hold (a manifest's, a delegation's, one token's): minting,
#: attenuating and checking a token grow with its grants, and a delegation of 5,000 grants held
#: the kernel's one event loop for 30 s (every agent's calls waited)
MAX_GRANTS = 256


def parse_grants(items: Iterable[str] | str, workspace: str | None = None) -> GrantSet:
    """Parse a manifest's ``capabilities`` list (duplicates removed, order kept); more than
    ``MAX_GRANTS`` grants (after presets and comma lists) is ``limit_exceeded``."""
    if isinstance(items, str):
        items = [items]
    seen: dict[Grant, None] = {}
    for item in items:
        for g in parse_grant(item, workspace):
            seen[g] = None
            if len(seen) > MAX_GRANTS:
                raise LimitExceeded(
                    f"more than {MAX_GRANTS} grants in one set: name a directory (`file_read: /data/*`) "
                    "or a wildcard instead of each path or host", limit=MAX_GRANTS, field="grants")
    return GrantSet(tuple(seen))


# ----------------------------------------------------------------------------- matching

@lru_cache(maxsize=4096)
def _path_pat(value: str) -> PathPattern:
    return parse_path_pattern(value)


@lru_cache(maxsize=4096)
def _host_pat(value: str) -> HostPattern:
    return parse_host_pattern(value)


def _model_match(pattern: str, value: str) -> bool:
    """``pattern`` (``*``, ``p:m`` or ``p:prefix*``) against ``value`` (a name or pattern)."""
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return pattern == value


def _grant_covers(p: Grant, c: Grant) -> bool:
    if p.kind != c.kind:
        return False
    if p.kind == "model" or p.kind == "mcp":
        return _model_match(p.value, c.value)
    if p.kind in _PATH_KINDS:
        return _path_pat(p.value).covers(_path_pat(c.value))
    if p.kind == "network":
        return _host_pat(p.value).covers(_host_pat(c.value))
    if p.value == "*" and p.kind != "secret":
        return True
    return p.value == c.value


def _grant_permits(g: Grant, r: Request) -> bool:
    if g.kind != r.kind:
        return False
    if g.kind == "model" or g.kind == "mcp":
        return "*" not in r.value and _model_match(g.value, r.value)
    if g.kind in _PATH_KINDS:
        return _path_pat(g.value).matches(r.value)
    if g.kind == "network":
        return _host_pat(g.value).permits(r.value, r.address)
    if g.value == "*" and g.kind != "secret":
        return True
    return g.value == r.value


@dataclass(frozen=True)
class GrantSet:
    """An immutable set of grants, indexed by kind."""

    grants: tuple[Grant, ...] = ()
    _by_kind: dict[str, tuple[Grant, ...]] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        idx: dict[str, list[Grant]] = {}
        for g in self.grants:
            idx.setdefault(g.kind, []).append(g)
        object.__setattr__(self, "_by_kind", {k: tuple(v) for k, v in idx.items()})

    def __iter__(self):
        return iter(self.grants)

    def __len__(self) -> int:
        return len(self.grants)

    def __contains__(self, g: object) -> bool:
        return g in self.grants

    def of_kind(self, kind: str) -> tuple[Grant, ...]:
        return self._by_kind.get(kind, ())

    def permits(self, request: Request) -> bool:
        return any(_grant_permits(g, request) for g in self._by_kind.get(request.kind, ()))

    def covers(self, child: Grant) -> bool:
        return any(_grant_covers(g, child) for g in self._by_kind.get(child.kind, ()))

    def strings(self) -> list[str]:
        return [str(g) for g in self.grants]

    def best_root(self, kind: str, path: str) -> str | None:
        """The most specific granted directory whose pattern matches normalised ``path``.

        For ``P/*`` that is P; for an exact path it is its parent directory. The kernel opens
        the file beneath this root with ``agentix.tools.safe_fs``.
        """
        best: str | None = None
        for g in self._by_kind.get(kind, ()):
            pat = _path_pat(g.value)
            if pat.matches(path):
                root = pat.root()[0]
                if best is None or len(root) > len(best):
                    best = root
        return best


def covers(parent: GrantSet | Iterable[Grant], child: Grant) -> bool:
    """Whether ``parent`` grants include everything ``child`` allows."""
    ps = parent if isinstance(parent, GrantSet) else GrantSet(tuple(parent))
    return ps.covers(child)


def missing_grants(parent: GrantSet | Iterable[Grant], children: Iterable[Grant]) -> list[Grant]:
    ps = parent if isinstance(parent, GrantSet) else GrantSet(tuple(parent))
    return [c for c in children if not ps.covers(c)]


def check_covered(parent: GrantSet | Iterable[Grant], children: Iterable[Grant]) -> None:
    """Raise HandoffEscalationDenied naming the first child grant the parent lacks."""
    lacking = missing_grants(parent, children)
    if lacking:
        raise HandoffEscalationDenied(
            f"parent lacks {lacking[0]}",
            reason="parent_lacks_grant",
            missing=[str(g) for g in lacking],
        )


# ----------------------------------------------------------------------------- tools

_READ_TOOLS = {"file_read", "file_list", "grep"}


#: tools that reach a host named by their "url": web_fetch, and a2a_call (a remote A2A agent)
_NETWORK_TOOLS = ("web_fetch", "a2a_call")
#: tools whose resources are paths in their arguments
_PATH_TOOLS = frozenset({*_READ_TOOLS, "file_read_many", "file_write", "file_edit"})


def requests_for_tool(tool: str, args: dict[str, Any], workspace: str | None = None) -> list[Request]:
    """What a call of a built-in checked tool needs; any other tool needs ``tool: NAME``.

    Paths are resolved against ``workspace`` when relative. ``web_fetch`` yields a network
    request without an address: the fetcher re-checks with the resolved address before it
    connects, and again on every redirect.
    """
    if tool not in _PATH_TOOLS and tool not in _NETWORK_TOOLS and tool != "exec":
        # a plain tool (echo, ...) or an MCP server's: one resource, said at once
        if tool.startswith(MCP_TOOL_PREFIX):
            return [Request("mcp", mcp_resource(tool))]
        return [Request("tool", tool)]
    from agentix.core.paths import resolve_request  # local: keeps the import graph obvious

    def path_of(key: str = "path") -> str:
        val = args.get(key)
        if not isinstance(val, str):
            raise InvalidRequest(f"{tool}: '{key}' must be a string path")
        return resolve_request(val, workspace)

    if tool in _READ_TOOLS:
        return [Request("file_read", path_of())]
    if tool == "file_read_many":
        paths = args.get("paths")
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
            raise InvalidRequest("file_read_many: 'paths' must be a non-empty list of path strings")
        out = []
        for p in paths:
            try:
                out.append(Request("file_read", resolve_request(p, workspace)))
            except InvalidRequest:
                continue  # reported per path by the tool; the others may still be read
        return out
    if tool == "file_write":
        return [Request("file_write", path_of())]
    if tool == "file_edit":
        p = path_of()
        return [Request("file_read", p), Request("file_write", p)]
    if tool in _NETWORK_TOOLS:  # the host of "url" (and the secret sent to it)
        from urllib.parse import urlsplit

        url = args.get("url")
        if not isinstance(url, str):
            raise InvalidRequest(f"{tool}: 'url' must be a string")
        host = urlsplit(url).hostname
        if not host:
            raise InvalidRequest(f"{tool}: {url!r} has no host")
        out = [Request.make("network", host)]
        secret = args.get("secret")
        if secret is not None:
            if not isinstance(secret, str) or not _SECRET_RE.match(secret):
                raise InvalidRequest(f"{tool}: 'secret' must be a vault secret name")
            out.append(Request("secret", secret))
        return out
    if tool == "exec":
        argv = args.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise InvalidRequest("exec: 'argv' must be a non-empty list of strings (never a shell string)")
        return [Request("exec", argv[0])]
    if tool.startswith(MCP_TOOL_PREFIX):
        return [Request("mcp", mcp_resource(tool))]
    return [Request("tool", tool)]


def mcp_resource(tool: str) -> str:
    """``mcp__SERVER__TOOL`` -> ``SERVER/TOOL`` (what an ``mcp:`` grant must permit)."""
    server, sep, name = tool[len(MCP_TOOL_PREFIX):].partition("__")
    if not sep or not MCP_SERVER_RE.match(server) or not MCP_TOOL_RE.match(name):
        raise InvalidRequest(f"{tool!r} is not an MCP tool name (mcp__SERVER__TOOL)", tool=tool)
    return f"{server}/{name}"


def mcp_tool_name(server: str, tool: str) -> str:
    """``SERVER``, ``TOOL`` -> the kernel tool name ``mcp__SERVER__TOOL``."""
    return f"{MCP_TOOL_PREFIX}{server}__{tool}"


# ---------------------------------------------------------------------------- secrets and hosts
def parse_secret_hosts(name: str, raw: Any) -> tuple[HostPattern, ...]:
    """The hosts a vault secret may be sent to, as the operator declared them (``hosts = [...]``:
    exact names or ``*.suffix``). ``*`` is refused: a secret bound to every host is bound to none."""
    if not isinstance(raw, list) or not all(isinstance(h, str) for h in raw):
        raise InvalidRequest(f'secret {name}: "hosts" must be a list of host names such as '
                             '["api.example.com"]', field=f"secrets.{name}.hosts")
    out = []
    for h in raw:
        p = parse_host_pattern(h)
        if str(p) == "*":
            raise InvalidRequest(f'secret {name}: "*" is not a host a secret may be bound to; name '
                                 "the hosts (or *.suffix) it is for", field=f"secrets.{name}.hosts")
        out.append(p)
    return tuple(out)


def check_secret_host(name: str, hosts: tuple[HostPattern, ...] | None, host: str) -> None:
    """Whether secret ``name`` may be sent to ``host`` (the request's host and every redirect
    hop's): only a host its declaration names. A secret declared without hosts goes nowhere."""
    from agentix.core.errors import CapabilityDenied

    if not hosts:
        raise CapabilityDenied(
            f"secret {name} declares no hosts it may be sent to: add hosts = [\"{host}\"] to its "
            f"[secrets.{name}] entry in config.toml (or keys/secrets.toml)",
            reason="secret_unbound", secret=name, host=host)
    h = normalize_host(host)
    if not any(p.matches(h) for p in hosts):
        raise CapabilityDenied(
            f"secret {name} may be sent only to {', '.join(str(p) for p in hosts)}, not {h}",
            reason="secret_host", secret=name, host=h)
