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
from typing import Any, Iterable

from agentix.core.caps import Token
from agentix.core.errors import CapabilityExhausted, CapabilityRevoked

__all__ = ["TokenLedger"]


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
