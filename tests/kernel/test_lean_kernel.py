"""The kernel starts without the libraries only some calls need (numpy, httpx and its CLI's).

Every daemon start (each test's kernel, ``agentix up``) paid ~0.3 s of CPU for numpy (memory
search) and httpx with the CLI it drags in (rich, click, pygments), used by outbound requests
only. They load at first use (``memory.store``, ``net/pinned_httpx``); this
test pins that by the modules a started kernel holds, not by time (bench/cli_start.py and a
start loop measure the time).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

from conftest import short_tmp

#: what a kernel needs only for some calls: memory (numpy), outbound HTTP (httpx, and the
#: CLI libraries httpx's own ``main`` imports). (yaml is not here: the bundled skills' front
#: matter is read at start.)
HEAVY = ("numpy", "httpx", "httpcore", "rich", "click", "pygments")

START_AND_USE = textwrap.dedent("""
    import asyncio, json, os, signal, sys
    from pathlib import Path
    from agentix.kernel.daemon import run_kernel
    from agentix.kernel.home import Home

    HEAVY = {heavy!r}

    def loaded():
        return sorted(m for m in HEAVY if m in sys.modules)

    async def main():
        ready = asyncio.Event()
        task = asyncio.create_task(run_kernel(Home(Path({home!r})), {{"isolation": "degraded"}}, ready=ready))
        await ready.wait()
        started = loaded()
        # first use loads them: memory search, an outbound request's URL check
        from agentix.memory.store import _signs
        from agentix.kernel.a2a_push import _target
        _signs([[1.0, -1.0]])
        _target("https://example.com/hook")
        print(json.dumps({{"started": started, "used": loaded()}}))
        os.kill(os.getpid(), signal.SIGTERM)
        await task

    asyncio.run(main())
""")


def test_a_started_kernel_has_not_imported_what_only_some_calls_need():
    home = short_tmp("axlean-")
    try:
        out = subprocess.run([sys.executable, "-c", START_AND_USE.format(heavy=HEAVY, home=str(home))],
                             capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["started"] == [], f"the kernel imported {got['started']} at start"
    # and each loads when its call comes (so the check above is not vacuous)
    assert {"numpy", "httpx"} <= set(got["used"]), got["used"]
