"""``wait`` returns once an agent's exit is accounted for, not when its state first reads
``exited``: the reaper flips the state, then stores the exit, revokes the agent's tokens and
records ``agent.exited``. A caller that waited and then read the audit log or relied on the
revocation found neither (CI: the escape catalogue's ``cpu_hog`` found no ``agent.exited``).
``stop`` and ``kill`` met the same window: an agent exiting on its own is no longer live, and
they returned at once."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from security._world import World, run  # noqa: E402


async def exiting_in_the_window(w: World):
    """An agent told to exit, caught after its state reads exited and before the reaper has
    stored, revoked and recorded (its store step slowed to hold the window open); with the
    ids of the tokens it held."""
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
    return rec, held


def accounted(w: World, rec) -> tuple[list, list]:
    exited = w.events("agent.exited", rec.agent_id)
    revoked = [t for e in w.events("capability.revoked", rec.agent_id) for t in e["data"]["token_ids"]]
    return exited, revoked


def test_wait_returns_after_the_reaper_has_revoked_and_recorded(tmp_path: Path) -> None:
    async def body(w: World):
        rec, held = await exiting_in_the_window(w)
        await w.k.wait(rec, 10)
        return (*accounted(w, rec), held)

    exited, revoked, held = run(tmp_path, body)
    assert len(exited) == 1, "wait returned before agent.exited was recorded"
    assert set(held) <= set(revoked), "wait returned before the agent's tokens were revoked"


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_stop_and_kill_of_an_exiting_agent_return_after_the_reaper_has_accounted(tmp_path: Path, how: str) -> None:
    """An operator's ``agentix stop`` racing the agent's own exit."""
    async def body(w: World):
        rec, held = await exiting_in_the_window(w)
        back = await getattr(w.k, how)(rec)
        return (back, *accounted(w, rec), held)

    back, exited, revoked, held = run(tmp_path, body)
    assert back.exit is not None and back.exit.reason == "completed"  # its own exit, not the stop's
    assert len(exited) == 1, f"{how} returned before agent.exited was recorded"
    assert set(held) <= set(revoked), f"{how} returned before the agent's tokens were revoked"


def test_a_failing_step_of_the_reaper_still_ends_in_exited_and_wait_returns(tmp_path: Path) -> None:
    """The reaper's commit point is reached whatever a step does: a store that fails (disk
    full, a closed database) is logged, and the agent still reads exited — before, every
    ``wait``, ``stop`` and the shutdown waited for it for ever."""
    async def body(w: World):
        async def broken(rec):
            raise OSError(28, "No space left on device")

        w.k.reaper.rows.persist_exit = broken
        rec = await w.spawn(["tool: echo"])
        held = [t.id for t in w.k.caps.held.get(rec.agent_id, [])]
        await w.k.deliver(None, rec, "exit")
        await w.k.wait(rec, 20)
        return rec.state, rec.exit, held, *accounted(w, rec)

    state, exit_, held, exited, revoked = run(tmp_path, body)
    assert state == "exited" and exit_ is not None and exit_.reason == "completed"
    # the steps after the failing one still ran: each step is on its own
    assert len(exited) == 1 and set(held) <= set(revoked), (exited, revoked)


SLEEPER = "import time\nfrom agentix.sdk import agent\nk = agent.connect()\ntime.sleep(3600)\n"


def test_wait_on_a_root_returns_once_its_subtree_is_down(tmp_path: Path) -> None:
    """The subtree does not outlive its root: the reaper stops the live children before the
    root reads exited, so ``wait(root)`` finds none still live."""
    async def body(w: World):
        from agentix.core.manifest import parse_manifest

        parent = await w.spawn(["spawn_child: [kid]"], name="parent")
        (Path(parent.workspace) / "sleeper.py").write_text(SLEEPER)
        kid = await w.k.spawn(parse_manifest({"name": "kid", "program": "sleeper.py",
                                              "isolation": "degraded"}), parent=parent)
        await w.k.deliver(None, parent, "exit")
        await w.k.wait(parent, 30)
        return kid.live, kid.state, kid.exit

    live, state, exit_ = run(tmp_path, body)
    assert not live and state == "exited", state
    assert exit_ is not None and exit_.reason == "killed" and "parent" in exit_.detail


def test_a_failing_step_of_a_spawns_unwinding_still_ends_in_exited(tmp_path: Path) -> None:
    """A spawn that fails, and whose unwinding fails too (the store cannot record the exit):
    the spawn's own error is raised, the record reads exited, and a stop that raced it returns."""
    from agentix.core.errors import InternalError
    from agentix.core.manifest import parse_manifest

    async def body(w: World):
        made = []
        add = w.k.table.add
        w.k.table.add = lambda rec: (made.append(rec), add(rec))[1]
        record = w.k.events.record

        async def failing_record(kind, *a, **kw):
            if kind == "capability.granted":
                raise InternalError("the audit log refused the grant record")
            return await record(kind, *a, **kw)

        async def broken(rec):
            raise OSError(28, "No space left on device")

        w.k.spawner.events.record = failing_record
        w.k.spawner.rows.persist_exit = broken
        try:
            await w.k.spawn(parse_manifest({"name": "doomed", "program": str(w.prog), "isolation": "degraded",
                                            "capabilities": ["tool: echo"]}))
        except Exception as err:  # noqa: BLE001
            raised = err
        rec = made[-1]
        stopped = await asyncio.wait_for(w.k.stop(rec), 10)
        return raised, rec.state, rec.exited.is_set(), stopped.exit

    raised, state, exited, exit_ = run(tmp_path, body)
    assert isinstance(raised, Exception) and "refused the grant record" in str(raised), raised
    assert state == "exited" and exited and exit_ is not None and exit_.reason == "spawn_failed"
