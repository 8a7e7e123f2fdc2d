"""The system-call pipeline: identify → check → execute → record → reply.

Every call, from an agent or from the operator, goes through ``Pipeline.run``:

1. *identify* — the ``Caller`` is bound to the connection when it is made (an agent's
   channel is created at spawn); nothing in ``params`` can change it;
2. *check* — each ``Stage.before`` runs in order (capabilities, taint, budget, approval);
   any of them may refuse by raising an ``AgentixError``; nothing has run yet;
3. *execute* — the method's handler;
4. *after* — each ``Stage.after`` runs in reverse order with the result or the error
   (settle budgets, label the result's taint);
5. *record* — the event is appended to the kernel's event log. Durability follows the
   effect (``MethodSpec.durability``; for ``tool.call``/``tool.invoke`` the tool's own
   ``ToolSpec.durability``): an ``effect`` call's ``tool.invoked`` intent record is durable
   before the handler runs and its outcome record is durable before the reply; a
   ``no_effect`` call does not wait — its records are committed by the next group commit
   (docs/audit.md, "What a kill -9 can lose").

A refusal in step 2 is recorded too (``<kind>.denied``-style events come from the stage
that refused, through ``Call.meta['denial']``), so a denied call leaves exactly one audit
record and no other trace.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from agentix.core.errors import AgentixError, InvalidRequest

__all__ = ["Call", "Caller", "Durability", "MethodSpec", "Pipeline", "Stage", "EventSink",
           "OPERATOR"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caller:
    """Who is calling. Bound to the connection; never taken from the request."""

    agent_id: str | None       # None for the operator
    name: str | None = None
    workspace: Path | None = None

    @property
    def is_operator(self) -> bool:
        return self.agent_id is None

    def label(self) -> str:
        return "operator" if self.agent_id is None else f"{self.name} ({self.agent_id})"


OPERATOR = Caller(agent_id=None, name="operator")


@dataclass
class Call:
    """One system call in flight."""

    caller: Caller
    method: str
    params: dict[str, Any]
    tool: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    taint: set[str] = field(default_factory=set)
    meta: dict[str, Any] = field(default_factory=dict)
    #: the agent the call acts for (the caller, or for operator ``tool.invoke`` the named agent)
    subject: str | None = None


class Stage(Protocol):
    """A plug-in step of the pipeline (capabilities, taint, budget, approval...)."""

    async def before(self, call: Call) -> None: ...

    async def after(self, call: Call, result: Any, error: BaseException | None) -> None: ...


class EventSink(Protocol):
    async def record(
        self, kind: str, agent_id: str | None, data: dict[str, Any], taint: tuple[str, ...] = (),
        *, durable: bool = True,
    ) -> Any: ...


#: ``effect``: the call may change something outside the kernel's memory (a file, a process,
#: the network, a provider, the store): durable intent before, durable outcome before the
#: reply. ``no_effect``: it only reads or computes; its records are committed asynchronously.
Durability = Literal["effect", "no_effect"]


Handler = Callable[[Call], Awaitable[Any]]


@dataclass(frozen=True)
class MethodSpec:
    """A system call or operator method."""

    name: str
    handler: Handler
    #: which connections may call it: agents, the operator, or both
    agent: bool = False
    operator: bool = False
    #: whether it goes through the check stages (pure queries about oneself do not)
    checked: bool = True
    #: whether a successful call is recorded as an event (tool calls always are)
    recorded: bool = False
    #: whether the call has an effect outside the kernel (tool calls: the tool decides)
    durability: Durability = "effect"


class Pipeline:
    def __init__(
        self, events: EventSink, tool_durability: Callable[[str], Durability] | None = None
    ) -> None:
        self.events = events
        #: a tool's durability class by name (unknown tools count as effects)
        self.tool_durability: Callable[[str], Durability] = tool_durability or _effect
        self.stages: list[Stage] = []
        self._methods: dict[str, MethodSpec] = {}
        self.calls = 0
        self.refusals = 0

    def add_stage(self, stage: Stage) -> None:
        self.stages.append(stage)

    def register(self, spec: MethodSpec, *, replace: bool = False) -> None:
        """Add a method; ``replace=True`` swaps an existing one (tests plug scripted
        implementations in this way)."""
        if spec.name in self._methods and not replace:
            raise ValueError(f"method {spec.name} registered twice")
        self._methods[spec.name] = spec

    def methods(self, *, agent: bool) -> list[str]:
        return sorted(n for n, s in self._methods.items() if (s.agent if agent else s.operator))

    def lookup(self, caller: Caller, method: str) -> MethodSpec:
        spec = self._methods.get(method)
        if spec is None or not (spec.operator if caller.is_operator else spec.agent):
            from agentix.rpc.server import unknown_method

            raise unknown_method(method)
        return spec

    async def run(self, caller: Caller, method: str, params: dict[str, Any], *, taint: set[str] | None = None) -> Any:
        spec = self.lookup(caller, method)
        call = Call(caller=caller, method=method, params=params, subject=caller.agent_id,
                    taint=set(taint) if taint else set())
        if method == "tool.call" or method == "tool.invoke":
            name = params.get("name")
            args = params.get("args", {})
            if not isinstance(name, str) or not name:
                raise InvalidRequest('tool calls need a string "name"', field="name")
            if args is None:
                args = {}
            if not isinstance(args, dict):
                raise InvalidRequest('"args" must be an object', field="args")
            call.tool, call.args = name, args
        if call.tool is not None:
            durable = self.tool_durability(call.tool) != "no_effect"
        else:
            durable = spec.durability != "no_effect"
        self.calls += 1
        ran: list[Stage] = []
        if spec.checked:
            try:
                for stage in self.stages:
                    await stage.before(call)
                    ran.append(stage)
            except AgentixError as err:
                self.refusals += 1
                for stage in reversed(ran):
                    await stage.after(call, None, err)
                await self._record_refusal(call, err, durable)
                raise
        if call.tool is not None:
            await self.events.record(
                "tool.invoked", call.subject,
                {"tool": call.tool, "by": call.caller.label(), "args": _summarise(call.args)},
                tuple(sorted(call.taint)), durable=durable,
            )
        try:
            result = await spec.handler(call)
        except AgentixError as err:
            for stage in reversed(ran):
                await stage.after(call, None, err)
            if call.tool is not None or spec.recorded:
                await self._record_outcome(call, err, durable)
            raise
        for stage in reversed(ran):
            await stage.after(call, result, None)
        if call.tool is not None or spec.recorded:
            await self._record_outcome(call, None, durable)
        return result

    async def _record_outcome(self, call: Call, err: AgentixError | None, durable: bool) -> None:
        kind = "tool.result" if call.tool is not None else call.method
        data: dict[str, Any] = {"ok": err is None}
        if call.tool is not None:
            data["tool"] = call.tool
        if err is not None:
            data.update(error=err.code, message=err.message)
        if call.meta.get("event_data"):
            data.update(call.meta["event_data"])
        await self.events.record(kind, call.subject, data, tuple(sorted(call.taint)),
                                 durable=durable)

    async def _record_refusal(self, call: Call, err: AgentixError, durable: bool) -> None:
        data: dict[str, Any] = {"method": call.method, "error": err.code, "message": err.message}
        if call.tool is not None:
            data["tool"] = call.tool
        data.update({k: v for k, v in err.data.items() if k not in data})
        kind = call.meta.get("denial_kind") or (
            "capability.denied" if err.code.startswith("capability") else f"call.refused"
        )
        await self.events.record(kind, call.subject, data, tuple(sorted(call.taint)),
                                 durable=durable)


def _effect(tool: str) -> Durability:
    return "effect"


def _summarise(args: dict[str, Any], limit: int = 256) -> dict[str, Any]:
    """Arguments as recorded in events: long strings are cut (full content never logged)."""
    out: dict[str, Any] = {}
    for key, val in args.items():
        if isinstance(val, str) and len(val) > limit:
            out[key] = val[:limit] + f"... ({len(val)} chars)"
        elif isinstance(val, (dict, list)):
            text = repr(val)
            out[key] = text if len(text) <= limit else text[:limit] + "..."
        else:
            out[key] = val
    return out
