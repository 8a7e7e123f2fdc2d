"""Human approval of one exact action: a state machine written as a transition table.

Rules:

- An approval request is bound to ``action_hash(agent, tool, args)``: sha256 of the canonical
  JSON of ``{"agent", "tool", "args"}`` (sorted keys, no whitespace). Executing anything whose
  hash differs — an edited argument — is refused.
- States and events (anything not in ``TRANSITIONS`` is a ``conflict``)::

      pending --grant--> granted --consume--> used
      pending --deny---> denied
      pending --expire-> expired        (no answer before the deadline: a deny)

  ``granted`` is single-use: ``consume`` moves it to ``used``, so replaying the same action
  is refused. ``denied``, ``expired`` and ``used`` are final.
- Deadlines are wall-clock timestamps (they must survive a kernel restart; the kernel
  persists ``Approval`` records with ``to_data``/``from_data``). The default timeout is 1 h.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any, Literal

import orjson

from agentix.core.errors import ApprovalDenied, InvalidRequest, StateError

__all__ = [
    "DEFAULT_TIMEOUT",
    "TRANSITIONS",
    "Approval",
    "ApprovalState",
    "action_hash",
    "apply",
    "canonical_action",
    "consume",
]

ApprovalState = Literal["pending", "granted", "denied", "expired", "used"]
Event = Literal["grant", "deny", "expire", "consume"]
DEFAULT_TIMEOUT = 3600.0

TRANSITIONS: dict[tuple[str, str], str] = {
    ("pending", "grant"): "granted",
    ("pending", "deny"): "denied",
    ("pending", "expire"): "expired",
    ("granted", "consume"): "used",
}


def canonical_action(agent: str | None, tool: str, args: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(
            {"agent": agent, "tool": tool, "args": args},
            option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
        )
    except TypeError as err:
        raise InvalidRequest(f"the action's arguments are not JSON data: {err}") from None


def action_hash(agent: str | None, tool: str, args: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_action(agent, tool, args)).hexdigest()


@dataclass(frozen=True, slots=True)
class Approval:
    id: str
    agent: str | None
    tool: str
    action_hash: str
    created_at: float
    deadline: float
    state: ApprovalState = "pending"
    reason: str | None = None
    answered_by: str | None = None

    @staticmethod
    def request(
        id: str, agent: str | None, tool: str, args: dict[str, Any], *, now: float,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Approval:
        return Approval(id, agent, tool, action_hash(agent, tool, args), now, now + timeout)

    def to_data(self) -> dict[str, Any]:
        return {
            "id": self.id, "agent": self.agent, "tool": self.tool, "action_hash": self.action_hash,
            "created_at": self.created_at, "deadline": self.deadline, "state": self.state,
            "reason": self.reason, "answered_by": self.answered_by,
        }

    @staticmethod
    def from_data(d: dict[str, Any]) -> Approval:
        return Approval(**d)


def apply(a: Approval, event: Event, *, now: float, reason: str | None = None, by: str | None = None) -> Approval:
    """The approval after ``event``. A pending approval past its deadline is expired first,
    so a late ``grant`` is a conflict on an expired request."""
    if a.state == "pending" and event != "expire" and now >= a.deadline:
        a = replace(a, state="expired", reason="no answer before the deadline")
    new = TRANSITIONS.get((a.state, event))
    if new is None:
        raise StateError(
            f"approval {a.id} is {a.state}; cannot {event} it", approval_id=a.id, state=a.state
        )
    return replace(a, state=new, reason=reason if reason is not None else a.reason, answered_by=by or a.answered_by)  # type: ignore[arg-type]


def consume(a: Approval, agent: str | None, tool: str, args: dict[str, Any], *, now: float) -> Approval:
    """Use a granted approval for exactly this action; raise ``approval_denied`` otherwise."""
    if action_hash(agent, tool, args) != a.action_hash:
        raise ApprovalDenied(
            "the approval was for a different action (an argument changed)",
            approval_id=a.id, reason="action_mismatch",
        )
    if a.state == "pending" and now >= a.deadline:
        raise ApprovalDenied("no answer before the approval deadline", approval_id=a.id, reason="timeout")
    if a.state != "granted":
        why = {"used": "already used (replay)", "denied": a.reason or "denied by the operator",
               "expired": "no answer before the approval deadline", "pending": "not answered yet"}[a.state]
        raise ApprovalDenied(f"approval {a.id}: {why}", approval_id=a.id, reason=a.state)
    return apply(a, "consume", now=now)
