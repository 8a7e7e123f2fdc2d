"""The operator's socket appears only once everything the kernel was started with answers:
`agentix up --http` (and every client, tests/conftest.py's Daemon too) takes the socket as
"the kernel is up" and then prints or uses the HTTP address. Before, the daemon opened the
socket first and then started the HTTP server: the address it reported refused connections
for a while (and a failed HTTP start came after `up` had said the kernel was running).
The test slows the HTTP start by a second in a real daemon process: on the old code the
socket is there while the HTTP port still refuses; it fails on the old code."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

from _ports import free_port
from conftest import short_tmp

SLOW_HTTP = textwrap.dedent("""
    import asyncio, json, os, signal, socket, time
    from pathlib import Path
    from agentix.kernel import http_api
    from agentix.kernel.daemon import run_kernel
    from agentix.kernel.home import Home

    real = http_api.start_http

    async def slow_start(*a, **kw):  # a slow bind (a loaded host): the window held open
        await asyncio.sleep(1.0)
        return await real(*a, **kw)

    http_api.start_http = slow_start
    home = Home(Path({home!r}))

    def http_answers():
        try:
            with socket.create_connection(("127.0.0.1", {port}), timeout=1):
                return True
        except OSError:
            return False

    async def main():
        ready = asyncio.Event()
        task = asyncio.create_task(run_kernel(home, {{"isolation": "degraded"}}, ready=ready,
                                              http=("127.0.0.1", {port})))
        for _ in range(3000):
            if home.socket.exists() or task.done():
                break
            await asyncio.sleep(0.005)
        print(json.dumps({{"socket": home.socket.exists(), "http": http_answers()}}), flush=True)
        await asyncio.wait_for(ready.wait(), 60)  # its signal handlers are in place
        os.kill(os.getpid(), signal.SIGTERM)
        await task

    asyncio.run(main())
""")


def test_the_socket_appears_only_once_the_http_api_answers():
    home = short_tmp("axup-")
    try:
        out = subprocess.run([sys.executable, "-c", SLOW_HTTP.format(home=str(home / "h"), port=free_port())],
                             capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["socket"], out.stderr[-2000:]
    assert got["http"], "the operator's socket was there while the HTTP API still refused connections"
    assert out.returncode == 0, out.stderr[-2000:]
