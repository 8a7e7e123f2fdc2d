"""The kernel's trusted capability state, kept in the one store behind the single writer.

Rules:

- ``StoredLedger`` is the pure ``TokenLedger`` (the decision: revoked? exhausted? charge)
  plus a journal: every registration (an issued-token record: id, holder, parent, chain,
  grant strings, limits, expiry — never the token's bytes, which carry the key that appends
  blocks), every charge (the new count of each limited id of the chain) and every revocation
  (with its reason) is queued to the store's writer in the order it happened. The writer
  commits in queue order, so once a later write is durable, every earlier one is too.
- A charge is durable before the effect it pays for. Charging only marks the count dirty
  (nothing on the decision's path wakes a thread); ``DurableStateStage.before`` (the pipeline
  stage right after the capability stage) queues the dirty counts to the writer, ahead of
  the call's own records. A tool call's ``tool.invoked`` record is queued after them and
  awaited before the tool runs, so the charge is durable first; any other method whose
  policy says ``durability="effect"`` awaits the journal itself; a ``no_effect`` call does
  not wait (its charge commits with that batch). ``web_fetch`` awaits the journal again after
  each redirect hop's check (``flush``), before connecting. ``kill -9`` between the
  charge and the effect leaves a charge without an effect, never the reverse.
- At start (after recovery) ``load`` restores every revocation and count; tokens of agents
  a dead kernel left running are revoked by recovery (reason ``kernel_restart``).
- A persistent agent's spawn grants have a *lineage* (``root:<name>#<i>:<grants>``): the
  next run of the same agent — after a kernel restart, or spawned again — continues the
  last token of that lineage: its used invocations carry over, and a revocation by the
  operator carries over (revocations because the agent exited or the kernel restarted do
  not). Tokens the operator grants later with ``cap.grant`` have no lineage.
- ``DurableStateStage.after`` labels the acting context with the taint an error carries
  (``AgentixError.taint``: text from the world inside an error), as the tools label it for a
  result.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from agentix.core.audit import format_ts
from agentix.core.caps import Token
from agentix.core.errors import AgentixError, InternalError
from agentix.core.ledger import TokenLedger
from agentix.store.db import Database, Txn
from agentix.store.state import IssuedToken, RevocationStore, TokenStore

if TYPE_CHECKING:
    from agentix.core.authorize import Authorization
    from agentix.kernel.dispatch import Call
    from agentix.kernel.process import ProcessTable

__all__ = ["EXIT_REASONS", "DurableStateStage", "StoredIssuedTokens", "StoredLedger", "lineage_key"]

log = logging.getLogger(__name__)

#: revocation reasons that end one run, not the grant: a lineage does not carry them over
EXIT_REASONS = ("agent exited", "kernel_restart")


def lineage_key(name: str, index: int, grants: list[str], max_invocations: int | None) -> str:
    """The lineage of a persistent agent's ``index``-th spawn grant group."""
    return f"root:{name}#{index}:{'|'.join(grants)}|max={max_invocations}"


class StoredLedger(TokenLedger):
    """``TokenLedger`` whose every change is journalled to the store (see the module rules).

    With ``db=None`` (a kernel without a store, in tests) it is the in-memory ledger."""

    def __init__(self, db: Database | None) -> None:
        super().__init__()
        self.db = db
        self._last: concurrent.futures.Future[Any] | None = None
        self._dirty: dict[str, int] = {}  # token id -> count charged, not yet queued
        self._broken: BaseException | None = None
        self.tokens = TokenStore(db) if db is not None else None
        self.revocations = RevocationStore(db) if db is not None else None

    # ------------------------------------------------------------ the journal
    def _submit(self, op: Callable[[Txn], Any]) -> None:
        if self.db is None:
            return
        fut = self.db.submit(op)
        fut.add_done_callback(self._done)
        self._last = fut

    def _done(self, fut: concurrent.futures.Future[Any]) -> None:
        err = fut.exception()
        if err is not None:  # the store lost a charge, a revocation or a record: fail closed
            log.error("the store refused a capability-state write: %r", err)
            self._broken = err

    def pending(self) -> bool:
        """Whether counts were charged since the last ``journal`` (only limited tokens count)."""
        return bool(self._dirty)

    def journal(self) -> None:
        """Queue the counts charged since the last call to the writer (no waiting). Charges
        only mark counts dirty — no thread is woken on the decision's path; the state stage
        queues them right after the decision, ahead of the call's own records."""
        if self.db is None or not self._dirty:
            self._dirty.clear()
            return
        snap = dict(self._dirty)
        self._dirty.clear()

        def op(t: Txn) -> None:
            for tid, used in snap.items():
                TokenStore.set_used_in(t, tid, used)

        self._submit(op)

    async def flush(self) -> None:
        """Return once everything charged or journalled so far is durable; ``internal_error``
        if the store could not commit it (then the effect it pays for must not happen)."""
        self.journal()
        last = self._last
        if last is not None:
            try:
                await asyncio.wrap_future(last)
            except Exception:
                pass  # recorded by _done
            if self._last is last:
                self._last = None
        if self._broken is not None:
            raise InternalError("the store failed to record the kernel's capability state; no "
                                "call with an effect runs until the kernel is restarted",
                                reason=type(self._broken).__name__)

    # ------------------------------------------------------------ journalled changes
    def register(self, token: Token, lineage: str | None = None) -> None:
        super().register(token)
        rec = IssuedToken(token.id, token.holder, token.parent_id, tuple(token.chain),
                          tuple(token.grants.strings()), format_ts(time.time()),
                          token.max_invocations,
                          None if token.expires_at is None else float(token.expires_at), lineage)
        self._submit(lambda t: TokenStore.put_in(t, rec))

    def revoke(self, token_id: str, reason: str = "operator") -> None:
        super().revoke(token_id)
        at = format_ts(time.time())
        self._submit(lambda t: RevocationStore.revoke_in(t, token_id, at, reason))

    def revoke_holder(self, holder: str, reason: str = "agent exited") -> list[str]:
        ids = super().revoke_holder(holder)
        if ids:
            at = format_ts(time.time())

            def op(t: Txn) -> None:
                for i in ids:
                    RevocationStore.revoke_in(t, i, at, reason)

            self._submit(op)
        return ids

    def charge(self, token: Token) -> None:
        super().charge(token)
        self._journal_counts([tid for tid, _limit in token.limits])

    def commit(self, auth: Authorization) -> None:
        super().commit(auth)
        self._journal_counts([tid for tid, _n in auth.charges])

    def _journal_counts(self, ids: list[str]) -> None:
        used, dirty = self._used, self._dirty
        for tid in ids:
            if tid in used:
                dirty[tid] = used[tid]

    def seed(self, token_id: str, used: int) -> None:
        """Start ``token_id`` at ``used`` invocations (a lineage continues its count)."""
        with self._lock:
            self._used[token_id] = max(self._used.get(token_id, 0), used)
            now = self._used[token_id]
        self._submit(lambda t: TokenStore.set_used_in(t, token_id, now))

    # ------------------------------------------------------------ restart
    def load(self) -> dict[str, int]:
        """Restore revocations and counts from the store; what was restored."""
        if self.tokens is None or self.revocations is None:
            return {"revocations": 0, "invocation_counts": 0, "issued_tokens": 0}
        revoked = self.revocations.all()
        used = self.tokens.used()
        with self._lock:
            self._revoked |= revoked
            for tid, n in used.items():
                self._used[tid] = max(self._used.get(tid, 0), n)
        return {"revocations": len(revoked), "invocation_counts": len(used),
                "issued_tokens": self.tokens.count()}

    def continue_lineage(self, token: Token, lineage: str) -> str | None:
        """Carry the last token of ``lineage`` over to ``token`` (count, operator revocation);
        the previous token's id, if there was one."""
        if self.tokens is None or self.revocations is None:
            return None
        prev = self.tokens.last_of_lineage(lineage, exclude=token.id)
        if prev is None:
            return None
        used = self._used.get(prev.id, 0)
        if used and token.max_invocations is not None:
            self.seed(token.id, used)
        reason = self.revocations.reason(prev.id)
        if reason is not None and reason not in EXIT_REASONS:
            self.revoke(token.id, f"{reason} (carried over from {prev.id})")
        return prev.id


class StoredIssuedTokens:
    """``core.ledger.IssuedTokens`` over the store: which agent each token id was issued to.

    Issued in memory (the record itself is journalled by ``StoredLedger.register``, in the
    same writer queue); a lookup that misses memory reads the store, so the answer is the
    same after a restart."""

    def __init__(self, db: Database | None) -> None:
        from agentix.core.ledger import MemoryIssuedTokens

        self._mem = MemoryIssuedTokens()
        self._store = TokenStore(db) if db is not None else None

    def issue(self, token: Token) -> None:
        known = self.holder_of(token.id)
        if known is not None and known != token.holder:
            raise ValueError(f"token {token.id} was already issued to {known}")
        self._mem.issue(token)

    def holder_of(self, token_id: str) -> str | None:
        got = self._mem.holder_of(token_id)
        if got is not None or self._store is None:
            return got
        try:
            return self._store.get(token_id).holder
        except AgentixError:
            return None

    def ids_of(self, holder: str) -> list[str]:
        ids = self._mem.ids_of(holder)
        if self._store is not None:
            ids += [t.id for t in self._store.for_holder(holder) if t.id not in ids]
        return ids


class DurableStateStage:
    """Pipeline stage: charges durable before the handler; error taint onto the context."""

    def __init__(self, table: ProcessTable, ledger: StoredLedger) -> None:
        self.table = table
        self.ledger = ledger

    async def before(self, call: Call) -> None:
        limited = self.ledger.pending()  # this decision charged a token with max_invocations
        self.ledger.journal()  # queued ahead of anything this call writes next
        if limited:
            # a count against a limit is trusted state: durable before the handler runs, even
            # for a no_effect call, so no kill -9 ever gives back an invocation (docs/audit.md)
            await self.ledger.flush()
            return
        if call.tool is not None:
            # an effect tool's tool.invoked intent record comes next and is awaited: the charge
            # (queued ahead of it) is durable first; a no_effect tool's record is posted, and
            # its charge rides the next group commit like a no_effect method's (docs/audit.md)
            return
        if call.spec is None or call.spec.policy.durability == "effect":
            await self.ledger.flush()  # a no_effect call's charge rides the next commit

    async def after(self, call: Call, result: Any, error: BaseException | None) -> None:
        labels = getattr(error, "taint", ()) if error is not None else ()
        if not labels:
            return
        call.taint |= set(labels)
        if call.subject is None:
            return
        try:
            rec = self.table.get(call.subject)
        except AgentixError:
            return
        rec.taint |= set(labels)
