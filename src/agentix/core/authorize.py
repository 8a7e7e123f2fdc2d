"""The one authorization decision of a system call: tokens + ledger + clock + request → value.

Every system call that touches a resource (a path, a host, a secret, a program, a recipient, a
child's name, a model, a delegated grant, a plain tool) asks ``authorize`` once, with a request
naming *every* resource it will touch. The answer is an immutable ``Authorization`` naming, for
each resource, the one token that covers it; handlers and tools receive only that value, never
the caller's token list, and a resource discovered late (a redirect hop) asks for a new one.

Rules, in the order they are applied:

1. A presented token is *live* for ``holder`` only if all of these hold (else the reason is
   kept for the error): the last block names ``holder`` (``wrong_holder``); the kernel issued
   this token id to ``holder`` (``IssuedView.holder_of``; appended blocks make a new id the
   kernel never issued: ``not_issued``); not past its expiry at ``now`` (``capability_expired``);
   no id in its chain revoked (``capability_revoked``); no limited block of its chain has used
   all its invocations (``capability_exhausted``). Signature checking happens before (the
   caller passes parsed tokens; ``Authority.parse`` caches *only* that, keyed by the bytes), so
   revocation, expiry and holder take effect at the very next decision.
2. A file resource under one of ``request.denied_prefixes`` (the kernel's own state,
   ``$AGENTIX_HOME``) is refused whatever the grants say (reason ``kernel_state``).
3. Each resource goes to the first live token that permits it and can still pay for it. None:
   if a presented but dead token would have permitted it, that token's error (revoked, expired,
   exhausted, wrong holder, not issued) — so the caller learns what to fix; otherwise
   ``capability_denied`` reason ``not_granted`` naming the resource (for a delegated grant,
   ``handoff_escalation_denied`` "parent lacks …").
4. Charges: ``per_token`` (the default) spends one invocation of each distinct token used
   (and of every limited ancestor block: counts are shared down a delegation chain);
   ``per_resource`` spends one per resource (``ipc.broadcast``: a broadcast to N agents costs
   what N ``ipc.send`` cost). A token that cannot pay for another resource is not chosen for it.
5. ``max_tool_calls``: when ``request.tool_calls_left`` is 0 the call is refused
   (``budget_exceeded``) before anything else is charged.
6. Without ``partial`` any refused resource refuses the whole call. With ``partial``
   (``file_read_many``, ``ipc.broadcast``) each resource stands alone: refused ones are listed
   in ``Authorization.refused`` and the call proceeds with the others — unless none is covered.

The function is pure: it reads ``LedgerView`` and ``IssuedView`` and returns the charges to
apply (``Authorization.charges``); the kernel commits them with ``TokenLedger.commit`` in the
same synchronous step (which re-checks them under its lock). Nothing is charged on refusal, and
a ``dry_run`` simply never commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Literal, NamedTuple, Protocol, Sequence

from agentix.core.caps import Token
from agentix.core.errors import (
    AgentixError,
    BudgetExceeded,
    CapabilityDenied,
    CapabilityExhausted,
    CapabilityExpired,
    CapabilityRevoked,
    HandoffEscalationDenied,
)
from agentix.core.grants import Grant, Request

__all__ = [
    "AuthRequest",
    "Authorization",
    "Covered",
    "IssuedView",
    "LedgerView",
    "Refused",
    "authorize",
    "under_prefix",
]

_FILE_KINDS = ("file_read", "file_write")
_new_tuple = tuple.__new__


class LedgerView(Protocol):
    """What the decision reads of the kernel's ledger (``TokenLedger`` implements it)."""

    def is_revoked_id(self, token_id: str) -> bool: ...

    def used(self, token_id: str) -> int: ...


class IssuedView(Protocol):
    """Which agent the kernel issued a token id to (``IssuedTokens`` implements it)."""

    def holder_of(self, token_id: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """Everything a call will touch, for ``holder``."""

    holder: str
    #: a ``Request`` must be permitted; a ``Grant`` (``cap.delegate``) must be covered
    resources: tuple[Request | Grant, ...]
    partial: bool = False
    charge: Literal["per_token", "per_resource"] = "per_token"
    #: normalised directories no file resource may be under (the kernel's own state)
    denied_prefixes: tuple[str, ...] = ()
    #: tool calls left under ``budget.max_tool_calls`` (None: unlimited or not a tool call)
    tool_calls_left: int | None = None
    counts_tool_call: bool = False


class Covered(NamedTuple):
    """One resource and the one token that covers it."""

    resource: Request | Grant
    token: Token


class Refused(NamedTuple):
    """One resource refused (``partial`` decisions only) and why."""

    resource: Request | Grant
    error: AgentixError


@dataclass(frozen=True)
class Authorization:
    """What one decision allowed: each covered resource with its token, and the charges."""

    holder: str
    covered: tuple[Covered, ...]
    refused: tuple[Refused, ...] = ()
    #: (limited block id, uses) to add to the ledger when the call is committed
    charges: tuple[tuple[str, int], ...] = ()
    #: distinct tokens used (the ledger re-checks their chains when committing)
    tokens: tuple[Token, ...] = ()
    counts_tool_call: bool = False

    def token_for(self, resource: Request | Grant) -> Token:
        """The token that covers ``resource``; ``capability_denied`` if it was not authorised
        (a tool asking about a resource that was not in the request is a refusal, not a bug
        to paper over)."""
        tok = self._covering.get(resource)
        if tok is not None:
            return tok
        err = self._refusals.get(resource)
        if err is not None:
            raise err
        raise CapabilityDenied(f"{resource} was not part of this call's authorization",
                               reason="not_authorized", request=str(resource))

    def allows(self, resource: Request | Grant) -> bool:
        return resource in self._covering

    @cached_property
    def _covering(self) -> dict[Request | Grant, Token]:
        """Each covered resource's (first) token: a lookup per resource stays O(1), so a call
        over many resources (a delegation of 256 grants) is linear, not quadratic."""
        out: dict[Request | Grant, Token] = {}
        for c in self.covered:
            out.setdefault(c.resource, c.token)
        return out

    @cached_property
    def _refusals(self) -> dict[Request | Grant, AgentixError]:
        out: dict[Request | Grant, AgentixError] = {}
        for r in self.refused:
            out.setdefault(r.resource, r.error)
        return out

    @property
    def token(self) -> Token | None:
        """The first covering token (what ``cap.check`` and the audit name)."""
        return self.covered[0].token if self.covered else None

    def resources(self) -> list[str]:
        return [str(c.resource) for c in self.covered]


def under_prefix(path: str, prefixes: Iterable[str]) -> str | None:
    """The first of ``prefixes`` that ``path`` (normalised, absolute) equals or lies below."""
    for p in prefixes:
        base = p.rstrip("/") or "/"
        if base == "/" or path == base or path.startswith(base + "/"):
            return p
    return None


def _liveness(t: Token, holder: str, ledger: LedgerView, issued: IssuedView, now: float,
              prepaid: bool = False) -> AgentixError | None:
    if t.holder != holder:
        return CapabilityDenied("this capability belongs to another agent", reason="wrong_holder",
                                token_id=t.id)
    if issued.holder_of(t.id) != holder:
        return CapabilityDenied("this capability was not issued to this agent by the kernel",
                                reason="not_issued", token_id=t.id)
    exp = t.expires_at
    if exp is not None and not now < exp:
        return CapabilityExpired(f"the capability expired at {exp}", token_id=t.id, expires_at=exp)
    for tid in t.chain:
        if ledger.is_revoked_id(tid):
            return CapabilityRevoked("the capability was revoked", token_id=t.id, revoked_id=tid)
    if not prepaid:
        for tid, limit in t.limits:
            if ledger.used(tid) >= limit:
                return _exhausted(t, tid, limit)
    return None


def _allows(t: Token, r: Request | Grant) -> bool:
    """A request must be permitted; a grant being delegated must be covered."""
    return t.covers(r) if isinstance(r, Grant) else t.permits(r)


def _exhausted(t: Token, tid: str, limit: int) -> CapabilityExhausted:
    return CapabilityExhausted(f"the capability has used all {limit} of its invocations",
                               token_id=t.id, exhausted_id=tid, max_invocations=limit)


def authorize(
    tokens: Sequence[Token],
    request: AuthRequest,
    *,
    ledger: LedgerView,
    issued: IssuedView,
    now: float,
    prior: Authorization | None = None,
) -> Authorization:
    """Decide ``request`` against ``tokens`` (see the module rules). Raises the refusal.

    ``prior`` is the decision of the call this one continues (a redirect hop of the same
    ``web_fetch``): the tokens it already charged are still checked for holder, issue, expiry
    and revocation, but not charged again (nor refused for the invocation this call used)."""
    holder = request.holder
    if request.counts_tool_call and request.tool_calls_left is not None and request.tool_calls_left <= 0:
        raise BudgetExceeded("would exceed max_tool_calls: no tool calls left in this agent's budget",
                             limit="max_tool_calls", stop=False)
    live: list[Token] = []
    dead: list[tuple[Token, AgentixError]] = []
    prepaid = {t.id for t in prior.tokens} if prior is not None else set()
    for t in tokens:
        err = _liveness(t, holder, ledger, issued, now, prepaid=t.id in prepaid)
        if err is None:
            live.append(t)
        else:
            dead.append((t, err))
    pending: dict[str, int] = {}     # block id -> uses added by this decision
    paid: set[str] = set(prepaid)    # token ids already charged (per_token)
    per_resource = request.charge == "per_resource"
    covered: list[Covered] = []
    refused: list[Refused] = []
    used_tokens: dict[str, Token] = {}
    used_get = ledger.used
    fenced = bool(request.denied_prefixes) and any(
        type(r) is Request and r.kind in _FILE_KINDS for r in request.resources)
    if fenced:  # a path equal to a denied base, or below one ("/" denies every path)
        bases = frozenset(p.rstrip("/") or "/" for p in request.denied_prefixes)
        below = tuple(b + "/" for b in bases if b != "/")
        everything = "/" in bases
    live_ids = [(t, t.id, t.limits) for t in live]

    for r in request.resources:
        is_req = type(r) is Request
        if fenced and is_req and r.kind in _FILE_KINDS:
            v = r.value
            if everything or v in bases or v.startswith(below):
                refused.append(Refused(r, CapabilityDenied(
                    f"{r.value} is the kernel's own state; no grant reaches it", reason="kernel_state",
                    request=str(r))))
                continue
        chosen: Token | None = None
        short: Token | None = None
        for t, tid_, limits in live_ids:
            if not (t.permits(r) if is_req else t.covers(r)):  # type: ignore[arg-type]
                continue
            if (not per_resource and tid_ in paid) or not limits or all(
                    used_get(bid) + pending.get(bid, 0) < lim for bid, lim in limits):
                chosen = t
                if per_resource or tid_ not in paid:
                    paid.add(tid_)
                    for bid, _lim in limits:
                        pending[bid] = pending.get(bid, 0) + 1
                    used_tokens.setdefault(tid_, t)
                break
            if short is None:
                short = t
        if chosen is not None:
            covered.append(_new_tuple(Covered, (r, chosen)))  # Covered(r, chosen), without its __new__
            continue
        if short is not None:
            bid, limit = next((bid, lim) for bid, lim in short.limits
                              if used_get(bid) + pending.get(bid, 0) >= lim)
            refused.append(Refused(r, _exhausted(short, bid, limit)))
            continue
        err = next((e for t, e in dead if _allows(t, r)), None)
        if err is None and isinstance(r, Grant):
            err = HandoffEscalationDenied(f"parent lacks {r}", reason="parent_lacks_grant",
                                          missing=[str(r)])
        elif err is None:
            err = CapabilityDenied(f"no capability allows {r}", reason="not_granted", request=str(r))
        else:
            err = err.with_default(request=str(r))
        refused.append(Refused(r, err))

    if refused and (not request.partial or not covered):
        raise refused[0].error
    return Authorization(
        holder=holder, covered=tuple(covered), refused=tuple(refused),
        charges=tuple(sorted(pending.items())), tokens=tuple(used_tokens.values()),
        counts_tool_call=request.counts_tool_call,
    )
