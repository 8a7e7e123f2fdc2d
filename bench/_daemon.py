"""Start a throwaway kernel daemon for a benchmark (a real subprocess, like the tests)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agentix.sdk import Kernel
from agentix.sdk.errors import KernelNotRunning


class BenchKernel:
    def __init__(self, isolation: str = "degraded", config: dict[str, Any] | None = None,
                 args: tuple[str, ...] = (), extra_toml: str = "") -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="axb-", dir="/tmp"))
        self.home = self.tmp / "h"
        self.home.mkdir()
        if config or extra_toml:
            (self.home / "config.toml").write_text(
                ("[kernel]\n" + "".join(f"{k} = {v!r}\n" for k, v in config.items()) if config else "")
                + extra_toml)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentix.kernel.daemon", "--home", str(self.home), "--isolation", isolation,
             "--log-level", "WARNING", *args], stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.client = Kernel(self.home)
                break
            except KernelNotRunning:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.02)

    def close(self) -> None:
        try:
            self.client.shutdown()
            self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            shutil.rmtree(self.tmp, ignore_errors=True)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    i = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[i]
