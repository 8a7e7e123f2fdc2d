"""The plain backend: an ordinary child process in its own session. No isolation.

Used only when the operator explicitly accepts ``isolation: degraded``; every layer is
then reported missing, so nothing claims isolation that is not there.
"""

from __future__ import annotations

import asyncio
import os

from agentix.core.errors import IsolationUnavailable
from agentix.sandbox.base import ExitInfo, Handle, LaunchSpec, Substrate

__all__ = ["PlainSubstrate", "ALL_LAYERS"]

ALL_LAYERS = ["namespaces", "filesystem", "privileges", "no_new_privs", "rlimits", "landlock", "seccomp", "cgroups"]


class _PlainHandle(Handle):
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        super().__init__(pid=proc.pid, backend="plain", missing_layers=list(ALL_LAYERS))
        self._proc = proc

    async def wait(self) -> ExitInfo:
        rc = await self._proc.wait()
        if rc < 0:
            return ExitInfo(code=None, signal=-rc)
        return ExitInfo(code=rc, signal=None)

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stats(self) -> dict[str, object]:
        try:
            with open(f"/proc/{self.pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"VmRSS:"):
                        return {"memory_rss_bytes": int(line.split()[1]) * 1024}
        except OSError:
            pass
        return {}


class PlainSubstrate(Substrate):
    name = "plain"

    async def _spawn(self, spec: LaunchSpec) -> Handle:
        if not spec.degraded_ok:  # refuse before anything of the agent runs
            raise IsolationUnavailable(
                f"cannot isolate agent {spec.name}: the plain backend provides no isolation layer; "
                "set `isolation: degraded` to run it anyway", layer=ALL_LAYERS[0], missing=list(ALL_LAYERS))
        log = (os.fdopen(os.dup(spec.output_fd), "wb", buffering=0) if spec.output_fd is not None
               else open(spec.log_path, "ab", buffering=0))
        try:
            proc = await asyncio.create_subprocess_exec(
                *spec.argv,
                cwd=str(spec.workspace),
                env=spec.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(spec.channel_fd,),
                start_new_session=True,
            )
        finally:
            log.close()
        return _PlainHandle(proc)

    def describe(self) -> dict[str, object]:
        return {"backend": self.name, "missing_layers": list(ALL_LAYERS)}


