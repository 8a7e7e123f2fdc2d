from __future__ import annotations

import asyncio
import itertools
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agentix.store.audit_store import AuditLog
from agentix.store.db import Database

N_ENTRIES = 3000
KINDS = ["tool.invoked", "tool.result", "message.sent", "capability.denied", "usage.reported"]


class FakeClock:
    """Wall time that advances by one millisecond per reading (deterministic timestamps)."""

    def __init__(self, start: float = 1_790_000_000.0) -> None:
        self._c = itertools.count()
        self.start = start

    def __call__(self) -> float:
        return self.start + next(self._c) / 1000


async def fill(log: AuditLog, n: int, agents: int = 20) -> None:
    async def worker(a: int) -> None:
        for j in range(a, n, agents):
            await log.append(KINDS[j % len(KINDS)], f"agent-{a}",
                             {"j": j, "note": "x" * (j % 17), "cost": j / 7},
                             taint=["web"] if j % 3 == 0 else ())
    await asyncio.gather(*(worker(a) for a in range(agents)))


@pytest.fixture(scope="session")
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="session")
def master_log(tmp_path_factory, signing_key) -> Path:
    """A database holding N_ENTRIES entries and a signed head over all of them."""
    path = tmp_path_factory.mktemp("master") / "agentix.db"
    db = Database(path)
    log = AuditLog(db, signing_key=signing_key, clock=FakeClock())

    async def go() -> None:
        await fill(log, N_ENTRIES)
        await log.head(sign=True)

    asyncio.run(go())
    db.close()
    return path


@pytest.fixture
def log_copy(master_log, tmp_path) -> Path:
    dst = tmp_path / "agentix.db"
    shutil.copy(master_log, dst)
    return dst
