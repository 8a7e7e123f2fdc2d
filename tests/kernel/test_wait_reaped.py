"""``wait`` returns once an agent's exit is accounted for, not when its state first reads
``exited``: the reaper flips the state, then stores the exit, revokes the agent's tokens and
records ``agent.exited``. A caller that waited and then read the audit log or relied on the
revocation found neither (CI: the escape catalogue's ``cpu_hog`` found no ``agent.exited``)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from security._world import World, run  # noqa: E402


def test_wait_returns_after_the_reaper_has_revoked_and_recorded(tmp_path: Path) -> None:
    async def body(w: World):
        rows = w.k.reaper.rows
        stored = rows.persist_exit
        reaping = asyncio.Event()

        async def slow_persist(rec):  # widen the window between "exited" and the revocation
            reaping.set()
            await asyncio.sleep(0.5)
            await stored(rec)

        rows.persist_exit = slow_persist
        rec = await w.spawn(["tool: echo"])
        held = [t.id for t in w.k.caps.held.get(rec.agent_id, [])]
        assert held
        await w.k.deliver(None, rec, "exit")
        await asyncio.wait_for(reaping.wait(), 30)
        assert rec.exit is not None and not rec.exited.is_set()  # the exit is seen, not accounted for: the window is open
        await w.k.wait(rec, 10)
        exited = w.events("agent.exited", rec.agent_id)
        revoked = [t for e in w.events("capability.revoked", rec.agent_id) for t in e["data"]["token_ids"]]
        return exited, revoked, held

    exited, revoked, held = run(tmp_path, body)
    assert len(exited) == 1, "wait returned before agent.exited was recorded"
    assert set(held) <= set(revoked), "wait returned before the agent's tokens were revoked"
