"""Crash benchmark: kill -9 a store writer under concurrent load, recover, count losses.

Starts: no kernel -- the store substrate only (a child process running the group-commit
writer), killed with SIGKILL and reopened in this process.

Each trial (``tests/store/crashtrial.py``, ``run_trial``) starts a child that appends audit
entries from 16 concurrent tasks -- effect calls (durable intent, the effect, durable
outcome), no-effect calls (records posted, asynchronous commit) and spawns (atomically with
a ``running`` agent record) -- and prints each acknowledged seq; the child is SIGKILLed at a
random moment, then the store is reopened and recovered. Lost acknowledged events must be
0; effects without their durable intent record must be 0; the chain must verify; no agent
may stay live. Recovery time = open the database + load the audit state + ``recover``
(tail check, agents marked exited, events appended, durably committed). The database grows
across trials and is started afresh every ``--fresh-every`` trials (so full verification
per trial stays cheap).

Also: reopen + recover a store that died with 100 agents running (goal <= 1 s).

Usage: python bench/crash.py [--trials 1000] [--fresh-every 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import sys
import time
from pathlib import Path

# the kill-and-recover trial is test harness code, shared with tests/store/test_crash.py
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "store"))

from crashtrial import run_trial  # noqa: E402

from agentix.store.audit_store import AuditLog
from agentix.store.db import Database
from agentix.store.recovery import recover
from agentix.store.state import AgentStore, StoredAgent


def recovery_of_agents(root: Path, n: int) -> float:
    """Seconds to reopen a store that died with ``n`` agents running and recover them."""
    path = root / f"agents{n}" / "agentix.db"
    db = Database(path)
    log = AuditLog(db)
    agents = AgentStore(db)

    async def fill() -> None:
        await recover(db, log)
        for i in range(n):
            await agents.upsert(StoredAgent(f"a{i}", f"n{i}", None, {"name": f"n{i}"},
                                            "running", i % 4 == 0, "2026-01-01T00:00:00Z",
                                            pid=10_000 + i, pgid=10_000 + i))
        for i in range(5000):
            await log.append("tool.invoked", f"a{i % n}", {"i": i})

    asyncio.run(fill())
    db.close()
    t0 = time.perf_counter()
    db = Database(path)
    rep = asyncio.run(recover(db, AuditLog(db)))
    dt = time.perf_counter() - t0
    assert len(rep.exited) == n and not AgentStore(db).list_live()
    db.close()
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--fresh-every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="agentix-bench-crash-"))
    acked = lost = chain_bad = left = agents = effects = no_intent = 0
    rec: list[float] = []
    t0 = time.perf_counter()
    path = root / "db0" / "agentix.db"
    for i in range(args.trials):
        if i % args.fresh_every == 0:
            path = root / f"db{i}" / "agentix.db"
        r = run_trial(path, rng)
        acked += r.acked
        lost += r.lost
        chain_bad += not r.chain_ok
        left += r.left_running
        agents += r.recovered_agents
        effects += r.effects
        no_intent += r.effects_without_intent
        rec.append(r.recovery_s)
        if (i + 1) % 100 == 0:
            print(f"  {i + 1} trials: lost {lost}, chain failures {chain_bad}", flush=True)
    wall = time.perf_counter() - t0
    rec.sort()
    agents100 = recovery_of_agents(root, 100)
    res = {
        "trials": args.trials,
        "acknowledged_events": acked,
        "lost_acknowledged_events": lost,
        "chain_failures": chain_bad,
        "agents_left_running": left,
        "agents_recovered": agents,
        "recovery_ms_p50": round(rec[len(rec) // 2] * 1e3, 2),
        "recovery_ms_p99": round(rec[min(len(rec) - 1, int(len(rec) * 0.99))] * 1e3, 2),
        "recovery_ms_max": round(rec[-1] * 1e3, 2),
        "wall_s": round(wall, 1),
        "recovery_100_running_agents_ms": round(agents100 * 1e3, 1),
        "effects": effects,
        "effects_without_intent": no_intent,
    }
    print(f"crash benchmark: {args.trials} kill -9 trials in {wall:.0f} s")
    for k, v in res.items():
        print(f"  {k:<28} {v}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
