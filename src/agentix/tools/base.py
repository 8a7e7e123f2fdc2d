"""The tool registry: built-in tools the kernel performs on behalf of agents.

A tool is a ``ToolSpec``: a name, a description, a JSON Schema for its arguments, and an
async handler ``(ToolContext, args) -> dict``. The kernel validates the arguments'
shape (required keys and basic types) before the handler runs, so handlers can trust
what they get. Tools never run in the agent's process: they run in the kernel (or a
confined helper), after the pipeline's checks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, Sequence

from agentix.core.errors import AgentixError, InvalidRequest, LimitExceeded, NotFound, ToolError
from agentix.core.manifest import Limits, Manifest
from agentix.tools.safe_fs import Fence

if TYPE_CHECKING:
    from agentix.core.authorize import Authorization
    from agentix.core.grants import Request


__all__ = ["ToolAgent", "CallView", "ToolContext", "ToolProvider", "ToolRegistry", "ToolSpec", "check_args"]


class CallView(Protocol):
    """What a tool reads and writes of the system call that runs it (``kernel.dispatch.Call``
    is one; tools sit below the kernel, so they name only this)."""

    tool: str | None
    #: the call's taint labels: a tool that brings data from outside adds its label here
    taint: set[str]


class ToolAgent(Protocol):
    """What a tool may read of the agent it acts for (``kernel.process.AgentRecord`` is one)."""

    @property
    def agent_id(self) -> str: ...

    @property
    def manifest(self) -> Manifest: ...

    @property
    def parent(self) -> str | None: ...

    @property
    def limits(self) -> Limits: ...

    #: its context's taint labels (a tool that hands stored data back adds the data's labels)
    taint: set[str]


@dataclass
class ToolContext:
    """What a tool handler may use: the call, the agent it acts for and its workspace, the
    decision that allowed it, and the fence of the file tools."""

    call: CallView
    #: the agent the call acts for (the caller, or the agent an operator's ``tool.invoke``
    #: names); None for the operator acting as itself
    agent: ToolAgent | None
    agent_id: str | None
    workspace: Path | None
    #: the one decision that allowed this call (``core.authorize``): tools look up the token
    #: for each resource here and never see the caller's token list; None for the operator
    #: acting as itself
    authorization: Authorization | None = None
    #: a new decision for a resource found late (a redirect hop), charged to this call
    reauthorize: Callable[[Sequence[Request]], Authorization] | None = None
    #: builds what the file tools may never open (``agentix.tools.safe_fs.Fence``: the kernel's own
    #: state); called on the first read of ``fence``, so a tool that opens no file (echo) does
    #: not pay for the listdir/stat it takes
    make_fence: Callable[[], Fence] | None = None
    _fence: Fence | None = field(default=None, init=False, repr=False)

    @property
    def fence(self) -> Fence | None:
        """The fence for this call, built once from the kernel's state as it is now."""
        if self._fence is None and self.make_fence is not None:
            self._fence = self.make_fence()
        return self._fence

    def require_authorization(self) -> Authorization:
        if self.authorization is None:
            raise self._name_the_agent("acts with an agent's capabilities")
        return self.authorization

    def require_workspace(self) -> Path:
        if self.workspace is None:
            raise self._name_the_agent("acts in an agent's workspace")
        return self.workspace

    def _name_the_agent(self, needs: str) -> InvalidRequest:
        """The operator called a tool that needs an agent without naming one."""
        return InvalidRequest(f'tool {self.call.tool} {needs}; the operator must name the agent with "agent_id"',
                              field="agent_id")


ToolHandler = Callable[[ToolContext, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    schema: dict[str, Any]
    handler: ToolHandler
    #: each resource the call names stands alone in its authorization (``file_read_many``: a
    #: denied path is reported, the others are read); otherwise one denied resource refuses all
    partial: bool = False
    #: ``no_effect`` if the tool only reads or computes (echo, file reads, listings): its
    #: audit records are committed asynchronously; anything that writes, runs, fetches or
    #: spends is an ``effect`` (the default) -- docs/audit.md
    durability: Literal["effect", "no_effect"] = "effect"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "input_schema": self.schema}

    async def run(self, ctx: ToolContext, args: dict[str, Any], *, checked: bool = False) -> dict[str, Any]:
        """Check ``args`` (unless ``checked``: already done by the caller) and run the handler;
        only the family leaves (python-tuf's ``fetch`` over ``_fetch``). A backend's
        ``OSError`` becomes ``tool_error`` with its ``errno`` name (no path: the message says
        what failed, in the tool's terms); any other exception is a bug and goes up for the
        pipeline to report as ``internal_error``."""
        if not checked:
            check_args(self, args)
        try:
            return await self.handler(ctx, args)
        except AgentixError:
            raise
        except OSError as err:
            import errno as _errno

            name = _errno.errorcode.get(err.errno or 0, "EIO")
            raise ToolError(f"tool {self.name} failed: {err.strerror or type(err).__name__}",
                            tool=self.name, errno=name) from None


_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


def check_args(spec: ToolSpec, args: dict[str, Any]) -> None:
    """Check ``args`` against the tool's schema: required keys, known keys, basic types."""
    props: dict[str, Any] = spec.schema.get("properties", {})
    for key in spec.schema.get("required", []):
        if key not in args:
            raise InvalidRequest(f"tool {spec.name}: missing required argument {key!r}", field=key, tool=spec.name)
    if spec.schema.get("additionalProperties", True) is False:
        extra = sorted(set(args) - set(props))
        if extra:
            raise InvalidRequest(
                f"tool {spec.name}: unknown argument {extra[0]!r}; it takes {sorted(props)}",
                field=extra[0], tool=spec.name)
    for key, val in args.items():
        most = props.get(key, {}).get("maxItems")
        if most is not None and isinstance(val, list) and len(val) > most:
            raise LimitExceeded(f"tool {spec.name}: {key!r} takes at most {most} items, got {len(val)}",
                                field=key, tool=spec.name, limit=most, requested=len(val))
        want = props.get(key, {}).get("type")
        if want is None:
            continue
        wants = want if isinstance(want, list) else [want]
        ok = False
        for w in wants:
            if w == "null" and val is None:
                ok = True
            elif w in _TYPES and isinstance(val, _TYPES[w]) and not (
                w in ("integer", "number") and isinstance(val, bool)
            ):
                ok = True
        if not ok:
            raise InvalidRequest(
                f"tool {spec.name}: argument {key!r} must be {' or '.join(wants)}, got {type(val).__name__}",
                field=key, tool=spec.name)


class ToolProvider(Protocol):
    """Tools that are not known at start-up (an MCP server's): named under one prefix."""

    def spec(self, name: str) -> ToolSpec | None: ...

    def specs(self) -> list[ToolSpec]: ...


class ToolRegistry:
    def __init__(self) -> None:
        self._tools: dict[str, ToolSpec] = {}
        self._providers: list[tuple[str, ToolProvider]] = []

    def add_provider(self, prefix: str, provider: ToolProvider) -> None:
        """Names starting with ``prefix`` are asked of ``provider`` (kernel/mcp_tools.py)."""
        if any(prefix.startswith(p) or p.startswith(prefix) for p, _ in self._providers) or any(
                n.startswith(prefix) for n in self._tools):
            raise ValueError(f"tool prefix {prefix} overlaps another")
        self._providers.append((prefix, provider))

    def _provided(self, name: str) -> ToolSpec | None:
        for prefix, p in self._providers:
            if name.startswith(prefix):
                return p.spec(name)
        return None

    def register(self, spec: ToolSpec) -> None:
        if spec.name in self._tools or any(spec.name.startswith(p) for p, _ in self._providers):
            raise ValueError(f"tool {spec.name} registered twice")
        self._tools[spec.name] = spec

    def get(self, name: str) -> ToolSpec:
        try:
            return self._tools[name]
        except KeyError:
            spec = self._provided(name)
            if spec is not None:
                return spec
            raise NotFound(f"no tool named {name!r}; `agentix tools` lists them", tool=name) from None

    def durability(self, name: str) -> Literal["effect", "no_effect"]:
        """A tool's durability class; an unknown tool counts as an effect."""
        spec = self._tools.get(name) or self._provided(name)
        return "effect" if spec is None else spec.durability

    def _all(self) -> dict[str, ToolSpec]:
        out = dict(self._tools)
        for _prefix, p in self._providers:
            out.update((s.name, s) for s in p.specs())
        return out

    def names(self) -> list[str]:
        return sorted(self._all())

    def describe(self) -> list[dict[str, Any]]:
        tools = self._all()
        return [tools[n].describe() for n in sorted(tools)]
