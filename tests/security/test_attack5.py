"""Attack round 5 on this session's new code: a revocation reaching a file write already handed
to its worker thread.

Each test asserts the refusal AND that the world did not move after it. Harness: the
scenarios' one (``_world.py``), a real kernel, real agent processes, a real workspace.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _world import World, run  # noqa: E402  (same directory)
from test_attack4_core import _until, _World  # noqa: E402  (its sleeping agent and hang guard)

from agentix.kernel.dispatch import Caller  # noqa: E402
from agentix.tools import files  # noqa: E402
from agentix.tools.thread_work import Abandoned, commit_point, in_thread  # noqa: E402


class _Gate:
    """Stands in for a workspace's quota lock: the write's thread waits here until the test
    opens it (so the revocation surely comes while the thread holds the write), and says when
    the thread has left (its write done or refused)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.open = threading.Event()
        self.left = threading.Event()

    def __enter__(self) -> None:
        self.entered.set()
        self.open.wait(30)

    def __exit__(self, *exc: object) -> None:
        self.left.set()


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


CASES: dict[str, Callable[[Path], dict[str, Any]]] = {
    # a new file in a directory the write makes
    "write_new": lambda ws: {"name": "file_write", "args": {"path": "new/dir/out.txt", "content": "late"}},
    # an existing file replaced
    "write_over": lambda ws: {"name": "file_write", "args": {"path": "notes.txt", "content": "late"}},
    "append": lambda ws: {"name": "file_write", "args": {"path": "notes.txt", "content": "late", "append": True}},
    "edit": lambda ws: {"name": "file_edit", "args": {"path": "notes.txt", "old": "before", "new": "late"}},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_file_write_already_in_its_thread_when_its_token_is_revoked_writes_nothing(tmp_path, case):
    """The file tools write in a worker thread, and cancelling the call's task does not stop a
    thread: before, a ``file_write``/``file_edit`` whose token was revoked while its thread
    waited for the workspace's quota lock answered ``capability_revoked`` and then wrote
    anyway (the file appeared, or changed, after the refusal). Now the thread checks, just
    before its first change, that its call is still there: the refusal stands and the
    workspace is exactly as it was at the revocation."""

    async def body(w: World) -> dict[str, Any]:
        rec = await w.spawn(["file_read: [/workspace/*]", "file_write: [/workspace/*]"], name="writer",
                            program="sleeper.py")
        ws = Path(rec.workspace)
        (ws / "notes.txt").write_text("before\n")
        before = {p: (ws / p).read_bytes() if (ws / p).is_file() else None for p in _tree(ws)}
        gate = _Gate()
        held = files._QuotaLock()
        held.lock = gate  # type: ignore[assignment]
        with w.k.disk_tally._guard:
            w.k.disk_tally._locks[str(ws)] = held
        caller = Caller(agent_id=rec.agent_id, name=rec.name, workspace=rec.workspace)
        call = asyncio.ensure_future(w.k.pipeline.run(caller, "tool.call", CASES[case](ws)))
        await _until(lambda: gate.entered.is_set() or call.done(), "the write in its thread")
        assert not call.done(), call.result()
        for t in w.k.caps.held[rec.agent_id]:
            await w.op("cap.revoke", token_id=t.id)
        gate.open.set()  # the thread goes on (a cancelled task does not stop it)
        try:
            await asyncio.wait_for(call, 30)
            outcome: Any = "answered"
        except BaseException as err:  # noqa: BLE001
            outcome = getattr(err, "code", type(err).__name__)
        settled = gate.left.is_set()  # the answer came once the thread was done
        await _until(gate.left.is_set, "the write's thread done")
        await asyncio.sleep(0)  # hold ``held`` alive until the thread left it
        after = {p: (ws / p).read_bytes() if (ws / p).is_file() else None for p in _tree(ws)}
        results = [e["data"] for e in w.events("tool.result", rec.agent_id)]
        return {"outcome": outcome, "settled": settled, "before": before, "after": after, "results": results,
                "held": held}

    r = run(tmp_path, body, world=_World)
    assert r["outcome"] == "capability_revoked", r
    assert r["after"] == r["before"], r
    assert r["settled"], r
    assert [x["ok"] for x in r["results"]] == [False], r["results"]


@pytest.mark.parametrize("committed", [False, True])
def test_a_thread_ended_with_its_call_changes_nothing_before_its_commit_point_and_is_answered_after(committed):
    """``in_thread`` itself, the call's task cancelled while the work runs: before the work's
    ``commit_point`` the cancellation stands, the work's change is never made (``Abandoned``),
    and the cancellation is raised only once the thread is done; past it, the change is made
    whole and the call answers it (never a refusal for a change that happened)."""
    changes: list[str] = []
    go, inside = threading.Event(), threading.Event()

    def work() -> str:
        if committed:
            commit_point()
        inside.set()
        go.wait(30)
        try:
            commit_point()
        except Abandoned:
            changes.append("abandoned")
            raise
        changes.append("written")
        return "done"

    async def main() -> Any:
        task = asyncio.ensure_future(in_thread(work))
        await _until(inside.is_set, "the work in its thread")
        task.cancel()
        await asyncio.sleep(0.05)
        assert not task.done()  # the answer waits for the thread
        go.set()
        try:
            return await task
        except asyncio.CancelledError:
            return "cancelled"

    out = asyncio.run(main())
    if committed:
        assert (out, changes) == ("done", ["written"])
    else:
        assert (out, changes) == ("cancelled", ["abandoned"])


def test_a_store_writer_cancelled_mid_thread_keeps_the_store_lock_until_its_thread_ends(tmp_path):
    """``package.*`` writers run in a thread under the store's one lock. Before, a writer
    whose call was cancelled (its connection closed: ``rpc.server`` cancels the call's task)
    let the lock go at once while its thread went on, and the next writer ran beside it (a
    ``package.gc`` removing the blobs of a pull not yet tagged). Now the lock is held until the
    thread ends: the second writer's thread starts only after the first's ended, and the
    cancelled call is answered only then."""
    order: list[str] = []
    first_open = threading.Event()
    first_in = threading.Event()

    async def body(w: World) -> list[str]:
        real = w.k.packages.gc
        n = {"calls": 0}

        def gated() -> dict[str, int]:
            n["calls"] += 1
            me = n["calls"]
            order.append(f"in{me}")
            if me == 1:
                first_in.set()
                first_open.wait(30)
            out = real()
            order.append(f"out{me}")
            return out

        w.k.packages.gc = gated  # type: ignore[method-assign]
        first = asyncio.ensure_future(w.op("package.gc"))
        await _until(first_in.is_set, "the first gc in its thread")
        first.cancel()
        second = asyncio.ensure_future(w.op("package.gc"))
        await asyncio.sleep(0.3)  # room for the second to (wrongly) start beside the first
        order.append("opened")
        first_open.set()
        try:
            await first
        except asyncio.CancelledError:
            order.append("first cancelled")
        await asyncio.wait_for(second, 30)
        order.append("second answered")
        return order

    got = run(tmp_path, body, world=_World)
    # nothing of the second before the first's thread ended; the first answered (cancelled) after it
    assert got[:3] == ["in1", "opened", "out1"], got
    assert sorted(got[3:]) == sorted(["first cancelled", "in2", "out2", "second answered"]), got
    assert got.index("in2") < got.index("out2") < got.index("second answered"), got
