"""Issue 11 (part B): every shared resource bounded, one kernel's cgroups, logs through a pipe.

Each test runs a real kernel daemon on the bwrap backend, attacks one bound the way an agent
(or a careless user) would, asserts the bound or the refusal, and then that the host did not
move: the kernel answers, its memory stayed small, nothing was created outside the agent's
own resources.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import wait_until

pytestmark = pytest.mark.skipif(os.environ.get("AGENTIX_TEST_ISOLATION", "strict") != "strict",
                                reason="these tests attack the bwrap backend's bounds")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def last_json_line(d: Any, aid: str) -> dict[str, Any] | None:
    text = d.client.logs(aid)[0]
    lines = [x for x in text.splitlines() if x.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def run_calls(d: Any, calls: list, name: str = "caller", **kw: Any) -> list[dict]:
    info = d.run("calls.py", json.dumps(calls), name=name, **kw)
    assert info.reason == "completed", d.client.logs(info.agent_id)[0]
    return info.result


# ---------------------------------------------------------------- 1 + 7: in-flight bounds, kernel RSS
def test_batch_and_recv_flood_from_an_agent_without_grants_keeps_the_kernel_small(start_kernel) -> None:
    d = start_kernel()
    d.client.info()
    base = rss_mb(d.proc.pid)
    # the attack: ten frames of 10k ipc.recv each -> each batch is refused whole
    big = d.spawn("flood.py", "10", "10000", "600", name="flood-big", capabilities=[])
    # many admissible batches of waiting calls -> at most the per-connection limit in flight
    many = d.spawn("flood.py", "2000", "64", "600", name="flood-many", capabilities=[])
    singles = d.spawn("flood.py", "20000", "1", "600", name="flood-singles", capabilities=[])
    assert wait_until(lambda: (last_json_line(d, big) or {}).get("replies", {}).get("batch") == 10, timeout=30)
    assert wait_until(lambda: (last_json_line(d, many) or {}).get("written", 0) >= 4, timeout=30)
    assert wait_until(lambda: (last_json_line(d, singles) or {}).get("written", 0) >= 256, timeout=30)
    time.sleep(1.0)
    info = d.client.info()  # the operator is still answered during the attack
    sc = info["syscalls"]
    assert sc["in_flight"] <= 2 * 256, sc           # two connections, 256 requests each at most
    assert sc["peak"] <= 2 * 256, sc
    # the kernel stopped reading the flooders: they could not push everything they wanted
    assert (last_json_line(d, many) or {})["written"] < 2000
    assert (last_json_line(d, singles) or {})["written"] < 20000
    grown = rss_mb(d.proc.pid) - base
    assert grown < 150, f"kernel RSS grew by {grown:.0f} MB under the flood"
    # an ordinary agent still gets its system calls through
    res = run_calls(d, [["sys.info", {}], ["ipc.recv", {"timeout": 0}]], name="bystander")
    assert res[0]["ok"]["name"] == "bystander" and res[1] == {"ok": {"message": None}}
    for aid in (big, many, singles):
        d.client.kill(aid)
    assert wait_until(lambda: d.client.info()["syscalls"]["in_flight"] == 0, timeout=10)


def test_operator_batches_are_bounded_too_and_the_connection_stays_usable(kernel) -> None:
    import socket

    s = socket.socket(socket.AF_UNIX)
    s.connect(str(kernel.socket))
    f = s.makefile("rb")

    def send(n: int) -> Any:
        batch = [{"jsonrpc": "2.0", "id": i, "method": "kernel.info"} for i in range(n)]
        s.sendall(json.dumps(batch).encode() + b"\n")
        return json.loads(f.readline())

    try:
        over = send(65)
        assert over["error"]["data"]["error"] == "invalid_request" and over["error"]["data"]["limit"] == "batch"
        ok = send(64)
        assert len(ok) == 64 and all("result" in r for r in ok)
    finally:
        f.close()
        s.close()


def test_in_flight_total_refuses_with_limit_exceeded_and_runs_nothing(start_kernel) -> None:
    d = start_kernel(config={"in_flight_total": 100, "in_flight_per_agent": 100})
    a = d.spawn("flood.py", "2", "50", "600", name="flood-a", capabilities=[])
    assert wait_until(lambda: (last_json_line(d, a) or {}).get("written") == 2, timeout=30)
    assert wait_until(lambda: d.client.info()["syscalls"]["in_flight"] == 100, timeout=10)
    b = d.spawn("flood.py", "1", "20", "600", name="flood-b", capabilities=[])
    assert wait_until(lambda: (last_json_line(d, b) or {}).get("replies", {}).get("in_flight_total") == 20,
                      timeout=30)
    info = d.client.info()["syscalls"]
    assert info["in_flight"] == 100 and info["refused"] == 20
    d.client.kill(a)
    assert wait_until(lambda: d.client.info()["syscalls"]["in_flight"] == 0, timeout=10)


def test_mailbox_bytes_bound_refuses_and_keeps_what_was_queued(start_kernel) -> None:
    d = start_kernel(config={"mailbox_bytes": 64 * 1024})
    rx = d.spawn("sleeper.py", name="rx")
    big = "x" * (40 * 1024)
    d.client.send(rx, big)
    from agentix.sdk.errors import LimitExceeded

    with pytest.raises(LimitExceeded) as ei:
        d.client.send(rx, big)
    assert ei.value.data["limit"] == "mailbox_bytes"
    box = d.client.status(rx).raw["mailbox"]
    assert box["queued"] == 1 and 40 * 1024 < box["bytes"] <= 64 * 1024


# ---------------------------------------------------------------- 6: a private, writable /tmp
TMP_PROBE = r"""
import os, stat, errno
st = os.stat("/tmp")
with open("/tmp/x", "w") as f:
    f.write("hello")
back = open("/tmp/x").read()
written, err = 0, None
try:
    for i in range(64):
        with open(f"/tmp/fill{i}", "wb") as f:
            f.write(b"\0" * (512 * 1024))
        written += 512 * 1024
except OSError as e:
    err = errno.errorcode.get(e.errno)
result = {"mode": oct(stat.S_IMODE(st.st_mode)), "uid": st.st_uid, "back": back,
          "written": written, "err": err}
"""


def test_private_tmp_is_writable_sticky_and_sized_by_the_disk_limit(kernel) -> None:
    before = set(os.listdir("/tmp"))
    info = kernel.run("probe.py", TMP_PROBE, name="tmp-user", limits={"disk": "2M", "memory": "256M"})
    assert info.reason == "completed", kernel.client.logs(info.agent_id)[0]
    r = info.result
    assert r["mode"] == "0o1777" and r["back"] == "hello"
    assert r["err"] == "ENOSPC" and r["written"] <= 2 * 1024 * 1024  # the size limit holds
    # the host's /tmp did not get the agent's files
    assert not any(n.startswith("fill") or n == "x" for n in set(os.listdir("/tmp")) - before)


# ---------------------------------------------------------------- 4: output through a pipe
FD_PROBE = r"""
import errno, os, stat
def err(f):
    try:
        f()
        return None
    except OSError as e:
        return errno.errorcode.get(e.errno)
links = {}
for fd in os.listdir("/proc/self/fd"):
    try:
        links[fd] = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        pass
print("hello from the agent", flush=True)
result = {"fifo1": stat.S_ISFIFO(os.fstat(1).st_mode), "fifo2": stat.S_ISFIFO(os.fstat(2).st_mode),
          "trunc": err(lambda: os.ftruncate(1, 0)), "seek": err(lambda: os.lseek(1, 0, os.SEEK_SET)),
          "links": links}
"""


def test_agent_output_is_a_pipe_it_cannot_truncate_seek_or_trace_to_the_home(kernel) -> None:
    info = kernel.run("probe.py", FD_PROBE, name="fd-probe")
    assert info.reason == "completed", kernel.client.logs(info.agent_id)[0]
    r = info.result
    assert r["fifo1"] and r["fifo2"]
    assert r["trunc"] == "EINVAL" and r["seek"] == "ESPIPE"
    home = str(kernel.home.resolve())
    assert not any(home in link or "/logs/" in link for link in r["links"].values()), r["links"]
    # the kernel read the pipe and kept the output
    assert "hello from the agent" in kernel.client.logs(info.agent_id)[0]


PRINT_LINES = r"""
import sys
for i in range(int(N)):
    sys.stdout.write(f"line {i:06d} " + "x" * 90 + "\n")
sys.stdout.flush()
result = "done"
"""


def test_log_is_capped_keeping_the_newest_and_logs_say_when_they_cut(start_kernel) -> None:
    cap = 256 * 1024
    d = start_kernel(config={"log_max_bytes": cap})
    n = 20_000  # 2 MB of output, 8x the cap
    info = d.run("probe.py", "N = %d\n" % n + PRINT_LINES, name="chatty")
    assert info.reason == "completed", d.client.logs(info.agent_id)[0][-500:]
    on_disk = sum(p.stat().st_size for p in (d.home / "logs").glob(f"{info.agent_id}.log*"))
    assert on_disk <= cap + 2 * 64 * 1024, on_disk
    tail = d.client.call("agent.logs", agent_id=info.agent_id, tail=3)
    assert tail["data"].splitlines()[-1].startswith(f"line {n - 1:06d}")
    assert len(tail["data"].splitlines()) == 3 and tail["cut"] and tail["dropped"] > 0
    assert tail["offset"] == tail["size"] >= n * 102
    head = d.client.call("agent.logs", agent_id=info.agent_id, head=1)
    assert head["cut"] and head["start"] == head["dropped"] and not head["data"].startswith("line 000000")
    whole = d.client.call("agent.logs", agent_id=info.agent_id, offset=0)
    assert whole["cut"] and whole["start"] == whole["dropped"]  # the beginning was dropped: said so
    small = d.run("probe.py", "print('short'); result = 1", name="quiet")
    t = d.client.call("agent.logs", agent_id=small.agent_id, tail=10)
    assert t["data"] == "short\n" and not t["cut"] and t["dropped"] == 0
    with pytest.raises(Exception) as ei:
        d.client.call("agent.logs", agent_id=small.agent_id, tail=1, head=1)
    assert getattr(ei.value, "code", "") == "invalid_request"


def test_a_writer_is_never_blocked_forever_when_the_kernel_reader_goes_away(tmp_path) -> None:
    import asyncio
    import subprocess
    import sys

    from agentix.kernel.process import LogSink

    async def body() -> tuple[int | None, str]:
        sink = LogSink(tmp_path / "a.log", 128 * 1024)
        sink.start()
        child = subprocess.Popen(
            [sys.executable, "-c", "import sys\nwhile True: sys.stdout.write('y' * 4096)"],
            stdout=sink.write_fd, stderr=subprocess.PIPE)
        sink.close_write_end()
        await asyncio.sleep(0.5)       # it writes freely while the kernel reads
        sink.close()                   # the reader goes away (as when the kernel dies)
        for _ in range(100):
            if child.poll() is not None:
                break
            await asyncio.sleep(0.05)
        if child.poll() is None:
            child.kill()
            child.wait()
            return None, ""
        return child.returncode, child.stderr.read().decode(errors="replace")

    rc, err = asyncio.run(body())
    assert rc is not None and rc != 0, "the writer blocked after its reader went away"
    assert "BrokenPipeError" in err
    assert (tmp_path / "a.log").stat().st_size <= 128 * 1024 + 64 * 1024


# ---------------------------------------------------------------- 2: exec bounded
def _subtree(home: Path) -> dict[str, Path]:
    from agentix.sandbox.cgroups import detect, subtree_name

    return detect(subtree_name(home)).bases


CONCURRENT_EXECS = r"""
import json, os, socket
s = socket.socket(fileno=os.dup(int(os.environ["AGENTIX_FD"])))
batch = [{"jsonrpc": "2.0", "id": i, "method": "tool.call",
          "params": {"name": "exec", "args": {"argv": ["sleep", "2"]}}} for i in range(6)]
s.sendall(json.dumps(batch).encode() + b"\n")
buf = b""
while not buf.endswith(b"\n"):
    buf += s.recv(65536)
replies = json.loads(buf)
result = [r.get("error", {}).get("data", {}).get("limit") if "error" in r else r["result"]["exit_code"]
          for r in replies]
"""


def test_concurrent_execs_per_agent_are_capped_and_nested_in_the_agents_cgroup(start_kernel) -> None:
    d = start_kernel(config={"exec_per_agent": 4})
    aid = d.spawn("probe.py", CONCURRENT_EXECS, name="many-execs", capabilities=["exec: sleep"])
    bases = _subtree(d.home)
    base = next(iter(bases.values()))
    # while the runs sleep, their groups are inside the agent's own group, nowhere else
    assert wait_until(lambda: len([p for p in (base / aid).glob(f"{aid}-ex-*")]) == 4, timeout=20)
    assert not list(base.glob("*-ex-*"))
    info = d.client.wait(aid, timeout=60)
    assert info.reason == "completed", d.client.logs(aid)[0]
    assert sorted(info.result, key=str) == [0, 0, 0, 0, "exec_per_agent", "exec_per_agent"]
    assert not (base / aid).exists()  # the agent's group and the nested ones are gone


MEMORY_SHARED = r"""
hold = bytearray(32 << 20)
for i in range(0, len(hold), 4096):
    hold[i] = 1
r = k.call("tool.call", name="exec", args={"argv": ["python3", "-c",
           "b = bytearray(96 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint('survived')"]})
result = {"exit_code": r["exit_code"], "signal": r["signal"], "output": r["output"]}
"""


def test_an_exec_shares_the_agents_memory_limit(kernel) -> None:
    # alone, the exec (96 MiB + python) fits in 128 MiB; with the agent's 32 MiB it does not
    aid = kernel.spawn("probe.py", MEMORY_SHARED, name="mem-sharer", capabilities=["exec: python3"],
                       limits={"memory": "128M"})
    info = kernel.client.wait(aid, timeout=60)
    if info.reason == "completed":
        assert "survived" not in info.result["output"] and info.result["signal"] == 9, info.result
    else:  # the OOM killer may pick the agent instead: then the pair was bounded all the same
        assert info.reason == "oom", info.reason


def test_exec_and_web_fetch_timeouts_are_capped(kernel) -> None:
    from conftest import program  # noqa: F401

    res = run_calls(kernel, [
        ["tool.call", {"name": "exec", "args": {"argv": ["sleep", "0"], "timeout": 601}}],
        ["tool.call", {"name": "exec", "args": {"argv": ["sleep", "0"], "timeout": 1e300}}],
        ["tool.call", {"name": "web_fetch", "args": {"url": "https://example.com/", "timeout": 121}}],
        ["tool.call", {"name": "exec", "args": {"argv": ["sleep", "0"], "timeout": 5}}],
    ], name="timeouts", capabilities=["exec: sleep", "tool: web_fetch", "network: example.com"])
    assert [r.get("error") for r in res[:3]] == ["invalid_request"] * 3, res
    assert res[0]["data"]["field"] == "timeout" and res[2]["data"]["max"] == 120
    assert res[3]["ok"]["exit_code"] == 0


# ---------------------------------------------------------------- 5: one kernel's cgroups; restarts
def test_two_kernels_keep_to_their_own_cgroup_subtrees_across_a_restart(start_kernel) -> None:
    from conftest import Daemon

    a, b = start_kernel(), start_kernel()
    a_base, b_base = (next(iter(_subtree(x.home).values())) for x in (a, b))
    assert a_base != b_base and a_base.parent == b_base.parent
    a1 = a.spawn("sleeper.py", name="a-sleeper")
    b1 = b.spawn("sleeper.py", name="b-sleeper")
    b_pid = b.client.status(b1).pid
    assert (a_base / a1).is_dir() and (b_base / b1).is_dir()
    # restart A: its start-up sweep must not touch B's groups or B's agent
    a.stop()
    a2 = Daemon(a.home, a.isolation)
    try:
        assert b.client.status(b1).state == "running"
        assert (b_base / b1).is_dir() and b_pid in {int(x) for x in (b_base / b1 / "cgroup.procs").read_text().split()}
        assert not (a_base / a1).exists()
        a2.spawn("sleeper.py", name="a-again")
        assert b.client.status(b1).state == "running"
    finally:
        a2.stop()
    # a clean stop leaves no subtree behind (homes are many: tests, users)
    assert not any(base.exists() for base in _subtree(a.home).values())
    assert (b_base / b1).is_dir()


def test_after_kill_9_the_next_start_lists_the_agents_and_removes_their_cgroups(isolation_mode) -> None:
    import shutil

    from conftest import Daemon, short_tmp

    tmp = short_tmp()
    d = Daemon(tmp / "h", isolation_mode)
    try:
        _kill_9_and_restart(d)
    finally:
        if d.proc.poll() is None:
            d.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _kill_9_and_restart(d: Any) -> None:
    import signal as _signal

    from conftest import Daemon, pid_alive

    base = next(iter(_subtree(d.home).values()))
    parent = d.spawn("sleeper.py", name="left")
    pid = d.client.status(parent).pid
    assert (base / parent).is_dir()
    d.proc.send_signal(_signal.SIGKILL)
    d.proc.wait()
    assert wait_until(lambda: not pid_alive(pid), timeout=5)  # bwrap dies with its kernel
    d.client.close()
    d2 = Daemon(d.home, d.isolation)
    try:
        assert not (base / parent).exists()  # the empty group the dead kernel left is gone
        listed = {x.agent_id: x for x in d2.client.list(all=True)}
        assert listed[parent].state == "exited" and listed[parent].reason == "kernel_restart"
        st = d2.client.status(parent)
        assert st.reason == "kernel_restart" and st.raw["restored"] is True
        assert st.raw["name"] == "left"
        # the name is free again, and the restored record is not live
        again = d2.spawn("sleeper.py", name="left")
        assert d2.client.status(again).raw["name"] == "left"
        assert d2.client.info()["agents"]["live"] == 1
    finally:
        d2.stop()
        d.log.close()


def test_leftovers_are_matched_by_pid_and_start_time_never_by_command_line() -> None:
    import subprocess
    import sys

    from agentix.kernel.agent_rows import kill_leftovers as _kill_leftovers
    from agentix.kernel.process import proc_start_time
    from agentix.store.recovery import LeftAgent
    from conftest import pid_alive

    # an unrelated process whose command line even says "agentix bwrap"
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "agentix", "bwrap"],
                         start_new_session=True)
    try:
        st = proc_start_time(p.pid)
        assert st is not None
        _kill_leftovers([LeftAgent("ag-x", p.pid, p.pid, False, st + 1)])  # a reused pid
        _kill_leftovers([LeftAgent("ag-y", p.pid, p.pid, False, None)])    # nothing recorded
        time.sleep(0.2)
        assert p.poll() is None and pid_alive(p.pid)
        _kill_leftovers([LeftAgent("ag-z", p.pid, p.pid, False, st)])      # the recorded process
        assert p.wait(timeout=5) == -9
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


# ---------------------------------------------------------------- 3: archives and saved state have quotas
QUOTA_PROBE = r"""
blob, big = "m" * (300 * 1024), "v" * (400 * 1024)
summarise = {"kind": "context_summarised", "data": {"span": [0, 1], "messages": [blob], "summary": "s"}}
calls = [("loop.event", summarise)] * 4 + [
    ("agent.state_save", {"key": "a", "value": big}),
    ("agent.state_save", {"key": "b", "value": big}),
    ("agent.state_save", {"key": "c", "value": big}),
    ("agent.state_save", {"key": "a", "value": "small"}),   # replacing a key frees its bytes
    ("agent.state_save", {"key": "c", "value": big}),
    ("agent.state_load", {"key": "b"}),
]
result = []
for method, params in calls:
    try:
        r = k.call(method, **params)
        if method == "agent.state_load":
            r = {"len": len(r["value"])}
        result.append({"ok": r})
    except Exception as e:
        result.append({"error": e.code, "data": e.data})
"""


def test_context_archives_and_saved_state_stop_at_their_quotas(start_kernel) -> None:
    d = start_kernel(config={"archive_quota": 1024 * 1024, "state_quota": 1024 * 1024})
    info = d.run("probe.py", QUOTA_PROBE, name="hoarder")
    assert info.reason == "completed", d.client.logs(info.agent_id)[0]
    res = info.result
    assert [("ok" in r) for r in res[:4]] == [True, True, True, False], res[:4]
    assert res[3]["error"] == "limit_exceeded" and res[3]["data"]["limit"] == "archive_quota"
    files = list((d.home / "archive" / info.agent_id).iterdir())
    assert len(files) == 3 and sum(f.stat().st_size for f in files) <= 1024 * 1024  # nothing written
    assert "ok" in res[4] and "ok" in res[5]
    assert res[6]["error"] == "limit_exceeded" and res[6]["data"]["limit"] == "state_quota"
    assert "ok" in res[7] and "ok" in res[8]
    assert res[9]["ok"]["len"] == 400 * 1024  # the refusals changed nothing


# ---------------------------------------------------------------- properties of the bounded pieces
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(chunks=st.lists(st.binary(min_size=0, max_size=70_000).map(lambda b: b.replace(b"\n", b"")) |
                       st.sampled_from([b"a\n", b"\n", b"line\nline\n" * 500]), max_size=30),
       tail=st.integers(0, 50), head=st.integers(0, 50), offset=st.integers(0, 600_000),
       max_bytes=st.integers(1, 300_000))
def test_log_cap_keeps_a_suffix_and_every_read_is_a_slice_of_what_was_written(
        tmp_path_factory, chunks, tail, head, offset, max_bytes) -> None:
    from agentix.kernel.process import LogSink, read_log

    path = tmp_path_factory.mktemp("log") / "a.log"
    cap = 128 * 1024
    sink = LogSink(path, cap)
    sink._open_file()
    for c in chunks:
        if c:
            sink.take(c)
    sink.close()
    stream = b"".join(chunks)
    on_disk = sum(p.stat().st_size for p in path.parent.glob("a.log*") if not p.name.endswith(".cut"))
    assert on_disk <= cap + 2 * 70_000  # each file may pass half the cap by one chunk
    for kw in ({"tail": tail}, {"head": head}, {"offset": offset}):
        r = read_log(path, max_bytes=max_bytes, **kw)
        assert r["size"] == len(stream) and r["dropped"] + on_disk == len(stream)
        assert r["data"] == stream[r["start"]:r["offset"]]        # always the real bytes, in place
        assert len(r["data"]) <= max_bytes and r["start"] >= r["dropped"]
        if "tail" in kw:
            assert r["offset"] == len(stream)
            assert r["cut"] == (r["start"] > 0)
        if "offset" in kw:
            assert r["cut"] == (offset < r["dropped"])
            assert r["more"] == (r["offset"] < len(stream))


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.one_of(st.tuples(st.just("put"), st.integers(0, 400)),
                              st.tuples(st.just("get"), st.just(0))), max_size=60),
       max_bytes=st.integers(1, 1000), capacity=st.integers(1, 8))
def test_mailbox_never_holds_more_than_its_bytes_and_a_refusal_changes_nothing(ops, max_bytes, capacity) -> None:
    from agentix.core.errors import LimitExceeded
    from agentix.core.mailbox import BoundedFifo

    box: BoundedFifo[int] = BoundedFifo(capacity, owner="rx", max_bytes=max_bytes)
    model: list[tuple[int, int]] = []
    for i, (op, size) in enumerate(ops):
        if op == "put":
            before = (box.bytes, len(box))
            if sum(s for _, s in model) + size > max_bytes or len(model) >= capacity:
                try:
                    box.put(i, size)
                    raise AssertionError("a put over the bound was accepted")
                except LimitExceeded:
                    pass
                assert (box.bytes, len(box)) == before
            else:
                box.put(i, size)
                model.append((i, size))
        else:
            got = box.get()
            assert got == (model.pop(0)[0] if model else None)
        assert box.bytes == sum(s for _, s in model) <= max_bytes


@settings(max_examples=40, deadline=None)
@given(frames=st.lists(st.integers(1, 12), min_size=1, max_size=25),
       per_connection=st.integers(1, 16), batch=st.integers(1, 10), total=st.integers(1, 24),
       connections=st.integers(1, 3))
def test_rpc_never_runs_more_than_its_bounds_and_answers_every_request_once(
        frames, per_connection, batch, total, connections) -> None:
    """The real channel server on real sockets, handlers that block until released: at no
    moment do more requests run than the per-connection or the shared bound allows, and every
    request gets exactly one reply (its result or a refusal)."""
    import asyncio
    import socket

    from agentix.rpc.server import InFlight, InFlightLimits, serve_socket

    async def body() -> None:
        shared = InFlight(InFlightLimits(per_connection=per_connection, batch=batch, total=total))
        release = asyncio.Event()
        running = {"now": 0, "max": 0}
        per_conn_now = [0] * connections
        per_conn_max = [0] * connections

        def handler_for(c: int):  # noqa: ANN202
            async def handler(method: str, params: dict) -> Any:
                running["now"] += 1
                per_conn_now[c] += 1
                running["max"] = max(running["max"], running["now"])
                per_conn_max[c] = max(per_conn_max[c], per_conn_now[c])
                try:
                    await release.wait()
                finally:
                    running["now"] -= 1
                    per_conn_now[c] -= 1
                return params["n"]
            return handler

        pairs = [socket.socketpair() for _ in range(connections)]
        servers = [asyncio.create_task(serve_socket(k_, handler_for(c), in_flight_total=shared))
                   for c, (k_, _) in enumerate(pairs)]
        loop = asyncio.get_running_loop()
        expected: list[set[int]] = []
        for c, (_, peer) in enumerate(pairs):
            peer.setblocking(False)
            ids: set[int] = set()
            n = 0
            data = b""
            for size in frames:
                reqs = []
                for _ in range(size):
                    n += 1
                    ids.add(n)
                    reqs.append({"jsonrpc": "2.0", "id": n, "method": "m", "params": {"n": n}})
                data += json.dumps(reqs if size > 1 else reqs[0]).encode() + b"\n"
            expected.append(ids)
            loop.create_task(loop.sock_sendall(peer, data))
        await asyncio.sleep(0.2)
        assert running["max"] <= total
        assert all(m <= per_connection for m in per_conn_max), (per_conn_max, per_connection)
        release.set()
        for c, (_, peer) in enumerate(pairs):
            oversized = [size for size in frames if size > min(batch, per_connection)]  # refused whole
            answered: set[int] = set()
            refused_whole = 0
            buf = b""
            while len(answered) + refused_whole < len(expected[c]):
                chunk = await asyncio.wait_for(loop.sock_recv(peer, 65536), 10)
                assert chunk, "connection closed early"
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    rep = json.loads(line)
                    for r in rep if isinstance(rep, list) else [rep]:
                        if r["id"] is None:  # a batch over the limit: one error for all of it
                            assert r["error"]["data"]["limit"] == "batch"
                            refused_whole += oversized.pop(0)
                            continue
                        assert r["id"] not in answered, "two replies to one request"
                        answered.add(r["id"])
                        if "error" in r:
                            assert r["error"]["data"]["limit"] == "in_flight_total"
                        else:
                            assert r["result"] == r["id"]
            assert not oversized and answered <= expected[c]
            assert len(answered) + refused_whole == len(expected[c])
        for t in servers:
            t.cancel()
        await asyncio.gather(*servers, return_exceptions=True)
        for k_, peer in pairs:
            k_.close()
            peer.close()
        assert shared.current == 0

    asyncio.run(body())
