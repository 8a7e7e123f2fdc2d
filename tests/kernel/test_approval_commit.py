"""An operator's answer to an approval takes effect only once it is recorded: the waiting
call runs its tool after ``approval.granted`` is in the log, never before; and a respond
cancelled mid-record (its client gone) still records the answer before the tool runs.
Before, ``approval.respond`` put the answer in (waking the call) and then recorded it: with
the record held, the tool ran with no grant in the log, and a cancelled respond left the
grant in effect and never recorded. Each test holds the ``approval.granted`` record open and
fails on the old code."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _sleeper import SleeperWorld, as_agent  # noqa: E402
from security._world import World, run  # noqa: E402

from agentix.core.manifest import parse_manifest  # noqa: E402


def hold_record(w: World, kind: str) -> tuple[asyncio.Event, asyncio.Event]:
    """(reached, release): the audit record of ``kind`` waits for ``release``."""
    events = w.k.events
    record = events.record
    reached, release = asyncio.Event(), asyncio.Event()

    async def held(k, *args, **kw):
        if k == kind:
            reached.set()
            await release.wait()
        return await record(k, *args, **kw)

    events.record = held  # type: ignore[method-assign]
    return reached, release


async def asking(w: World):
    """An agent's echo call waiting for the operator's approval: (call task, approval id)."""
    rec = await w.k.spawn(parse_manifest({"name": "asker", "program": str(w.progs / "sleeper.py"),
                                          "isolation": "degraded", "capabilities": ["tool: echo"],
                                          "approval_required": ["echo"]}))
    call = asyncio.ensure_future(w.k.pipeline.run(as_agent(rec), "tool.call",
                                                  {"name": "echo", "args": {"message": "hi"}}))
    for _ in range(1000):
        if w.events("approval.requested", rec.agent_id) or call.done():
            break
        await asyncio.sleep(0.02)
    return call, w.events("approval.requested", rec.agent_id)[0]["data"]["approval_id"]


async def granting(w: World):
    """The operator granting an agent's waiting call, its ``approval.granted`` record held:
    (the call, the approval id, the respond task, the record's release)."""
    call, aid = await asking(w)
    reached, release = hold_record(w, "approval.granted")
    respond = asyncio.ensure_future(w.op("approval.respond", id=aid, approve=True))
    await asyncio.wait_for(reached.wait(), 30)
    return call, aid, respond, release


def test_the_approved_call_runs_only_once_the_grant_is_recorded(tmp_path: Path) -> None:
    async def body(w: World):
        call, aid, respond, release = await granting(w)
        done, _ = await asyncio.wait({call}, timeout=1.0)  # the old code ran the tool meanwhile
        ran_unrecorded = bool(done)
        release.set()
        answer = await respond
        out = await asyncio.wait_for(call, 30)
        return ran_unrecorded, answer["state"], out

    ran_unrecorded, state, out = run(tmp_path, body, world=SleeperWorld)
    assert not ran_unrecorded, "the approved tool ran before approval.granted was recorded"
    assert state == "granted"
    assert "hi" in str(out)


def test_a_cancelled_respond_records_the_grant_before_the_tool_runs(tmp_path: Path) -> None:
    async def body(w: World):
        call, aid, respond, release = await granting(w)
        respond.cancel()  # the operator's client went away mid-answer
        await asyncio.sleep(0)
        release.set()
        await asyncio.wait_for(call, 30)
        granted_when_ran = len(w.events("approval.granted"))
        return granted_when_ran, w.k.caps.approvals.get(aid).state

    granted_when_ran, state = run(tmp_path, body, world=SleeperWorld)
    assert granted_when_ran == 1, "the tool ran on a grant that was never recorded"
    assert state == "used"


def test_a_second_answer_while_the_first_is_being_recorded_is_refused(tmp_path: Path) -> None:
    async def body(w: World):
        call, aid, first, release = await granting(w)
        try:
            await w.op("approval.respond", id=aid, approve=False)
            second = "accepted"
        except Exception as err:  # noqa: BLE001
            second = getattr(err, "code", repr(err))
        release.set()
        await first
        await asyncio.wait_for(call, 30)
        return second, len(w.events("approval.denied")), w.k.caps.approvals.get(aid).state

    second, denials, state = run(tmp_path, body, world=SleeperWorld)
    assert second == "conflict"
    assert denials == 0 and state == "used"


def test_the_operators_answer_is_acknowledged_only_once_its_row_is_durable(tmp_path: Path) -> None:
    """The answer's row is written by the store's writer; ``approval.respond`` answered before
    that write was durable, so a kill -9 right after an acknowledged deny brought the request
    back pending (a fresh-clone run caught it: tests/security/test_issue10_state_taint_secrets.py).
    Here the row's write is held open: the respond must not answer until it lands."""
    import concurrent.futures

    async def body(w: World):
        call, aid = await asking(w)
        book = w.k.caps.approvals
        save = book._save
        held: list[concurrent.futures.Future] = []

        def slow_save(a):
            real = save(a)
            fut: concurrent.futures.Future = concurrent.futures.Future()
            real.add_done_callback(lambda _f: held.append(fut))  # landed; released by the test below
            return fut

        book._save = slow_save
        respond = asyncio.ensure_future(w.op("approval.respond", id=aid, approve=False))
        for _ in range(500):
            if held:
                break
            await asyncio.sleep(0.01)
        answered_early = respond.done()
        held[0].set_result(None)
        answer = await asyncio.wait_for(respond, 10)
        call.cancel()
        return answered_early, answer["state"]

    answered_early, state = run(tmp_path, body, world=SleeperWorld)
    assert not answered_early, "approval.respond answered before the answer's row was durable"
    assert state == "denied"
