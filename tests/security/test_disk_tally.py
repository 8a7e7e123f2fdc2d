"""The kernel's count of a workspace under ``limits.disk`` (tools/files.DiskTally).

Before, every growing ``file_write`` / ``file_edit`` walked the whole workspace to check the
limit (43-46 ms at 2,000 entries, per write). Now the kernel measures a workspace once and
adjusts its count by exactly what each write changed (tests/security/test_attack4_disk.py: a
Hypothesis property that the count equals a fresh walk after every write, edit, append and
outside change); it measures again after each exec run, and when the count is older than
``COUNT_FRESH_S`` on the kernel's clock (what the agent's own process wrote is seen by then).
A refusal is never decided on a kept count: files removed meanwhile are found first.

An exec run is bounded per file (RLIMIT_FSIZE = the room left), not in total: several files
each under the room can take the workspace over its limit. The kernel cannot refuse what
already ran, and it deletes nothing; it counts again after the run, says so in the result
(``disk_over_limit``) and in the run's ``tool.result`` record, and refuses every growing write
and the next exec run until the workspace is back under its limit.
"""

from __future__ import annotations

from pathlib import Path

from agentix.core.errors import LimitExceeded
from agentix.kernel.clock import VirtualClock
from agentix.kernel.dispatch import OPERATOR
from agentix.tools.files import COUNT_FRESH_S
from security._world import World, run
from security.test_attack4_disk import _used  # a fresh walk of a workspace, as the kernel counts it

MIB = 1 << 20


def test_writes_keep_a_count_instead_of_walking_the_workspace_each_time(tmp_path: Path) -> None:
    clock = VirtualClock()

    async def body(w: World):
        rec = await w.spawn(["file_write: /workspace/*"], name="writer", limits={"disk": "64M"})
        many = Path(rec.workspace) / "many"
        many.mkdir()
        for i in range(2000):
            (many / str(i)).touch()

        async def write(path: str, n: int) -> None:
            await w.k.pipeline.run(OPERATOR, "tool.invoke", {
                "agent_id": rec.agent_id, "name": "file_write", "args": {"path": path, "content": "w" * n}})

        tally = w.k.disk_tally
        for i in range(20):
            await write(f"/workspace/out/{i}.txt", 5000 + i)
        walks_in_burst = tally.walks
        clock.advance(COUNT_FRESH_S + 0.1)          # the count is old: the next write measures
        await write("/workspace/out/late.txt", 10)
        walks_after = tally.walks
        held = tally._locks[str(rec.workspace)]
        return walks_in_burst, walks_after, held.quota.used, _used(Path(rec.workspace))

    walks_in_burst, walks_after, counted, walked = run(tmp_path, body, clock=clock)
    assert walks_in_burst == 1      # main: a walk of 2,000 entries per write
    assert walks_after == 2
    assert counted == walked        # the kept count is what a walk finds


def test_a_refusal_is_decided_on_a_fresh_count(tmp_path: Path) -> None:
    """The agent removes a file itself (not through the kernel): its next write that fits is
    not refused on the count from before."""
    async def body(w: World):
        rec = await w.spawn(["file_write: /workspace/*"], name="cleaner", limits={"disk": "1M"})

        async def write(path: str, n: int):
            try:
                return await w.k.pipeline.run(OPERATOR, "tool.invoke", {
                    "agent_id": rec.agent_id, "name": "file_write", "args": {"path": path, "content": "c" * n}})
            except LimitExceeded as err:
                return err.code

        first = await write("/workspace/a.bin", 600_000)
        refused = await write("/workspace/b.bin", 600_000)
        (Path(rec.workspace) / "a.bin").unlink()       # the agent's own process, say
        second = await write("/workspace/b.bin", 600_000)
        return first, refused, second

    first, refused, second = run(tmp_path, body)
    assert "bytes_written" in first and refused == "limit_exceeded"
    assert isinstance(second, dict) and second["bytes_written"] == 600_000


FILL = ("import sys\nfor i in range(3):\n    with open(f'part{i}.bin', 'wb') as f:\n"
        "        f.write(b'e' * 600_000)\n")


def test_an_exec_run_that_takes_the_workspace_over_its_limit_is_counted_reported_and_refused_after(
        tmp_path: Path) -> None:
    async def body(w: World):
        rec = await w.spawn(["file_write: /workspace/*", "exec: [python3]"], name="execover",
                            limits={"disk": "1M"})
        (Path(rec.workspace) / "fill.py").write_text(FILL)

        async def call(name: str, **args):
            try:
                return await w.k.pipeline.run(OPERATOR, "tool.invoke", {
                    "agent_id": rec.agent_id, "name": name, "args": args})
            except LimitExceeded as err:
                return err.code

        ran = await call("exec", argv=["python3", "fill.py"])
        grow = await call("file_write", path="/workspace/more.txt", content="m" * 10)
        again = await call("exec", argv=["python3", "-c", "pass"])
        records = [e["data"] for e in w.events("tool.result", rec.agent_id) if e["data"]["tool"] == "exec"]
        return rec, ran, grow, again, records

    rec, ran, grow, again, records = run(tmp_path, body)
    ws = Path(rec.workspace)
    assert isinstance(ran, dict) and ran["exit_code"] == 0, ran
    assert sorted(p.name for p in ws.glob("part*.bin")) == ["part0.bin", "part1.bin", "part2.bin"]  # none deleted
    over = ran["disk_over_limit"]
    assert over["limit"] == MIB and over["used"] == _used(ws) > MIB
    assert records[0]["disk_over_limit"] == over                 # on the record
    assert grow == "limit_exceeded" and again == "limit_exceeded"
    assert not (ws / "more.txt").exists()
