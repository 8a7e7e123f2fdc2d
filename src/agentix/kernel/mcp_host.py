"""What the MCP servers and their tools use of the kernel, named.

The composition root (``kernel.KernelRoot``) builds one ``McpHost`` from its services and passes it
to ``mcp_tools.register``, which hands it to ``McpTools`` and each ``mcp_server.McpServer``
(``mcp_pins.PinStore`` gets its ``db`` only); nothing else of the kernel reaches the MCP code:

- a server's process is started like an agent's: a workspace and a log under ``home``, the
  limits and isolation setting of ``config``, on ``substrate``;
- its restart backoff, re-listing interval and notification rate are timed on ``clock`` (the
  kernel's one clock: a test's VirtualClock steps them);
- its life (started, exited) and its tools' pins and changes are recorded in ``events``;
- the pins are kept in ``db`` (table ``mcp_pins``; None: in memory only);
- an agent's ``mcp:`` grants are read from ``caps``, and its context in ``table`` is tainted by
  what a server answers.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentix.kernel.cap_service import CapabilityService
from agentix.kernel.clock import Clock
from agentix.kernel.config import KernelConfig
from agentix.kernel.dispatch import EventSink
from agentix.kernel.home import Home
from agentix.kernel.process import ProcessTable
from agentix.sandbox.base import Substrate
from agentix.store.db import Database

__all__ = ["McpHost"]


@dataclass(frozen=True)
class McpHost:
    """The kernel services the MCP code uses (see the module docstring for what each is for)."""

    home: Home
    config: KernelConfig
    substrate: Substrate
    events: EventSink
    db: Database | None
    caps: CapabilityService
    table: ProcessTable
    clock: Clock
