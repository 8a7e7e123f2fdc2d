"""A store writer to be killed: appends under concurrent load and reports acknowledgements.

``python -m agentix.store._crashchild DB WORKERS`` opens the store, prints ``ready``, then
runs WORKERS concurrent tasks that append audit entries (every tenth one atomically with an
agent record in state ``running``) and, for each append that was acknowledged, writes
``<seq> <hash hex>`` on stdout with one unbuffered ``write``. Used by the crash tests and
``bench/crash.py``: whatever was printed must survive ``kill -9``.
"""

from __future__ import annotations

import asyncio
import os
import sys

from agentix.core import events as ev
from agentix.store.audit import AuditLog
from agentix.store.db import Database, Txn
from agentix.store.state import AgentRecord, AgentStore


async def main(path: str, workers: int) -> None:
    db = Database(path)
    log = AuditLog(db)
    pid = os.getpid()
    os.write(1, b"ready\n")

    async def worker(w: int) -> None:
        i = 0
        while True:
            i += 1
            if i % 10 == 0:
                aid = f"agent-{pid}-{w}-{i}"
                rec = AgentRecord(aid, f"w{w}", None, {"name": f"w{w}"}, "running",
                                  persistent=(i % 20 == 0), created_at="2026-01-01T00:00:00Z",
                                  pid=pid, pgid=pid)

                def op(txn: Txn, rec: AgentRecord = rec) -> object:
                    AgentStore.upsert_in(txn, rec)
                    return log.append_in(txn, ev.AGENT_SPAWNED, rec.id, {"pid": rec.pid})

                e = await db.write(op)
            else:
                e = await log.append(ev.TOOL_INVOKED, f"w{w}", {"i": i, "w": w})
            os.write(1, f"{e.seq} {e.hash.hex()}\n".encode())

    await asyncio.gather(*(worker(w) for w in range(workers)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
