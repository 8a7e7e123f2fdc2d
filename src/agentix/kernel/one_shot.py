"""One sandboxed run of a program: spawn, wait with a deadline, kill, collect capped output.

The one shape behind ``exec`` (kernel/net_exec.py) and a package build step
(kernel/packages_api.py). The kernel makes the child's channel (a socketpair it never reads:
the program is not an agent) and an output pipe it reads on its loop (the first ``cap`` bytes
kept, the rest read and dropped: the program never holds a kernel file), spawns the spec on the
substrate, waits at most ``timeout`` seconds and kills it after (``Timeout``) or when the
call is cancelled (the run never outlives its call), then releases
the channel, the pipe, the sandbox and the spec's ``log_path``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from agentix.core.errors import IsolationUnavailable, Timeout
from agentix.kernel.pipes import PipeReader
from agentix.sandbox.base import ExitInfo, LaunchSpec, Substrate

__all__ = ["CappedOutput", "Finished", "run_once"]


class CappedOutput(PipeReader):
    """A one-shot run's output: keeps the first ``cap`` bytes (and one more, to tell
    ``truncated``), drains the rest."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap
        self.data = bytearray()
        self.start()

    def take(self, data: bytes) -> None:
        room = self.cap + 1 - len(self.data)
        if room > 0:
            self.data += data[:room]


@dataclass(frozen=True)
class Finished:
    """How a run ended (it was not killed for its deadline: that is ``Timeout``)."""

    info: ExitInfo
    output: str         # the first ``cap`` bytes, decoded (undecodable bytes replaced)
    truncated: bool     # it wrote more than ``cap`` bytes
    duration_s: float


async def run_once(substrate: Substrate, launch: Callable[[int, int], LaunchSpec], *, timeout: float,
                   cap: int, what: str, program: str, require_full: bool = False,
                   on_start: Callable[[int], None] | None = None) -> Finished:
    """Run once the spec ``launch(channel_fd, output_fd)`` builds around the channel and the
    output pipe made here. ``what`` and ``program`` name the run in errors (``"exec"``, ``"git"``;
    ``"build step"``, ``"make"``). ``require_full``: a sandbox missing any isolation layer is killed before it is
    waited for, ``IsolationUnavailable`` naming the layers. ``on_start(pid)`` is told the
    sandbox's pid once it runs (the build proxy serves that process tree only)."""
    output = CappedOutput(cap)
    ksock, asock = socket.socketpair()
    os.set_inheritable(asock.fileno(), True)
    start = time.monotonic()
    try:
        spec = launch(asock.fileno(), output.write_fd)
        handle = await substrate.spawn(spec)
    except BaseException:
        ksock.close()
        output.close()
        raise
    finally:
        asock.close()
        output.close_write_end()
    try:
        if on_start is not None:
            on_start(handle.pid)
        if require_full and handle.missing_layers:
            handle.signal(signal.SIGKILL)
            await handle.wait()
            raise IsolationUnavailable(f"{what} runs only under full isolation; missing: "
                                       + ", ".join(handle.missing_layers), layers=handle.missing_layers)
        try:
            info = await asyncio.wait_for(asyncio.shield(handle.wait()), timeout=timeout)
        except asyncio.TimeoutError:
            handle.signal(signal.SIGKILL)
            await handle.wait()
            raise Timeout(f"{what} {program} was killed after {timeout:g} s", reason="timeout",
                          timeout=timeout, program=program) from None
        except asyncio.CancelledError:
            # the call was ended (its token revoked or expired, its caller gone, the kernel
            # stopping): the run ends with it, its whole process tree killed now
            handle.signal(signal.SIGKILL)
            await asyncio.shield(handle.wait())
            raise
    finally:
        ksock.close()
        await output.drained(2.0)  # what it printed last (its writers are gone with the sandbox)
        output.close()
        await handle.cleanup()
        spec.log_path.unlink(missing_ok=True)
    data = bytes(output.data)
    return Finished(info=info, output=data[:cap].decode("utf-8", errors="replace"),
                    truncated=len(data) > cap, duration_s=round(time.monotonic() - start, 3))
