"""agentix SDK: ``agentix.sdk.agent`` for agent programs, ``Kernel`` for operators.

The operator client (``agentix.sdk.kernel``) loads on first use, so that an agent program's
``from agentix.sdk import agent`` imports only the small agent-side modules.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from agentix.sdk.kernel import AgentInfo, Kernel, SpawnResult

__all__ = ["AgentInfo", "Kernel", "SpawnResult"]


def __getattr__(name: str) -> object:
    if name in __all__:
        from agentix.sdk import kernel

        return getattr(kernel, name)
    raise AttributeError(f"module 'agentix.sdk' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
