"""ApprovalBook restores what a kernel needs at start, not the whole table: every approval
that can still be answered or used (pending, granted) and the ``MAX_ANSWERED`` newest final
ones. A store of many answered approvals is not read row by row at every start."""

from __future__ import annotations

import orjson

from agentix.core.approval import Approval
from agentix.core.audit import format_ts
from agentix.kernel.approval_book import MAX_ANSWERED, ApprovalBook
from agentix.kernel.clock import VirtualClock
from agentix.store.db import Database
from agentix.store.state import ApprovalRecord, ApprovalStore

OLD_FINAL = 3000  # answered long ago: stored, never read again


def _row(i: int, state: str) -> ApprovalRecord:
    a = Approval(f"ap-{i:06d}", "ag-1", "echo", "h" * 64, 1000.0 + i, 2000.0 + i, state)  # type: ignore[arg-type]
    return ApprovalRecord(a.id, a.agent, {**a.to_data(), "args": {"i": i}}, a.state,
                          format_ts(a.created_at), format_ts(a.deadline))


def test_a_start_reads_the_live_approvals_and_the_newest_answered_ones_only(tmp_path):
    db = Database(tmp_path / "agentix.db")
    try:
        def fill(t):
            for i in range(OLD_FINAL):
                ApprovalStore.put_in(t, _row(i, ("denied", "expired", "used")[i % 3]))
            # the old rows are damaged: a start that reads them fails (that is how the test sees
            # they are not read); a kernel never writes such rows
            t.conn.execute("UPDATE approvals SET request='{not json' WHERE id < ?", (f"ap-{OLD_FINAL:06d}",))
            for i in range(OLD_FINAL, OLD_FINAL + MAX_ANSWERED + 10):
                ApprovalStore.put_in(t, _row(i, "denied"))
            ApprovalStore.put_in(t, _row(OLD_FINAL + MAX_ANSWERED + 10, "granted"))
            # an old pending and an old granted one: still live, so restored however old
            t.conn.execute("INSERT INTO approvals (id, agent_id, request, state, created_at) VALUES "
                           "(?,?,?,?,?)", ("ap-000000x", "ag-1", orjson.dumps(
                               {**Approval("ap-000000x", "ag-1", "echo", "h" * 64, 1.0, 9e9).to_data(),
                                "args": {}}).decode(), "pending", format_ts(1.0)))

        db.submit(fill).result()
        book = ApprovalBook(db, clock=VirtualClock())
        ids = {a.id for a in book.all()}
        newest = {f"ap-{i:06d}" for i in range(OLD_FINAL + 10, OLD_FINAL + MAX_ANSWERED + 10)}
        assert newest <= ids                                       # the MAX_ANSWERED newest final
        assert f"ap-{OLD_FINAL + 9:06d}" not in ids                 # older final: store only
        assert {"ap-000000x", f"ap-{OLD_FINAL + MAX_ANSWERED + 10:06d}"} <= ids  # live, however old
        assert len(ids) == MAX_ANSWERED + 2
        assert book.get("ap-000000x").state == "pending"
        stored = db.submit(lambda t: t.conn.execute("SELECT COUNT(*) FROM approvals").fetchone()[0]).result()
        assert stored == OLD_FINAL + MAX_ANSWERED + 10 + 2  # nothing is deleted from the store
    finally:
        db.close()
