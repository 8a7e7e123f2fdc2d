"""The substrate interface: how the kernel starts, signals, waits for and measures agents.

A backend implements ``Substrate._spawn``; everything else the kernel needs is on the
``Handle`` it returns. Only ``agentix.core.errors.AgentixError`` subclasses escape
``Substrate.spawn`` (python-tuf's ``fetch`` over ``_fetch``): ``IsolationUnavailable`` (or
its ``LayerError``s) when a required layer cannot be applied, and for anything else the
backend let out (an ``OSError`` from starting the process) an ``IsolationUnavailable``
naming the backend — the agent did not start, and the kernel log has the details.

Backends: ``plain`` (an unconfined child process — only with ``isolation: degraded``),
``bwrap`` (namespaces, Landlock, seccomp, cgroups; the default). A Ray backend can come
later behind the same two classes.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentix.core.errors import AgentixError, IsolationUnavailable
from agentix.core.manifest import Limits

__all__ = ["ExitInfo", "Handle", "LaunchSpec", "RecordEvent", "Substrate"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LaunchSpec:
    """Everything a backend needs to start one agent process."""

    agent_id: str
    name: str
    argv: list[str]            # argv as seen inside the sandbox (cwd = workspace)
    workspace: Path            # host path of the agent's writable workspace
    env: dict[str, str]        # the complete environment (nothing else is inherited)
    channel_fd: int            # the child's end of the kernel socketpair (kept at this number)
    log_path: Path             # where output goes if no output_fd is given (host path)
    limits: Limits
    network: bool = False      # loopback-only namespace when False
    # with network False: inet sockets still allowed (seccomp, Landlock), inside the sandbox's
    # own network namespace, where only its loopback exists — a build step whose declared
    # hosts the kernel's build proxy serves over a unix socket (kernel/build_proxy.py)
    loopback_inet: bool = False
    degraded_ok: bool = False  # operator accepted running with missing layers
    extra_ro_paths: tuple[Path, ...] = ()
    # the write end of a pipe the kernel reads: becomes the child's stdout and stderr, so the
    # child never holds a kernel file (kernel/process.py LogSink); None: append to log_path
    output_fd: int | None = None
    # run inside this handle's resource group (an agent's exec: its limits bound both)
    within: Handle | None = None


@dataclass(frozen=True)
class ExitInfo:
    code: int | None           # exit status if it exited
    signal: int | None         # terminating signal if it was killed
    oom: bool = False          # the memory controller killed it


@dataclass
class Handle(abc.ABC):
    pid: int
    backend: str
    missing_layers: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    warm: bool = False  # started by handing a program to a pre-confined worker (sandbox/warm.py)

    @abc.abstractmethod
    async def wait(self) -> ExitInfo:
        """Wait for the process to end (reaps it)."""

    @abc.abstractmethod
    def signal(self, sig: int) -> None:
        """Send ``sig`` to the agent's whole process group; no error if it is gone."""

    def stats(self) -> dict[str, object]:
        """Resource usage snapshot (memory, cpu, pids ...); empty if unknown."""
        return {}

    def freeze(self, frozen: bool) -> bool:
        """Freeze or thaw the whole agent; False if the backend cannot (caller uses signals)."""
        return False

    async def cleanup(self) -> None:
        """Release per-agent resources (cgroups ...) after the process has been reaped."""


#: ``async record(kind, agent_id, data)``: where a backend audits events of its own (a warm
#: worker that failed verification); the kernel passes its event sink's ``record`` when it
#: builds the backend (``kernel.select_substrate``), None in bare use
RecordEvent = Callable[[str, str | None, dict[str, Any]], Awaitable[Any]]


class Substrate(abc.ABC):
    name: str = "abstract"

    async def spawn(self, spec: LaunchSpec) -> Handle:
        """Start the agent process described by ``spec``; only the family leaves."""
        try:
            return await self._spawn(spec)
        except AgentixError:
            raise
        except Exception as err:  # noqa: BLE001 - the seam: one family leaves
            log.error("the %s backend could not start %s", self.name, spec.agent_id, exc_info=err)
            raise IsolationUnavailable(
                f"the {self.name} backend could not start the agent process "
                f"({type(err).__name__}: {getattr(err, 'strerror', None) or err}); see the kernel log",
                layer="substrate", backend=self.name) from None

    @abc.abstractmethod
    async def _spawn(self, spec: LaunchSpec) -> Handle:
        """Start the agent process described by ``spec`` (the backend's part of ``spawn``)."""

    def describe(self) -> dict[str, object]:
        """What this backend provides on this host (for kernel.info and doctor)."""
        return {"backend": self.name}

    async def warm(self) -> None:
        """Prepare for fast spawns (pre-started launchers ...); optional."""

    async def close(self) -> None:
        """Release what the backend holds that is not an agent's (idle launchers ...)."""
