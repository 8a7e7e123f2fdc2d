"""The typed errors SDK calls raise; they mirror the kernel's stable error codes.

They are the same classes as ``agentix.core.errors`` (re-exported here so that agent and
operator programs import from the SDK only). Catch ``AgentixError`` for all of them, or a
specific one, e.g. ``CapabilityDenied``; ``err.code`` is the stable string code and
``err.data`` the structured details. Each code has exactly one class (``CLASSES``);
``ConnectionClosed`` and ``KernelNotRunning`` are the SDK's own (the kernel never sends
them).
"""

from agentix.core.errors import *  # noqa: F401,F403
from agentix.core.errors import __all__ as _core_all

__all__ = [n for n in _core_all if n != "error_from_code"]
