"""What every framework adapter needs from the kernel's tool catalogue (no framework imported
here): the agent's kernel, the tools to wrap, and a tool result as the text a model reads."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from agentix.sdk import agent as _agent

__all__ = ["as_text", "kernel_of", "selected_tools"]


def kernel_of(k: Any) -> _agent.AgentKernel:
    """``k``, or this agent's own connection to the kernel."""
    return k if k is not None else _agent.connect()


def selected_tools(k: Any, names: Sequence[str] | None) -> list[dict[str, Any]]:
    """The catalogue entries (``name``, ``description``, ``input_schema``) of ``names`` — each
    must exist in the kernel's catalogue — or of every tool the agent's grants allow."""
    catalogue = {t["name"]: t for t in k.tools.list()}
    if names is None:
        names = [n for n in k.info().get("tools", []) if n in catalogue]
    missing = [n for n in names if n not in catalogue]
    if missing:
        raise ValueError(f"no kernel tool named {missing[0]!r}; the kernel has {sorted(catalogue)}")
    return [catalogue[n] for n in names]


def as_text(result: Any) -> str:
    """A tool's result as the text a model reads (a string as it is, anything else as JSON)."""
    return result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)
