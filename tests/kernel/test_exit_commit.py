"""An agent's state reads ``exited`` only once its exit is accounted for — one commit point,
``rec.exited`` set in the same step — never while the reaper is still storing the exit,
revoking its tokens, closing its budget and recording ``agent.exited``. Every reader that
takes ``exited`` as done (status, ps, a stop or kill of a dying agent, the kernel's
shutdown, a client polling) therefore finds that work done.

Each test forces the window open by holding the reaper's first step (``persist_exit``) until
the test lets it go, as tests/kernel/test_wait_reaped.py does; each fails on the old code,
where the reaper set the state to ``exited`` first."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from security._world import World, run  # noqa: E402

from agentix.store.db import Database  # noqa: E402
from agentix.store.state import AgentStore  # noqa: E402


def hold_reaper(w: World) -> tuple[asyncio.Event, asyncio.Event]:
    """(reaping, release): ``reaping`` is set when the reaper reaches its first step after the
    process ended; that step waits for ``release``."""
    rows = w.k.reaper.rows
    stored = rows.persist_exit
    reaping, release = asyncio.Event(), asyncio.Event()

    async def held(rec):
        reaping.set()
        await release.wait()
        await stored(rec)

    rows.persist_exit = held
    return reaping, release


def release_later(release: asyncio.Event, seconds: float = 0.5) -> asyncio.Task:
    """Let the reaper go on after ``seconds``: a reader that does not wait for it is done first."""
    async def later() -> None:
        await asyncio.sleep(seconds)
        release.set()
    return asyncio.create_task(later())


def accounted(w: World, rec, held: list[str]) -> tuple[int, bool]:
    """(how many agent.exited records, whether every token it held was revoked)."""
    exited = w.events("agent.exited", rec.agent_id)
    revoked = {t for e in w.events("capability.revoked", rec.agent_id) for t in e["data"]["token_ids"]}
    return len(exited), set(held) <= revoked


def test_status_and_ps_do_not_say_exited_while_the_reaper_is_at_work(tmp_path: Path) -> None:
    async def body(w: World):
        reaping, release = hold_reaper(w)
        rec = await w.spawn(["tool: echo"])
        await w.k.deliver(None, rec, "exit")
        await asyncio.wait_for(reaping.wait(), 30)
        status = await w.op("agent.status", agent_id=rec.agent_id)
        listed = {a["agent_id"]: a["state"] for a in (await w.op("agent.list", all=False))["agents"]}
        board = {a["agent_id"]: a["state"] for a in (await w.op("dashboard.agents", all=False))["agents"]}
        release.set()
        await w.k.wait(rec, 30)
        after = await w.op("agent.status", agent_id=rec.agent_id)
        return status, listed, board, after, rec.agent_id

    status, listed, board, after, aid = run(tmp_path, body)
    assert status["state"] == "stopping", status["state"]
    assert status["exit"]["reason"] == "completed"  # the exit is known; it is not accounted for yet
    assert listed.get(aid) == "stopping", "ps dropped an agent whose exit is not accounted for"
    assert board.get(aid) == "stopping"
    assert after["state"] == "exited"


def test_a_client_polling_status_finds_the_exit_accounted_for(tmp_path: Path) -> None:
    """What the A2A server and the demos do: poll until the state reads exited, then read
    the log (agent.exited) and rely on the revocation."""
    async def body(w: World):
        reaping, release = hold_reaper(w)
        rec = await w.spawn(["tool: echo"])
        held = [t.id for t in w.k.caps.held.get(rec.agent_id, [])]
        assert held
        await w.k.deliver(None, rec, "exit")
        await asyncio.wait_for(reaping.wait(), 30)
        releaser = release_later(release)
        for _ in range(3000):
            if (await w.op("agent.status", agent_id=rec.agent_id))["state"] == "exited":
                break
            await asyncio.sleep(0.01)
        seen = accounted(w, rec, held)
        await releaser
        return seen

    n_exited, revoked = run(tmp_path, body)
    assert n_exited == 1, "the state read exited before agent.exited was recorded"
    assert revoked, "the state read exited before the agent's tokens were revoked"


def test_stop_and_kill_of_a_dying_agent_return_once_its_exit_is_accounted_for(tmp_path: Path) -> None:
    async def body(w: World):
        out = {}
        for method in ("agent.stop", "agent.kill"):
            reaping, release = hold_reaper(w)
            rec = await w.spawn(["tool: echo"], name=method.replace(".", "-"))
            held = [t.id for t in w.k.caps.held.get(rec.agent_id, [])]
            await w.k.deliver(None, rec, "exit")
            await asyncio.wait_for(reaping.wait(), 30)
            releaser = release_later(release)
            summary = await w.op(method, agent_id=rec.agent_id)
            out[method] = (summary["state"], *accounted(w, rec, held))
            await releaser
            w.k.reaper.rows.persist_exit = type(w.k.reaper.rows).persist_exit.__get__(w.k.reaper.rows)
        return out

    out = run(tmp_path, body)
    for method, (state, n_exited, revoked) in out.items():
        assert state == "exited", f"{method} returned {state}"
        assert n_exited == 1, f"{method} returned before agent.exited was recorded"
        assert revoked, f"{method} returned before the agent's tokens were revoked"


def test_shutdown_waits_for_an_exit_being_accounted_for(tmp_path: Path) -> None:
    """A kernel stopping while an agent's reaper is at work closes its store only after the
    exit is stored (the old shutdown skipped agents that read exited and closed the store
    under the reaper: the row stayed ``running``, and a restart reported ``kernel_restart``)."""
    async def body(w: World):
        reaping, release = hold_reaper(w)
        rec = await w.spawn(["tool: echo"])
        await w.k.deliver(None, rec, "exit")
        await asyncio.wait_for(reaping.wait(), 30)
        release_later(release)
        return rec.agent_id  # run() shuts the kernel down now, the reaper still held

    aid = run(tmp_path, body)
    with Database(tmp_path / "home" / "agentix.db") as db:
        rows = {a.id: a for a in AgentStore(db).list()}
    assert rows[aid].state == "exited", rows[aid].state
    assert rows[aid].exit_reason == "completed"
