"""Start and stop a real agentixd subprocess for a test (its home holds config.toml)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from agentix.sdk import Kernel

__all__ = ["ROOT", "start_daemon", "stop_daemon"]

ROOT = Path(__file__).resolve().parents[2]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "AGENTIX_MODEL"}
    env["AGENTIX_HOME"] = str(home)
    env["PYTHONPATH"] = str(ROOT / "src")
    return env


def start_daemon(home: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "agentix.kernel.daemon", "--home", str(home)],
                            env=_env(home), stdout=subprocess.DEVNULL, stderr=open(home / "d.log", "ab"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, (home / "d.log").read_text()
        try:
            with Kernel(home, connect_timeout=1.0) as k:
                k.info()
            return proc
        except Exception:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("the daemon did not come up: " + (home / "d.log").read_text())


def stop_daemon(home: Path, proc: subprocess.Popen) -> None:
    try:
        with Kernel(home) as k:
            k.shutdown()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


