"""One kill-and-recover trial of the store (shared by the crash tests and bench/crash.py).

A test harness, not runtime code: it lives beside the tests, and bench/crash.py puts this
directory on ``sys.path`` to import it. ``run_trial(path, rng)`` runs ``_crashchild.py``
(beside this file) on ``path``, lets it append
under concurrent load for a random time, kills it with SIGKILL, then reopens the store and
checks: every acknowledged seq is present with the acknowledged hash; every effect the
child performed (a line in ``<db>.effects``) has its durable intent record; the whole chain
verifies (posted no-effect records lost from the last commit window are a lost *tail*, never
a gap); and ``recover`` marks every agent the child left running as exited
(``kernel_restart``) and none stays live.

``run_trials(path, rng, n)`` runs ``n`` trials on one store, each child started (Python and its
imports) while the previous trial's store is still being checked; it waits for ``go`` before
it opens the store, so the trials are the same as ``n`` calls of ``run_trial``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agentix.store.audit_store import AuditLog
from agentix.store.db import Database
from agentix.store.recovery import recover
from agentix.store.state import AgentStore

__all__ = ["TrialResult", "run_trial", "run_trials"]

CHILD = Path(__file__).resolve().with_name("_crashchild.py")


@dataclass(frozen=True)
class TrialResult:
    acked: int  # acknowledged appends this trial
    lost: int  # acknowledged but missing or different after restart
    chain_ok: bool
    chain_detail: str
    size: int
    left_running: int  # agents still live after recovery (must be 0)
    recovered_agents: int
    recovery_s: float  # reopen + recover
    effects: int = 0  # effects the child performed this trial
    effects_without_intent: int = 0  # performed, but no durable intent record (must be 0)


def _effects(path: Path) -> set[str]:
    """The effects performed so far; the file is emptied for the next trial."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return set()
    path.unlink()
    # a line cut by the kill is an effect half done: it still needed its intent record
    return {line for line in text.split("\n") if line}


def _start_child(path: Path, workers: int) -> subprocess.Popen[bytes]:
    """A crash child for ``path``: it imports, then waits for ``go`` before opening the store."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, str(CHILD), str(path), str(workers)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)


def _run_and_kill(child: subprocess.Popen[bytes], rng: random.Random, max_run_s: float) -> dict[int, str]:
    """Let ``child`` open the store and append for a random time, kill -9 it; its acknowledgements."""
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(b"go\n")
    child.stdin.flush()
    first = child.stdout.readline()
    if first != b"ready\n":
        child.kill()
        child.wait()
        raise RuntimeError(f"crash child did not start: {first!r}")
    time.sleep(rng.uniform(0.0, max_run_s))
    child.send_signal(signal.SIGKILL)
    out = child.stdout.read()
    child.wait()
    child.stdin.close()
    child.stdout.close()
    acked: dict[int, str] = {}
    for line in out.split(b"\n"):
        parts = line.split()
        if len(parts) == 2:  # a line cut by the kill was never acknowledged
            acked[int(parts[0])] = parts[1].decode()
    return acked


def run_trial(path: Path, rng: random.Random, *, workers: int = 16,
              max_run_s: float = 0.4) -> TrialResult:
    return _check(path, _run_and_kill(_start_child(path, workers), rng, max_run_s))


def run_trials(path: Path, rng: random.Random, n: int, *, workers: int = 16,
               max_run_s: float = 0.4) -> Iterator[TrialResult]:
    """``n`` trials on ``path``, each the same as ``run_trial``; the next child starts while
    this trial's store is checked."""
    child = _start_child(path, workers) if n > 0 else None
    try:
        for i in range(n):
            assert child is not None
            acked = _run_and_kill(child, rng, max_run_s)
            child = _start_child(path, workers) if i + 1 < n else None
            yield _check(path, acked)
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()


def _check(path: Path, acked: dict[int, str]) -> TrialResult:
    """Reopen the store the killed child left and check it against what it acknowledged."""
    t0 = time.perf_counter()
    db = Database(path)
    try:
        log = AuditLog(db)
        report = asyncio.run(recover(db, log))
        recovery_s = time.perf_counter() - t0
        lost = 0
        conn = db.reader()
        for seq, h in acked.items():
            row = conn.execute("SELECT hash FROM audit_entries WHERE seq=?", (seq,)).fetchone()
            if row is None or row[0].hex() != h:
                lost += 1
        rep = log.verify()
        live = AgentStore(db).list_live()
        intents = set()
        for (body,) in conn.execute(
                "SELECT body FROM audit_entries WHERE kind = 'tool.invoked'"):
            eid = json.loads(body)["data"].get("effect")
            if eid is not None:
                intents.add(eid)
        done = _effects(Path(str(path) + ".effects"))
        return TrialResult(len(acked), lost, rep.ok, rep.detail, rep.entries, len(live),
                           len(report.exited), recovery_s, len(done), len(done - intents))
    finally:
        db.close()
