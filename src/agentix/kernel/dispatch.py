"""The system-call pipeline: identify → check → execute → record → reply.
(Over 400 lines: one pipeline: its stages, recording and durability are one ordered rule, read
top to bottom.)

Every call, from an agent or from the operator, goes through ``Pipeline.run``:

1. *identify* — the ``Caller`` is bound to the connection when it is made (an agent's
   channel is created at spawn); nothing in ``params`` can change it;
2. *check* — each ``Stage.before`` runs in order (capabilities, taint, budget, approval);
   any of them may refuse by raising an ``AgentixError``; nothing has run yet;
3. *execute* — the method's handler; its result is redacted and written as JSON here
   (``rpc.framing.check_result_size``: a peer's reply puts those bytes in when the result is
   ``SPLICE_MIN`` bytes or more, ``run(..., encoded=True)``); a result too large for one
   reply (``rpc.framing.MAX_RESULT_BYTES`` of JSON) fails the call with ``limit_exceeded`` (``data.limit: "result_bytes"``), recorded as
   failed like any handler's error;
   A call decided for an agent runs as *live* work (``kernel/live_calls.py``): if a
   revocation or an expiry ends the authority its decision rested on while it runs, it is
   ended there (its process killed, its download aborted, its think cancelled) and fails
   with that refusal;
4. *after* — each ``Stage.after`` runs in reverse order with the result or the error
   (settle budgets, label the result's taint);
5. *record* — the event is appended to the kernel's event log. Durability follows the
   effect (``MethodPolicy.durability``; for ``tool.call``/``tool.invoke`` the tool's own
   ``ToolSpec.durability``): an ``effect`` call's ``tool.invoked`` intent record is durable
   before the handler runs and its outcome record is durable before the reply; a
   ``no_effect`` call does not wait — its records are committed by the next group commit
   (docs/audit.md, "What a kill -9 can lose").

A refusal in step 2 is recorded too (``<kind>.denied``-style events come from the stage
that refused, through ``Call.denial_kind``), so a denied call leaves exactly one audit
record and no other trace. The records of calls that change nothing — every refusal, and a
``no_effect`` method's records (its handler's, in its own task, and its outcome) — are held
to the caller's quota (``kernel/record_gate.py``): past it, one is counted into an
``audit.suppressed`` aggregate instead of written, so no caller grows the log at will.

Every method is registered with a ``MethodPolicy`` (the table is ``kernel/methods.py``): a
``MethodSpec`` cannot be built without one, and an unknown method is refused
(``method_not_found``) — "a missing key means refuse".
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, Sequence

from agentix.core.errors import AgentixError, InvalidRequest
from agentix.core.grants import Grant, Request
from agentix.core.taint import CappedLabels
from agentix.kernel.event_sink import EventSink
from agentix.kernel.live_calls import LiveCalls
from agentix.kernel.lookup import Lookup
from agentix.kernel.process import AgentRecord
from agentix.kernel.record_gate import quiet
from agentix.rpc.framing import SPLICE_MIN, Encoded, check_result_size

if TYPE_CHECKING:
    from agentix.core.authorize import Authorization

__all__ = ["Call", "Caller", "MethodPolicy", "MethodSpec", "OperatorSession", "Observer", "Pipeline", "Redactor", "Stage",
           "EventSink", "OPERATOR", "naming_params"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caller:
    """Who is calling. Bound to the connection; never taken from the request."""

    agent_id: str | None       # None for the operator (and the operator's faces)
    name: str | None = None
    workspace: Path | None = None
    #: an operator face bound read-only (``session.bind``): every ``effect`` method is refused
    read_only: bool = False

    @property
    def is_operator(self) -> bool:
        return self.agent_id is None

    @property
    def is_face(self) -> bool:
        """An operator connection that named itself (``session.bind``: ``mcp``, ...)."""
        return self.agent_id is None and self.name not in (None, "operator")

    def label(self) -> str:
        # the operator socket is "operator"; a face names itself ("mcp", "http:<token name>")
        if self.agent_id is None:
            return self.name or "operator"
        return f"{self.name} ({self.agent_id})"


OPERATOR = Caller(agent_id=None, name="operator")


class OperatorSession:
    """One operator connection's caller: the operator, until the connection binds itself to
    a face with ``session.bind`` (a name for the audit log, optionally read-only). Binding
    happens once per connection and only narrows: the caller is held here, by the
    connection, and no later request can change it."""

    def __init__(self) -> None:
        self.caller = OPERATOR

    async def run(self, pipeline: Pipeline, method: str, params: dict[str, Any]) -> Any:
        """The call's result as the peer is sent it (``Pipeline.run(encoded=True)``), but for
        ``session.bind``, whose answer this session reads."""
        result = await pipeline.run(self.caller, method, params, encoded=method != "session.bind")
        if method == "session.bind":
            self.caller = Caller(agent_id=None, name=result["caller"], read_only=result["read_only"])
        return result


@dataclass
class Call:
    """One system call in flight. Typed fields only: stages write what they decided here."""

    caller: Caller
    method: str
    params: dict[str, Any]
    spec: MethodSpec | None = None
    tool: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    #: the labels the call carries (what it read, what its context held): at most
    #: ``MAX_LABELS``, every source kept (``core.taint.CappedLabels``), however it is added to
    taint: CappedLabels = field(default_factory=CappedLabels)
    #: the agent the call acts for (the caller, or for operator ``tool.invoke`` the named agent)
    subject: str | None = None
    #: the one decision (``core.authorize``): what each resource is covered by, already charged
    authorization: Authorization | None = None
    #: the agents a name-resolving call (``ipc.broadcast``) was decided over, each with the
    #: resource that authorises it: bound when the resources are worked out, never re-resolved
    recipients: tuple[tuple[str, Any], ...] = ()
    #: ``dry_run``: the answer of a pure check (nothing charged, nothing run)
    dry_run: dict[str, Any] | None = None
    #: the audit kind of a refusal when not ``capability.denied``/``call.refused``
    denial_kind: str | None = None
    #: extra fields for the outcome record
    event_data: dict[str, Any] | None = None
    #: the tool's arguments were checked against its schema (the capability stage does it
    #: first; the tool does not check them again)
    args_checked: bool = False
    #: the re-check of the call's decision (``CapabilityService.still_live``), set by the
    #: capability stage once it committed: a call with one runs as work the kernel ends when
    #: its authority ends (``kernel/live_calls.py``)
    live: Callable[[], None] | None = None
    #: the decisions made while it ran, over resources found late (a redirect hop's host):
    #: what it does now rests on them too, so its re-check covers them
    hops: list[Authorization] = field(default_factory=list)

    def __post_init__(self) -> None:
        if type(self.taint) is not CappedLabels:
            self.taint = CappedLabels(self.taint)


class Stage(Protocol):
    """A plug-in step of the pipeline (capabilities, taint, budget, approval...)."""

    async def before(self, call: Call) -> None: ...

    async def after(self, call: Call, result: Any, error: BaseException | None) -> None: ...


class Observer(Protocol):
    """Who watches the calls (``kernel/telemetry.Telemetry``: metrics, traces). It wraps
    ``Pipeline.run`` when it is turned on (off, the call path is unchanged) and counts the
    refusals an edge makes before the pipeline (the HTTP API's role check)."""

    def refused(self, method: str, err: AgentixError) -> None: ...


class Redactor(Protocol):
    """What must not leave the kernel, removed from a reply or an error (``kernel/vault.py``)."""

    def redact(self, obj: Any) -> Any: ...

    def redact_error(self, err: AgentixError) -> AgentixError: ...


Handler = Callable[[Call], Awaitable[Any]]
#: ``(what it may read of the kernel, call, subject record) -> every resource the call will touch``
ResourceFn = Callable[[Lookup, Call, AgentRecord], Sequence[Request | Grant]]
#: ``(what it may read of the kernel, call) -> None``: a relation the caller must stand in (raise to refuse)
GuardFn = Callable[[Lookup, Call], None]
Durability = Literal["effect", "no_effect"]


@dataclass(frozen=True)
class MethodPolicy:
    """How a method is authorised, recorded and made durable (one row of the method table).

    - ``resources``: the function naming every resource the call touches, each authorised by
      a token in one decision (``core.authorize``); None: the method touches no resource that
      a token governs (a query about oneself, or an operator method: the operator's
      connection is the authority).
    - ``guard``: a relation the caller must stand in (a descendant, a child), checked first.
    - ``partial``/``charge``/``tool_call``: passed to the decision (see ``AuthRequest``).
    - ``recorded``: a successful call is appended to the audit log (refusals always are).
    - ``durability``: ``effect`` = the call changes something outside the kernel's memory (a
      file, a connection, money, another agent): its intent and outcome records are durable
      before the reply; ``no_effect`` = it does not wait for the disk.
    - ``doc``: what it is authorised against, in words (docs/security.md lists them).
    """

    durability: Durability
    doc: str
    resources: ResourceFn | None = None
    guard: GuardFn | None = None
    recorded: bool = False
    partial: bool = False
    charge: Literal["per_token", "per_resource"] = "per_token"
    tool_call: bool = False

    @property
    def checked(self) -> bool:
        return self.resources is not None or self.guard is not None


@dataclass(frozen=True)
class MethodSpec:
    """A system call or operator method with its policy (no policy, no method)."""

    name: str
    handler: Handler
    policy: MethodPolicy
    #: which connections may call it: agents, the operator, or both
    agent: bool = False
    operator: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.policy, MethodPolicy):
            raise TypeError(f"method {self.name} has no policy: register it with a MethodPolicy "
                            "(kernel/methods.py holds the table)")
        if not (self.agent or self.operator):
            raise TypeError(f"method {self.name} is callable by nobody: set agent and/or operator")


class Pipeline:
    def __init__(
        self, events: EventSink, tool_durability: Callable[[str], Durability] | None = None,
        *, redactor: Redactor | None = None, clock: Callable[[], float] | None = None,
    ) -> None:
        self.events = events
        #: every reply and error leaves through it (the vault's secrets never do)
        self.redactor = redactor
        #: a tool's durability class by name (unknown tools count as effects)
        self.tool_durability: Callable[[str], Durability] = tool_durability or _effect
        self.stages: list[Stage] = []
        #: set with ``run`` by ``kernel/telemetry.install`` when metrics or traces are on
        self.observer: Observer | None = None
        self._methods: dict[str, MethodSpec] = {}
        #: decided calls at work: a revocation or an expiry ends those it no longer allows
        #: (``clock``: the kernel's wall clock, which token expiry is judged by)
        self.live_calls = LiveCalls(clock) if clock is not None else LiveCalls()
        self.calls = 0
        self.refusals = 0

    def add_stage(self, stage: Stage) -> None:
        self.stages.append(stage)

    def register(self, spec: MethodSpec) -> None:
        """Add a method. A method without a policy cannot be built (``MethodSpec``); a name
        registered twice is a start-up error."""
        if not isinstance(spec, MethodSpec) or not isinstance(spec.policy, MethodPolicy):
            raise TypeError(f"{spec!r} is not a MethodSpec with a MethodPolicy")
        if spec.name in self._methods:
            raise ValueError(f"method {spec.name} registered twice")
        self._methods[spec.name] = spec

    def specs(self) -> list[MethodSpec]:
        """Every registered method (the test that no method lacks a policy reads this)."""
        return [self._methods[n] for n in sorted(self._methods)]

    def methods(self, *, agent: bool) -> list[str]:
        return sorted(n for n, s in self._methods.items() if (s.agent if agent else s.operator))

    def lookup(self, caller: Caller, method: str) -> MethodSpec:
        spec = self._methods.get(method)
        if spec is None or not (spec.operator if caller.is_operator else spec.agent):
            from agentix.rpc.server import unknown_method

            raise unknown_method(method)
        return spec

    async def run(self, caller: Caller, method: str, params: dict[str, Any], *, taint: set[str] | None = None,
                  encoded: bool = False) -> Any:
        """Run one call through the stages and its handler; the reply or error is redacted.
        ``encoded``: for a caller that only writes the result to the wire, a result of
        ``SPLICE_MIN`` bytes of JSON or more as it was written when it was sized
        (``rpc.framing.Encoded``: the reply puts those bytes in, they are not written again)."""
        if self.redactor is None:
            result, raw = await self._run(caller, method, params, taint=taint)
        else:
            try:
                result, raw = await self._run(caller, method, params, taint=taint)
            except AgentixError as err:
                raise self.redactor.redact_error(err) from None
        if encoded and raw is not None and len(raw) >= SPLICE_MIN:
            return Encoded(raw, result)
        return result

    async def _run(self, caller: Caller, method: str, params: dict[str, Any], *,
                   taint: set[str] | None = None) -> tuple[Any, bytes | None]:
        spec = self.lookup(caller, method)
        call = Call(caller=caller, method=method, params=params, spec=spec, subject=caller.agent_id,
                    taint=CappedLabels(taint) if taint else CappedLabels())
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
            durable = spec.policy.durability != "no_effect"
        self.calls += 1
        if caller.read_only and spec.policy.durability == "effect":
            from agentix.core.errors import CapabilityDenied

            self.refusals += 1
            err = CapabilityDenied(
                f"{method} changes state, and this connection ({caller.label()}) is bound read-only; "
                "use a connection that is not read-only (e.g. `agentix mcp` without --read-only)",
                reason="read_only", method=method)
            await self._record_refusal(call, err, durable)
            raise err
        ran: list[Stage] = []
        if spec.policy.checked:
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
        # a face's state-changing calls are always recorded, naming it (the audit log says
        # which face of the operator did what)
        recorded = call.tool is not None or spec.policy.recorded or (
            caller.is_face and spec.policy.durability == "effect")
        try:
            # a pure check (``dry_run``) answers the decision on every method the table decides:
            # no handler runs, so nothing is delivered, spawned or called, and nothing is charged
            if call.dry_run is None and call.params.get("dry_run"):
                # no stage answered the check (a method the table does not decide): refuse
                # rather than run it for real
                raise InvalidRequest(f"{method} has no dry_run: only methods decided against "
                                     "capabilities (tool.call, tool.invoke, ipc.*, ...) answer one; "
                                     "call it without dry_run", field="dry_run")
            # a call that changes nothing outside the kernel (a read method) may record, but
            # only within its caller's quota (kernel/record_gate.py): a reader cannot grow the
            # log at will, whichever handler writes the record
            with _scope(call, durable):
                result = call.dry_run if call.dry_run is not None else await self.live_calls.run(call, spec.handler)
            if self.redactor is not None:  # what is sized is what is sent
                result = self.redactor.redact(result)
            raw = check_result_size(call.tool or method, result)
        except BaseException as exc:
            # the one place a handler's failure becomes the family: an AgentixError as it is,
            # anything else (a backend's OSError, a bug) an internal_error with the details in
            # the kernel log only. Either way the stages settle and a recorded call gets its
            # outcome record (every tool.invoked has its tool.result), then the error goes up.
            err = exc if isinstance(exc, AgentixError) else _internal(call, exc)
            for stage in reversed(ran):
                await stage.after(call, None, err)
            if recorded:
                with _scope(call, durable):
                    await self._record_outcome(call, err, durable)
            if err is exc or not isinstance(exc, Exception):
                raise  # an AgentixError, or a cancellation / exit that must keep going up
            raise err from None
        for stage in reversed(ran):
            await stage.after(call, result, None)
        if recorded:
            with _scope(call, durable):
                await self._record_outcome(call, None, durable, result)
        return result, raw

    async def _record_outcome(self, call: Call, err: AgentixError | None, durable: bool,
                              result: Any = None) -> None:
        kind = "tool.result" if call.tool is not None else call.method
        data: dict[str, Any] = {"ok": err is None}
        if call.tool is not None:
            data["tool"] = call.tool
        if err is not None:
            data.update(error=err.code, message=err.message)
        if call.caller.is_face:
            data["by"] = call.caller.label()
            target = result.get("agent_id") if isinstance(result, dict) else None
            target = target or call.params.get("agent_id")
            if isinstance(target, str) and "agent_id" not in data:
                data["agent_id"] = target
        if call.event_data:
            data.update(call.event_data)
        await self.events.record(kind, call.subject, data, tuple(sorted(call.taint)),
                                 durable=durable)

    async def _record_refusal(self, call: Call, err: AgentixError, durable: bool) -> None:
        with quiet(call.caller.label()):  # a refusal changed nothing: within the caller's quota
            await self._write_refusal(call, err, durable)

    async def _write_refusal(self, call: Call, err: AgentixError, durable: bool) -> None:
        data: dict[str, Any] = {"method": call.method, "error": err.code, "message": err.message}
        if call.caller.is_face:
            data["by"] = call.caller.label()
        if call.tool is not None:
            data["tool"] = call.tool
        data.update({k: v for k, v in err.data.items() if k not in data})
        kind = call.denial_kind or (
            "capability.denied" if err.code.startswith("capability") else "call.refused"
        )
        await self.events.record(kind, call.subject, data, tuple(sorted(call.taint)),
                                 durable=durable)


def naming_params(names: tuple[str, ...]) -> Callable[[Handler], Handler]:
    """A recorded handler whose failure's outcome record says what it was asked: the call's
    parameters among ``names`` (``params``) and the error's data (the operator's package and
    snapshot methods: which ref, tag, agent or key a refusal was about)."""

    def wrap(fn: Handler) -> Handler:
        async def run(call: Call) -> Any:
            try:
                return await fn(call)
            except AgentixError as err:
                call.event_data = {"params": {k: v for k, v in call.params.items() if k in names},
                                   **{k: v for k, v in err.data.items() if k != "error"}}
                raise
        return run
    return wrap


def _scope(call: Call, durable: bool) -> Any:
    """``quiet`` for the records of a call that changes nothing outside the kernel."""
    if call.tool is None and not durable:
        return quiet(call.caller.label())
    return contextlib.nullcontext()


def _internal(call: Call, exc: BaseException) -> AgentixError:
    """A handler's non-family exception as the family's ``internal_error`` (logged here,
    once, with its traceback; the reply and the audit record name no detail of it)."""
    from agentix.core.errors import InternalError

    what = f"tool {call.tool}" if call.tool is not None else call.method
    if not isinstance(exc, Exception):  # cancelled (the caller went away, the kernel stops)
        return InternalError(f"{what} was cancelled before it finished", cancelled=True)
    log.error("internal error in %s", what, exc_info=exc)
    return InternalError(f"internal error while running {what}; see the kernel log")


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
