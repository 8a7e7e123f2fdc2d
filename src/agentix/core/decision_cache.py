"""A memo of ``core.authorize`` for repeat requests whose answer cannot have changed.

An agent repeats itself: the same tool over the same resources with the same tokens, many
times a second. ``DecisionCache.authorize`` returns the earlier ``Authorization`` for such a
call, and runs the decision (``core.authorize.authorize``) for every other one. Its rule is
that the answer is always exactly what ``authorize`` would say now — a property test holds
the two to agreement over any interleaving of calls, grants, attenuations, revocations,
clock steps and invocation limits (tests/caps/test_decision_cache.py).

What the decision reads, and why a remembered answer stays right:

- the tokens (immutable, signed) and the request: part of the key (token ids, every field of
  the request except ``tool_calls_left``);
- revocation: ``LedgerView.revocation_epoch`` — the number of revoked ids, which only ever
  grows (revocation is final) — is stored with the answer; any revocation since misses;
- expiry: the answer is used only while ``made_at <= now < valid_until``, where
  ``valid_until`` is the first expiry in the future of any token in the list (an expired
  token cannot come back to life while the clock does not step back, and a clock that
  steps back misses);
- invocation counts: an answer is kept only when no token in the list has a limit (then the
  decision never reads a count and charges nothing);
- holder and issue: an answer is kept only when every token names the holder and was issued
  to it (the issued-token record only ever grows and never changes an issued id's holder);
- ``max_tool_calls``: checked on every call, hit or miss, exactly as ``authorize`` does first;
- a refusal is never kept (it is decided again, and its error is the decision's own);
- a continuation (``prior``, a redirect hop) is never kept.

The memo is bounded (``size`` answers; full, it starts again empty). Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, Sequence

from agentix.core.authorize import AuthRequest, Authorization, IssuedView, LedgerView, authorize
from agentix.core.caps import Token
from agentix.core.errors import BudgetExceeded

__all__ = ["DecisionCache", "EpochLedgerView"]

DEFAULT_SIZE = 4096


class EpochLedgerView(LedgerView, Protocol):
    """A ledger that can say whether its revocations changed (``TokenLedger`` implements it)."""

    def revocation_epoch(self) -> int: ...


class _Kept:
    __slots__ = ("auth", "epoch", "made_at", "valid_until")

    def __init__(self, auth: Authorization, epoch: int, made_at: float, valid_until: float) -> None:
        self.auth, self.epoch, self.made_at, self.valid_until = auth, epoch, made_at, valid_until


class DecisionCache:
    """``authorize`` with a memo of its successful, count-free answers (see the module rules)."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self.size = size
        self._kept: dict[tuple[Any, ...], _Kept] = {}
        self.hits = 0
        self.misses = 0

    def authorize(self, tokens: Sequence[Token], request: AuthRequest, *, ledger: EpochLedgerView,
                  issued: IssuedView, now: float, prior: Authorization | None = None) -> Authorization:
        """The same answer as ``core.authorize.authorize(tokens, request, ...)``."""
        if prior is not None:
            return authorize(tokens, request, ledger=ledger, issued=issued, now=now, prior=prior)
        if (request.counts_tool_call and request.tool_calls_left is not None
                and request.tool_calls_left <= 0):
            raise BudgetExceeded("would exceed max_tool_calls: no tool calls left in this agent's budget",
                                 limit="max_tool_calls", stop=False)
        key = (request.holder, tuple([t.id for t in tokens]), request.resources, request.partial,
               request.charge, request.denied_prefixes, request.counts_tool_call)
        kept = self._kept.get(key)
        epoch = ledger.revocation_epoch()
        if kept is not None and kept.epoch == epoch and kept.made_at <= now < kept.valid_until:
            self.hits += 1
            return kept.auth
        self.misses += 1
        auth = authorize(tokens, request, ledger=ledger, issued=issued, now=now)
        until = _valid_until(tokens, request.holder, issued, now)
        if until is not None:
            if len(self._kept) >= self.size:
                self._kept.clear()
            self._kept[key] = _Kept(auth, epoch, now, until)
        elif kept is not None:
            del self._kept[key]
        return auth

    def clear(self) -> None:
        """Forget every answer (the next decisions are made afresh)."""
        self._kept.clear()

    def statistics(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "kept": len(self._kept)}


def _valid_until(tokens: Sequence[Token], holder: str, issued: IssuedView, now: float) -> float | None:
    """Until when an answer over ``tokens`` may be kept; None: it may not (a count is read, or
    a token's holder or issue could make it differ)."""
    until = math.inf
    for t in tokens:
        if t.limits or t.holder != holder or issued.holder_of(t.id) != holder:
            return None
        exp = t.expires_at
        if exp is not None and now < exp < until:  # (a dead token's too: shorter, never wrong)
            until = exp
    return until
