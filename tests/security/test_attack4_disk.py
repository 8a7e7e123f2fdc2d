"""Attack round 4: filling the host's disk through an agent's workspace.

``limits.disk`` bounded the private ``/tmp`` (a tmpfs of that size) and each file an agent's
process writes (RLIMIT_FSIZE), but not the workspace as a whole: the kernel's file tools wrote
into it without a total, so an agent (or a model steering the LLM loop) could write file
after file into the host's disk. Now a ``file_write`` / ``file_edit`` in the workspace that
would take it over ``limits.disk`` is refused with ``limit_exceeded`` (``reason: disk``),
before anything is written (no file, no parent directory, no truncation), and audited; an
``exec`` run may write no file larger than what the workspace has left.

- the rule, as a Hypothesis property on the real file system: whatever the sequence of writes,
  appends, edits and nested paths, the workspace never takes more than the limit, and a
  refused operation leaves the tree exactly as it was;
- the kernel (plain and bwrap): an agent writing past its quota is stopped at the quota, the
  refusal is audited, the host's tree holds nothing beyond it; an exec run's file is cut at
  the room left.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentix.core.errors import LimitExceeded
from agentix.tools import safe_fs
from security import _world
from security._world import World, run, tool

both_backends = _world.substrate  # the autouse fixture ``substrate``: every test on plain and bwrap

MIB = 1 << 20


def _tree(root: Path) -> dict[str, str]:
    """Every entry under ``root``: directories by name, files by content hash."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.relpath(os.path.join(dirpath, d), root) + "/"] = "dir"
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


def _used(root: Path) -> int:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return safe_fs.usage(fd)
    finally:
        os.close(fd)


_op = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(["a", "b", "d/e/f", "d/g"]), st.integers(0, 40_000)),
    st.tuples(st.just("append"), st.sampled_from(["a", "b", "d/g"]), st.integers(0, 40_000)),
    st.tuples(st.just("edit"), st.sampled_from(["a", "b", "d/g"]), st.integers(0, 40)),
    # many small files in one directory: it grows past one block (ext4), which the count follows
    st.tuples(st.just("many"), st.sampled_from(["d", "m/n"]), st.integers(1, 120)),
    # a change the kernel did not make (an exec run, the agent's own process): it measures again
    st.tuples(st.just("outside_delete"), st.sampled_from(["a", "b", "d/g", "d/e/f"]), st.just(0)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limit=st.integers(8_192, 400_000), ops=st.lists(_op, max_size=12))
def test_the_workspace_never_takes_more_than_its_limit_and_a_refusal_changes_nothing(
        tmp_path_factory: pytest.TempPathFactory, limit: int, ops: list) -> None:
    """And the kernel's count of what the workspace takes (``DiskQuota.used``, kept across the
    writes instead of a walk per write) is, after every operation, what a fresh walk finds."""
    root = tmp_path_factory.mktemp("ws")
    quota = safe_fs.DiskQuota(limit)

    def measure() -> None:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            quota.measure(fd)
        finally:
            os.close(fd)

    measure()
    for kind, rel, n in ops:
        before = _tree(root)
        try:
            if kind == "outside_delete":
                if (root / rel).is_file():
                    (root / rel).unlink()
                quota.used = None  # what the kernel does after an exec run: count again
                measure()
            elif kind == "many":
                for i in range(n):
                    safe_fs.file_write(str(root), f"{rel}/{'long-name-' * 8}{i}", "z", create_parents=True,
                                       quota=quota)
            elif kind == "edit":
                if not (root / rel).is_file() or "x" not in (root / rel).read_text():
                    continue
                safe_fs.file_edit(str(root), rel, "x", "y" * n, replace_all=True, quota=quota)
            else:
                safe_fs.file_write(str(root), rel, "x" * n, append=kind == "append", create_parents=True,
                                   quota=quota)
        except LimitExceeded as err:
            assert err.data.get("reason") == "disk" and err.data["limit"] == limit, err
            if kind != "many":
                assert _tree(root) == before      # refused: nothing written, made or cut
        finally:
            assert quota.used == _used(root), (kind, rel, n, quota.used, _used(root))
        assert _used(root) <= limit


def test_a_workspace_of_too_many_entries_is_over_any_limit(tmp_path: Path) -> None:
    for i in range(30):
        (tmp_path / f"f{i}").touch()
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(LimitExceeded):
            safe_fs.usage(fd, max_entries=20)
    finally:
        os.close(fd)


CHUNK = 300_000  # a call frame is at most 1 MiB


def test_an_agent_writing_past_its_disk_limit_is_stopped_at_it(tmp_path: Path) -> None:
    async def body(w: World):
        rec = await w.spawn(["file_write: /workspace/*"], name="filler", limits={"disk": "1M"})
        res = await w.calls(rec, [tool("file_write", path=f"/workspace/out/{i}.bin", content="z" * CHUNK)
                                  for i in range(6)])
        return rec, res, w.events(agent=rec.agent_id)

    rec, res, events = run(tmp_path, body)
    ok = [r for r in res if "ok" in r]
    refused = [r for r in res if "ok" not in r]
    assert 1 <= len(ok) <= 3 and refused, res                    # written up to the quota, then refused
    assert all(r["error"] == "limit_exceeded" for r in refused), refused
    assert "limits.disk" in refused[0]["message"]
    out = Path(rec.workspace) / "out"
    assert sorted(p.name for p in out.iterdir()) == [f"{i}.bin" for i in range(len(ok))]   # nothing beyond
    assert _used(Path(rec.workspace)) <= MIB
    audited = [e for e in events if e["data"].get("error") == "limit_exceeded"]
    assert len(audited) == len(refused)                           # every refusal is on the record


def test_an_exec_run_writes_no_file_past_the_room_the_workspace_has_left(tmp_path: Path, both_backends: str) -> None:
    if both_backends == "plain":
        pytest.skip("the plain substrate applies no rlimit (its agents list rlimits as missing)")
    big = "import sys\nwith open('big.bin', 'wb') as f:\n    for _ in range(64):\n        f.write(b'z' * 65536)\n"

    async def body(w: World):
        rec = await w.spawn(["file_write: /workspace/*", "exec: [python3]"], name="execfill",
                            limits={"disk": "2M"})
        res = await w.calls(rec, [tool("file_write", path="/workspace/fill.py", content=big),
                                  tool("file_write", path="/workspace/pad.bin", content="p" * 700_000),
                                  tool("exec", argv=["python3", "fill.py"])])
        return rec, res

    rec, res = run(tmp_path, body)
    assert "ok" in res[0] and "ok" in res[1], res
    out = res[2].get("ok") or {}
    assert out.get("exit_code") != 0 or out.get("signal"), res[2]   # stopped: EFBIG / SIGXFSZ
    assert (Path(rec.workspace) / "big.bin").stat().st_size < 2 * MIB - 700_000
    assert _used(Path(rec.workspace)) <= 2 * MIB


def test_two_writes_at_once_cannot_both_fit_the_room_left_for_one(tmp_path: Path) -> None:
    """Each write alone fits under the limit, both together do not: whatever the interleaving,
    one is refused (the check and the write of a workspace under a disk limit are one step).
    The workspace holds 1500 small files, so each check's walk takes a while: without the
    one-writer rule both checks pass before either write lands."""
    import asyncio

    async def body(w: World):
        rec = await w.spawn(["file_write: /workspace/*"], name="racer", limits={"disk": "16M"})
        many = Path(rec.workspace) / "many"
        many.mkdir()
        for i in range(1500):
            (many / str(i)).touch()
        room = 16 * MIB - _used(Path(rec.workspace))
        size = room // 2 + 200_000            # one fits, two do not

        async def write(i: int):
            try:
                return await w.op("tool.invoke", agent_id=rec.agent_id, name="file_write",
                                  args={"path": f"/workspace/r{i}.bin", "content": "r" * size})
            except Exception as err:  # noqa: BLE001 - the refusal is what is counted
                return err

        out = []
        for _ in range(3):   # rounds of two at once, each from the same state
            got = await asyncio.gather(write(0), write(1))
            out.append(sorted(getattr(g, "code", "ok") for g in got))
            for i in (0, 1):
                (Path(rec.workspace) / f"r{i}.bin").unlink(missing_ok=True)
        return rec, out

    rec, out = run(tmp_path, body)
    assert all(codes == ["limit_exceeded", "ok"] for codes in out), out
