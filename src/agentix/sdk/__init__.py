"""agentix SDK: ``agentix.sdk.agent`` for agent programs, ``Kernel`` for operators."""

from agentix.sdk.kernel import AgentInfo, Kernel, SpawnResult

__all__ = ["AgentInfo", "Kernel", "SpawnResult"]
