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
