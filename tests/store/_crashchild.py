"""A store writer to be killed: appends under concurrent load and reports acknowledgements.

``python tests/store/_crashchild.py DB WORKERS`` imports what it needs, waits for a line on
stdin (so that it can be started while the previous trial's store is still being checked),
opens the store, prints ``ready``, then runs WORKERS concurrent tasks, each mixing three kinds of work the way the kernel does:

* an *effect call*: a durable ``tool.invoked`` intent record (``{"effect": ID}``), then the
  effect itself -- one ``O_APPEND`` write of ``ID`` to ``DB.effects``, standing for the
  outside world -- then a durable ``tool.result`` outcome record;
* a *no-effect call*: ``tool.invoked`` and ``tool.result`` posted without waiting for the
  commit (asynchronous commit, ``Database.post``);
* every tenth iteration, a spawn: an agent record in state ``running`` written atomically
  with its ``agent.spawned`` entry.

For each durable append that was acknowledged it writes ``<seq> <hash hex>`` on stdout
with one unbuffered ``write``. Used by the crash tests and ``bench/crash.py``: whatever was
printed must survive ``kill -9``, and every ID in ``DB.effects`` must have its intent
record.
"""

from __future__ import annotations

import asyncio
import os
import sys

from agentix.core import events as ev
from agentix.store.audit_store import AuditLog
from agentix.store.db import Database, Txn
from agentix.store.state import AgentStore, StoredAgent


async def main(path: str, workers: int) -> None:
    db = Database(path)
    log = AuditLog(db)
    pid = os.getpid()
    effects = os.open(path + ".effects", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.write(1, b"ready\n")

    def ack(e: object) -> None:
        os.write(1, f"{e.seq} {e.hash.hex()}\n".encode())  # type: ignore[attr-defined]

    async def worker(w: int) -> None:
        i = 0
        while True:
            i += 1
            if i % 10 == 0:
                aid = f"agent-{pid}-{w}-{i}"
                rec = StoredAgent(aid, f"w{w}", None, {"name": f"w{w}"}, "running",
                                  persistent=(i % 20 == 0), created_at="2026-01-01T00:00:00Z",
                                  pid=pid, pgid=pid)

                def op(txn: Txn, rec: StoredAgent = rec) -> object:
                    AgentStore.upsert_in(txn, rec)
                    return log.append_in(txn, ev.AGENT_SPAWNED, rec.id, {"pid": rec.pid})

                ack(await db.write(op))
            elif i % 3 == 0:
                eid = f"{pid}-{w}-{i}"
                ack(await log.append(ev.TOOL_INVOKED, f"w{w}", {"effect": eid}))
                os.write(effects, f"{eid}\n".encode())
                ack(await log.append(ev.TOOL_RESULT, f"w{w}", {"effect": eid, "ok": True}))
            else:
                log.post(ev.TOOL_INVOKED, f"w{w}", {"i": i, "w": w})
                log.post(ev.TOOL_RESULT, f"w{w}", {"i": i, "w": w, "ok": True})
                await asyncio.sleep(0)

    await asyncio.gather(*(worker(w) for w in range(workers)))


if __name__ == "__main__":
    sys.stdin.readline()  # "go": the store is no one else's now
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
