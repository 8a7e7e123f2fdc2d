"""Attack round 2 on the warm pool (sandbox/warm.py): an agent run by a warm worker tries to
leave something behind for the agent that runs next — a file in /tmp or /dev/shm, a detached
process, an environment variable, a file in its workspace — and the next agent (another warm
worker) looks for all of it. Workers are single use, so nothing carries over; the test keeps
it so (an attack that held)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from pathlib import Path


from sandbox.test_warm_pool import _kernel, _ready, _run, needs_host

# the detached sleeper's argument, unique to this test process: the host scan below must find
# only this run's sleeper, never one of another test run on the same host
MARK = f"987.{secrets.randbelow(10**9):09d}"
LEAVER = f'''
import os, subprocess, time
from agentix.sdk import agent
k = agent.connect()
open("/tmp/leak", "w").write("secret from A")
try:
    open("/dev/shm/leak", "w").write("secret from A")
except OSError:
    pass
open("/workspace/leak", "w").write("secret from A")
os.environ["LEAK"] = "secret from A"
subprocess.Popen(["sleep", "{MARK}"], start_new_session=True, stdin=subprocess.DEVNULL,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
k.exit({{"pid": os.getpid()}})
'''
LOOKER = '''
import os, glob
from agentix.sdk import agent
k = agent.connect()
found = []
for pattern in ("/tmp/**", "/dev/shm/**", "/workspace/**"):
    # A's files are named exactly "leak" (a checkout under /tmp holds demo/.../leak.py)
    found += [p for p in glob.glob(pattern, recursive=True) if os.path.basename(p) == "leak"]
procs = []
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            procs.append(open(f"/proc/{d}/cmdline", "rb").read().replace(b"\\0", b" ").decode())
        except OSError:
            pass
k.exit({"found": found, "env": os.environ.get("LEAK"), "sleepers": [p for p in procs if "sleep" in p]})
'''


def _host_sleepers() -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if MARK.encode() in Path(f"/proc/{d}/cmdline").read_bytes():
                    out.append(int(d))
            except OSError:
                pass
    return out


@needs_host
def test_an_agent_cannot_leave_anything_for_the_next_warm_agent(tmp_path: Path) -> None:
    async def body():
        k = await _kernel(tmp_path, warm=2)
        try:
            (tmp_path / "a.py").write_text(LEAVER)
            (tmp_path / "b.py").write_text(LOOKER)
            await _ready(k, 2)
            a = await _run(k, tmp_path / "a.py")
            assert a.isolation["start"] == "warm" and a.exit.reason == "completed", a.log_path.read_text()
            for _ in range(100):  # the detached sleeper dies with A's sandbox
                if not _host_sleepers():
                    break
                await asyncio.sleep(0.05)
            left = _host_sleepers()
            await _ready(k, 1)
            b = await _run(k, tmp_path / "b.py")
            assert b.isolation["start"] == "warm", b.isolation
            return left, b.result, b.exit.reason
        finally:
            await k.shutdown(grace=1.0)

    left, seen, reason = asyncio.run(body())
    assert reason == "completed"
    assert left == []                      # nothing of A still runs on the host
    assert seen == {"found": [], "env": None, "sleepers": []}, json.dumps(seen)
