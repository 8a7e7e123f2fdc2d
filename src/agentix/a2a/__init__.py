"""A2A (the Agent2Agent protocol, through ``a2a-sdk``): an agentix agent published as an A2A
server (``agentix.a2a.server``, ``agentix a2a serve``). Calling remote A2A agents from an
agent is the kernel tool ``a2a_call`` (``agentix.tools.a2a_call``).

Imports ``a2a-sdk`` only when a module here is imported (``pip install agentix[a2a]``).
"""

from __future__ import annotations

__all__: list[str] = []
