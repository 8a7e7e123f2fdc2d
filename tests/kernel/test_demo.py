"""`agentix demo` runs end to end against a kernel it starts itself, passes, and is quick
(the team row, then ten agents sharing the model)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

from conftest import pids_in_groups, short_tmp

def _audit(home: Path) -> list[dict]:
    """Every entry of the kernel's audit log (agentix.db), read offline."""
    import io

    from agentix.sdk.audit import export_file

    buf = io.BytesIO()
    export_file(home / "agentix.db", buf)
    return [json.loads(line) for line in buf.getvalue().splitlines()]



def test_demo_passes_end_to_end_in_under_60_seconds() -> None:
    tmp = short_tmp()
    home = tmp / "demo"
    try:
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "agentix.cli.main", "demo", "--home", str(home), "--json"],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        elapsed = time.monotonic() - t0
        assert r.returncode == 0, (r.stdout, r.stderr)
        figures = json.loads(r.stdout.strip().splitlines()[-1])
        assert figures["ok"] is True
        assert figures["team"]["coordinator"] == "completed"
        assert figures["team"]["workers"] == ["completed", "completed", "crashed"]
        # ten real agent processes shared the default model with weighted fair shares
        assert figures["llm"]["ok"] is True and figures["llm"]["fairness"] >= 0.9
        assert len(figures["llm"]["shares"]) == 10
        assert elapsed < 60, f"the demo took {elapsed:.1f}s"
        # it stopped the kernel it started, and every agent with it
        assert not (home / "agentixd.sock").exists() and not (home / "agentixd.pid").exists()
        spawned = [e["data"] for e in _audit(home) if e["kind"] == "agent.spawned"]
        team = {d["pid"] for d in spawned
                if d["name"] in ("coordinator", "worker", "worker-1", "worker-2", "worker-3")}
        pids = {d["pid"] for d in spawned}  # the team and the later sections' agents
        assert len(team) == 4 and not pids_in_groups(pids)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
