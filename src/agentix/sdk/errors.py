"""The typed errors SDK calls raise; they mirror the kernel's stable error codes.

They are the same classes as ``agentix.core.errors`` (re-exported here so that agent and
operator programs import from the SDK only). Catch ``AgentixError`` for all of them, or a
specific one, e.g. ``CapabilityDenied``; ``err.code`` is the stable string code and
``err.data`` the structured details.
"""

from agentix.core.errors import *  # noqa: F401,F403
from agentix.core.errors import __all__ as _core_all
from agentix.sdk.client import ConnectionClosed

__all__ = [*_core_all, "ConnectionClosed", "KernelNotRunning"]


class KernelNotRunning(ConnectionClosed):  # type: ignore[misc]
    """No kernel answers on the socket."""
