"""Agent lifecycle: the states of an agent and the transitions between them, as a table.

    spawning ──► running ◄──► paused
        │           │            │
        └──────► stopping ◄──────┘
        │           │
        └─────────► exited   (terminal; the record outlives the process)

Any live state may go straight to ``exited`` (the process died on its own). Exit reasons
say why: ``completed`` (exit status 0), ``crashed`` (non-zero status or an unexpected
signal), ``killed`` (stopped by the operator or a parent), ``oom`` (memory limit),
``timeout`` (wall-clock limit), ``budget_exceeded``, ``spawn_failed``,
``isolation_failed`` (the host's own check of a new agent's confinement disagreed with
what the agent reported; it was killed before it was marked running),
``kernel_restart`` (the kernel died while it ran).
"""

from __future__ import annotations

from typing import Literal

from agentix.core.errors import StateError

__all__ = ["EXIT_REASONS", "LIVE_STATES", "State", "ExitReason", "check_transition", "exit_reason"]

State = Literal["spawning", "running", "paused", "stopping", "exited"]
ExitReason = Literal[
    "completed", "crashed", "killed", "oom", "timeout", "budget_exceeded", "spawn_failed",
    "isolation_failed", "kernel_restart",
]
EXIT_REASONS: tuple[str, ...] = ExitReason.__args__  # type: ignore[attr-defined]
LIVE_STATES: frozenset[str] = frozenset({"spawning", "running", "paused", "stopping"})

_TRANSITIONS: dict[str, frozenset[str]] = {
    "spawning": frozenset({"running", "stopping", "exited"}),
    "running": frozenset({"paused", "stopping", "exited"}),
    "paused": frozenset({"running", "stopping", "exited"}),
    "stopping": frozenset({"exited"}),
    "exited": frozenset(),
}


def check_transition(current: str, new: str, agent: str = "") -> None:
    """Raise StateError unless ``current -> new`` is in the table."""
    if new not in _TRANSITIONS.get(current, frozenset()):
        who = f"agent {agent} " if agent else ""
        raise StateError(
            f"{who}is {current}; it cannot become {new}",
            state=current,
            requested=new,
        )


def exit_reason(
    code: int | None,
    signal: int | None,
    *,
    requested: str | None = None,
    oom: bool = False,
) -> str:
    """Classify how a process ended.

    ``requested`` is the reason the kernel itself ended it for (``killed``, ``timeout``,
    ``budget_exceeded``), if it did; an OOM kill wins over everything else because it
    explains the death best.
    """
    if oom:
        return "oom"
    if requested is not None:
        return requested
    if code == 0 and signal is None:
        return "completed"
    return "crashed"
