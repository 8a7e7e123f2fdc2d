"""What the kernel finds at start-up, made consistent in one atomic write.

``await recover(db, audit, now)``:

1. checks the audit chain's tail (the last ``tail_check`` entries link by hash, the stored
   Merkle nodes reproduce the latest signed head's root, no seq is missing at the end);
   the full check is ``AuditLog.verify`` (``agentix audit verify``);
2. in ONE transaction: marks every agent left ``starting``/``running``/``paused`` as exited
   with reason ``kernel_restart`` and appends an ``agent.exited`` entry for each, records
   ``kernel.recovered`` with what was found (if the last stop was unclean, agents were
   left or approvals are pending), and marks the kernel as running (``kv
   kernel/clean_shutdown = false``); the tokens issued to the agents left running are revoked
   in the same transaction (reason ``kernel_restart``);
3. returns a ``RecoveryReport``: the pids/pgids of those agents (the kernel must make sure
   none is still running — kill the process groups), the persistent agents to start again,
   the pending approvals, the revocations in force, the invocation counts and the
   issued-token records kept (the kernel restores its ledger from them).

``await mark_clean_shutdown(db, audit)`` records ``kernel.stopped`` and the clean flag.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from agentix.core import events as ev
from agentix.core.audit import GENESIS_HASH, entry_hash, format_ts
from agentix.core.merkle import tree_root
from agentix.store.audit_store import AuditLog
from agentix.store.db import Database, Txn
from agentix.store.state import (
    AgentStore,
    ApprovalRecord,
    ApprovalStore,
    KVStore,
    RevocationStore,
    StoredAgent,
    TokenStore,
)

__all__ = ["LeftAgent", "RecoveryReport", "mark_clean_shutdown", "recover"]


@dataclass(frozen=True)
class LeftAgent:
    id: str
    pid: int | None
    pgid: int | None
    persistent: bool
    start_time: int | None = None  # of pid (/proc/<pid>/stat field 22); None: not recorded


@dataclass(frozen=True)
class RecoveryReport:
    clean_shutdown: bool
    chain_ok: bool
    chain_detail: str
    audit_size: int
    exited: list[LeftAgent]  # were live; now recorded exited (reason kernel_restart)
    restart: list[StoredAgent]  # persistent agents to start again
    pending_approvals: list[ApprovalRecord]
    revocations: int
    duration_s: float
    invocation_counts: int = 0  # tokens with a stored count of used invocations
    issued_tokens: int = 0


    def to_data(self) -> dict[str, Any]:
        return {
            "clean_shutdown": self.clean_shutdown,
            "chain_ok": self.chain_ok,
            "chain_detail": self.chain_detail,
            "audit_size": self.audit_size,
            "exited": [a.id for a in self.exited],
            "restart": [a.id for a in self.restart],
            "pending_approvals": [a.id for a in self.pending_approvals],
            "revocations": self.revocations,
            "invocation_counts": self.invocation_counts,
            "issued_tokens": self.issued_tokens,
        }


def _check_tail(audit: AuditLog, tail_check: int) -> tuple[bool, str, int]:
    conn = audit.db.reader()
    conn.execute("BEGIN")
    try:
        n = audit.size()
        count = conn.execute("SELECT count(*) FROM audit_entries").fetchone()[0]
        if count != n:
            return False, f"{n - count} entries missing up to seq {n}", n
        rows = conn.execute(
            "SELECT seq, body, prev_hash, hash FROM audit_entries WHERE seq > ? ORDER BY seq",
            (max(0, n - tail_check),)).fetchall()
        prev = None if rows and rows[0][0] > 1 else GENESIS_HASH
        for seq, body, ph, h in rows:
            if prev is not None and ph != prev:
                return False, f"chain broken at seq {seq}", n
            if entry_hash(ph, body) != h:
                return False, f"entry {seq} does not match its hash", n
            prev = h
        heads = audit.heads()
        if heads:
            last = heads[-1]
            if last.size > n:
                return False, f"log truncated: {n} entries, a signed head covers {last.size}", n
            if tree_root(audit._getter(conn), last.size) != last.root:  # noqa: SLF001
                return False, f"Merkle root differs from the signed head of size {last.size}", n
        return True, f"tail of {len(rows)} entries verified", n
    finally:
        conn.execute("COMMIT")


async def recover(
    db: Database, audit: AuditLog, now: float | None = None, *, tail_check: int = 1000
) -> RecoveryReport:
    t0 = time.perf_counter()
    at = format_ts(time.time() if now is None else now)
    kv = KVStore(db)
    clean = bool(kv.get("clean_shutdown", True))
    chain_ok, chain_detail, size = _check_tail(audit, tail_check)
    agents = AgentStore(db)
    live = agents.list_live()
    approvals = ApprovalStore(db).pending()
    revoked_before = RevocationStore(db).all()
    tokens = TokenStore(db)
    counts = len(tokens.used())
    issued = tokens.count()
    left = [LeftAgent(a.id, a.pid, a.pgid, a.persistent, a.start_time) for a in live]
    restart_ids = {a.id for a in live if a.persistent}

    def op(txn: Txn) -> int:
        for a in live:
            record = {"reason": "kernel_restart", "pid": a.pid, "pgid": a.pgid,
                      "state_before": a.state}
            AgentStore.mark_exited_in(txn, a.id, "kernel_restart", record, at)
            audit.append_in(txn, ev.AGENT_EXITED, a.id, record)
        revoked_now = RevocationStore.revoke_holders_in(txn, [a.id for a in live], at,
                                                        "kernel_restart")
        if not clean or live or approvals:
            audit.append_in(txn, ev.KERNEL_RECOVERED, None, {
                "clean_shutdown": clean, "chain_ok": chain_ok, "chain_detail": chain_detail,
                "audit_size": size, "exited": [a.id for a in live],
                "restart": sorted(restart_ids),
                "pending_approvals": [a.id for a in approvals],
                "revocations": len(revoked_before) + revoked_now,
                "revoked_now": revoked_now, "invocation_counts": counts,
                "issued_tokens": issued,
            })
        kv.set_in(txn, "clean_shutdown", False)
        return revoked_now

    revoked_now = await db.write(op)
    restart = [agents.get(i) for i in sorted(restart_ids)]
    return RecoveryReport(clean, chain_ok, chain_detail, size, left, restart, approvals,
                          len(revoked_before) + revoked_now, time.perf_counter() - t0,
                          counts, issued)


async def mark_clean_shutdown(db: Database, audit: AuditLog, data: dict[str, Any] | None = None
                              ) -> None:
    kv = KVStore(db)

    def op(txn: Txn) -> None:
        audit.append_in(txn, ev.KERNEL_STOPPED, None, data or {})
        kv.set_in(txn, "clean_shutdown", True)

    await db.write(op)
