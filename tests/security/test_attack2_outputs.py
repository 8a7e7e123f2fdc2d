"""Attack round 2: a sandboxed process that is not an agent — a declared MCP server (its code
is the attacker's), a package's ``run`` build step (a hostile Agentfile) — used to get a file
of the kernel's home as its stdout/stderr (``LaunchSpec.log_path`` opened O_APPEND and handed
over), so a flood of output grew ``$AGENTIX_HOME`` without bound. An agent's output has always
gone through a pipe the kernel reads (``LogSink``, ``log_max_bytes``); now every sandboxed
process's does: the class is "a sandboxed process never holds a kernel file"."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

from packages.conftest import make_context  # noqa: E402
from packages.test_build_run import with_run  # noqa: E402
from security.test_session3_mcp import call, declare, mcp_kernel, run_calls  # noqa: E402,F401

CAP = 65536
CHUNK = 64 * 1024  # kernel/process.py's read size: the log rotates at cap/2, one chunk late at most


def _kernel_files(home: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in home.glob(pattern) if p.is_file())


def test_mcp_server_flooding_its_stderr_cannot_grow_a_kernel_file(mcp_kernel) -> None:
    k = mcp_kernel(f"[kernel]\nlog_max_bytes = {CAP}\n\n" + declare("raw", "stderrflood"))
    out = run_calls(k, [call("mcp__raw__ok")], ["mcp: raw/*"])
    assert out[0]["ok"]["text"] == "called ok"   # the server still works
    # 16 MiB written to stderr; the kernel kept the newest log_max_bytes
    size = _kernel_files(k.home / "logs", "mcp-raw.log") + _kernel_files(k.home / "logs", "mcp-raw.log.1")
    assert 0 < size <= CAP + 2 * CHUNK, size
    tail = (k.home / "logs" / "mcp-raw.log").read_bytes()
    assert set(tail) <= {ord("E")}


def test_a_build_step_flooding_its_output_cannot_grow_a_kernel_file(start_kernel: Any, tmp_path: Path) -> None:
    k = start_kernel()
    flood = ("import sys, time\nfor _ in range(48): sys.stdout.write('x' * (1 << 20))\n"
             "sys.stdout.flush(); time.sleep(3)\n")
    ctx = with_run(make_context(tmp_path / "ctx"), "python3", "-c", flood)
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _kernel_files(k.home, "exec/*"))
            time.sleep(0.05)

    t = threading.Thread(target=watch)
    t.start()
    try:
        r = k.client.call("package.build", context=str(ctx), tag="team/flood:1.0.0")
    finally:
        done.set()
        t.join()
    assert r["digest"]
    assert peak[0] <= 1 << 20, peak[0]   # 48 MiB printed; nothing of it held in a kernel file


def test_every_launch_outside_the_sandbox_package_hands_over_a_pipe_not_a_kernel_file() -> None:
    """The class, held structurally: every ``LaunchSpec`` built above ``sandbox/`` (agents,
    exec, MCP servers, build steps, whatever comes next) passes ``output_fd``. Only the warm
    pool's own worker (``sandbox/warm.py``: the kernel's code, before any agent is given to it,
    which then gets the agent's pipe) writes to ``log_path``."""
    import ast

    import agentix

    src = Path(agentix.__file__).parent
    missing = []
    found = 0
    for path in sorted(src.rglob("*.py")):
        if path.relative_to(src).parts[0] == "sandbox":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "LaunchSpec":
                found += 1
                if not any(kw.arg == "output_fd" for kw in node.keywords):
                    missing.append(f"{path.relative_to(src)}:{node.lineno}")
    assert found >= 4  # agents, exec, MCP servers, build steps
    assert not missing, f"LaunchSpec without output_fd (the process would hold a kernel file): {missing}"
