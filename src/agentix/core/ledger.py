"""Revocations and invocation counts: the kernel's live capability state.

Rules:

- ``charge(token)`` is one atomic step: if any id in the token's chain is revoked it raises
  ``capability_revoked``; if any block of the chain that has a ``max_invocations`` has used
  them all it raises ``capability_exhausted``; otherwise it adds one use to *every* limited
  block of the chain (a derived token spends its ancestors' invocations too, so a delegated
  child never gets a fresh count). Nothing is charged on refusal.
- Charge before executing: a call that then fails has still used its invocation. A pure
  check (``check``) charges nothing.
- ``revoke(id)`` is final: once it returns, every later ``charge`` of that token or of any
  token derived from it is refused. Revoked ids are never forgotten.

The class is pure; the kernel holds one in memory and persists ``snapshot()`` (restore with
``TokenLedger.restore``). Atomicity against threads needs a lock: pass ``lock=threading.Lock()``
when more than one thread may call it (a single asyncio loop needs none, as nothing here awaits).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Iterable, Protocol

from agentix.core.caps import Token

if TYPE_CHECKING:
    from agentix.core.authorize import Authorization
from agentix.core.errors import CapabilityExhausted, CapabilityRevoked

__all__ = ["IssuedTokens", "MemoryIssuedTokens", "TokenLedger"]


class TokenLedger:
    def __init__(self, lock: AbstractContextManager[Any] | None = None) -> None:
        self._lock: AbstractContextManager[Any] = lock if lock is not None else nullcontext()
        self._revoked: set[str] = set()
        self._used: dict[str, int] = {}
        self._by_holder: dict[str, set[str]] = {}

    # ---------------------------------------------------------------- revocation
    def register(self, token: Token) -> None:
        """Remember that ``token.holder`` holds ``token`` (so ``revoke_holder`` finds it)."""
        with self._lock:
            self._by_holder.setdefault(token.holder, set()).add(token.id)

    def revoke(self, token_id: str) -> None:
        with self._lock:
            self._revoked.add(token_id)

    def revoke_holder(self, holder: str) -> list[str]:
        """Revoke every token registered to ``holder`` (an exiting agent); returns their ids."""
        with self._lock:
            ids = sorted(self._by_holder.pop(holder, set()))
            self._revoked.update(ids)
            return ids

    def is_revoked_id(self, token_id: str) -> bool:
        return token_id in self._revoked

    def revocation_epoch(self) -> int:
        """Changes whenever the revocation state does: the number of revoked ids (an id is
        never un-revoked, so the count only grows). ``core.decision_cache`` keys on it."""
        return len(self._revoked)

    def is_revoked(self, token: Token) -> bool:
        revoked = self._revoked
        return any(i in revoked for i in token.chain)

    def check(self, token: Token) -> None:
        """Raise if ``token`` is revoked or exhausted; charges nothing."""
        with self._lock:
            self._check_locked(token)

    # ---------------------------------------------------------------- invocations
    def charge(self, token: Token) -> None:
        """Atomically check and spend one invocation of ``token`` and of each limited ancestor."""
        with self._lock:
            self._check_locked(token)
            used = self._used
            for tid, _limit in token.limits:
                used[tid] = used.get(tid, 0) + 1

    def commit(self, auth: Authorization) -> None:
        """Apply one decision's charges (``core.authorize``) atomically: re-check that no token
        it used has been revoked and that no limit would be passed, then add the uses. Raises
        (charging nothing) if the world moved since the decision."""
        with self._lock:
            revoked = self._revoked
            for t in auth.tokens:
                for tid in t.chain:
                    if tid in revoked:
                        raise CapabilityRevoked("the capability was revoked", token_id=t.id, revoked_id=tid)
            limits = {tid: lim for t in auth.tokens for tid, lim in t.limits}
            used = self._used
            for tid, n in auth.charges:
                lim = limits.get(tid)
                if lim is not None and used.get(tid, 0) + n > lim:
                    raise CapabilityExhausted(
                        f"the capability has used all {lim} of its invocations",
                        exhausted_id=tid, max_invocations=lim)
            for tid, n in auth.charges:
                used[tid] = used.get(tid, 0) + n

    def used(self, token_id: str) -> int:
        return self._used.get(token_id, 0)

    def remaining(self, token: Token) -> int | None:
        """Invocations ``token`` may still make (the tightest over its chain); None = unlimited."""
        with self._lock:
            lefts = [limit - self._used.get(tid, 0) for tid, limit in token.limits]
        return max(0, min(lefts)) if lefts else None

    def _check_locked(self, token: Token) -> None:
        revoked = self._revoked
        for tid in token.chain:
            if tid in revoked:
                raise CapabilityRevoked(
                    "the capability was revoked", token_id=token.id, revoked_id=tid
                )
        for tid, limit in token.limits:
            if self._used.get(tid, 0) >= limit:
                raise CapabilityExhausted(
                    f"the capability has used all {limit} of its invocations",
                    token_id=token.id, exhausted_id=tid, max_invocations=limit,
                )

    # ---------------------------------------------------------------- persistence
    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "revoked": sorted(self._revoked),
                "used": dict(sorted(self._used.items())),
                "holders": {h: sorted(ids) for h, ids in sorted(self._by_holder.items())},
            }

    @classmethod
    def restore(cls, data: dict[str, Any], lock: AbstractContextManager[Any] | None = None) -> TokenLedger:
        led = cls(lock)
        led._revoked = set(data.get("revoked", ()))
        led._used = {str(k): int(v) for k, v in data.get("used", {}).items()}
        led._by_holder = {str(h): set(ids) for h, ids in data.get("holders", {}).items()}
        return led

    def revoked_ids(self) -> Iterable[str]:
        return frozenset(self._revoked)


class IssuedTokens(Protocol):
    """The kernel's record of which agent each token id was issued to (holder binding).

    A token presented by an agent counts only if its id was issued to that agent: bytes copied
    from another agent, or with blocks appended by anyone, name an id the kernel never issued
    to the presenter. ``MemoryIssuedTokens`` keeps it in memory; a store-backed implementation
    (the auth-state work) keeps it across restarts.
    """

    def issue(self, token: Token) -> None: ...

    def holder_of(self, token_id: str) -> str | None: ...

    def ids_of(self, holder: str) -> list[str]: ...


class MemoryIssuedTokens:
    def __init__(self) -> None:
        self._holder: dict[str, str] = {}
        self._by_holder: dict[str, list[str]] = {}

    def issue(self, token: Token) -> None:
        prev = self._holder.get(token.id)
        if prev is not None and prev != token.holder:
            raise ValueError(f"token {token.id} was already issued to {prev}")
        if prev is None:
            self._holder[token.id] = token.holder
            self._by_holder.setdefault(token.holder, []).append(token.id)

    def holder_of(self, token_id: str) -> str | None:
        return self._holder.get(token_id)

    def ids_of(self, holder: str) -> list[str]:
        return list(self._by_holder.get(holder, ()))

    def snapshot(self) -> dict[str, str]:
        return dict(sorted(self._holder.items()))

    @classmethod
    def restore(cls, data: dict[str, str]) -> MemoryIssuedTokens:
        out = cls()
        for tid, holder in data.items():
            out._holder[str(tid)] = str(holder)
            out._by_holder.setdefault(str(holder), []).append(str(tid))
        return out
