"""A kill -9 of the kernel right after effect calls are acknowledged loses none of them.

``file_write`` does not fsync the file it replaces (docs/audit.md, "What a written file
survives"): what keeps an acknowledged write across a ``kill -9`` is the OS page cache and
the atomic rename, and what keeps its record is the durable ``tool.invoked`` /
``tool.result`` pair. A real daemon, a real agent, a real SIGKILL.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
from pathlib import Path

from conftest import Daemon, short_tmp

WRITER = '''
from agentix.sdk import agent
k = agent.connect()
for i in range(40):
    k.tools.call("file_write", {"path": f"f{i}.txt", "content": f"v{i}-" + "x" * 100})
    k.tools.call("file_write", {"path": "same.txt", "content": f"round {i}"})
k.exit({"done": 40})
'''


def test_kill9_after_acknowledged_writes_loses_no_file_and_no_record(isolation_mode: str) -> None:
    tmp = short_tmp()
    d = Daemon(tmp / "h", isolation_mode)
    try:
        prog = tmp / "writer.py"
        prog.write_text(WRITER)
        aid = d.client.spawn({"name": "writer", "program": str(prog),
                              "capabilities": ["file_write: {workspace}/*"]}).agent_id
        info = d.client.wait(aid, timeout=120)
        assert info.reason == "completed", d.client.logs(aid)
        # every write was acknowledged: kill the kernel at once, no clean stop
        os.kill(d.proc.pid, signal.SIGKILL)
        d.proc.wait(timeout=30)
        d.client.close()
        d.log.close()

        ws = d.home / "workspaces" / aid
        for i in range(40):
            assert (ws / f"f{i}.txt").read_text() == f"v{i}-" + "x" * 100
        assert (ws / "same.txt").read_text() == "round 39"
        assert not [p.name for p in ws.iterdir() if p.name.endswith(".tmp")]  # no debris

        db = sqlite3.connect(f"file:{d.home / 'agentix.db'}?mode=ro", uri=True)
        rows = db.execute("SELECT kind, body FROM audit_entries WHERE agent = ? AND kind IN "
                          "('tool.invoked', 'tool.result') ORDER BY seq", (aid,)).fetchall()
        db.close()
        writes = [(k, b) for k, b in rows if b'"file_write"' in b]
        assert [k for k, _ in writes] == ["tool.invoked", "tool.result"] * 80
        assert all(b'"ok":true' in b for k, b in writes if k == "tool.result")
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
