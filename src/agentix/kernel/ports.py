"""The typed surface of the kernel that the MCP handlers still use.

That handler module (``mcp_tools``) still takes the kernel as one object; they type it with ``KernelServices`` (a Protocol the
composition root ``kernel.Kernel`` satisfies), not with ``Kernel`` itself, so no handler
imports the module that imports it (no import circle; ``tests/test_layering.py``). Every
attribute here is a service built once by the root; nothing is hung on later. The other
handler modules (``calls_*``, ``goals``, ``loop_events``) take the services they use as
parameters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from agentix.core.manifest import Manifest
from agentix.kernel.audit_log import KernelAudit
from agentix.kernel.cap_service import CapabilityService
from agentix.kernel.config import KernelConfig
from agentix.kernel.dispatch import EventSink, Pipeline
from agentix.kernel.home import Home
from agentix.kernel.inference import InferenceService
from agentix.kernel.process import AgentRecord, ProcessTable
from agentix.memory.store import MemoryStore
from agentix.packages.service import PackageStore
from agentix.sandbox.base import Substrate
from agentix.store.db import Database
from agentix.store.saved_state import StateStore
from agentix.tools.base import ToolRegistry

__all__ = ["KernelServices"]


class KernelServices(Protocol):
    """What the root (``kernel/kernel.py``) offers those handlers."""

    home: Home
    config: KernelConfig
    db: Database
    events: EventSink
    pipeline: Pipeline
    table: ProcessTable
    tools: ToolRegistry
    substrate: Substrate
    audit: KernelAudit | None
    caps: CapabilityService
    inference: InferenceService
    memory: MemoryStore
    state_store: StateStore
    packages: PackageStore
    packages_lock: asyncio.Lock

    async def spawn(self, manifest: Manifest, *, parent: AgentRecord | None = None, message: Any = None,
                    program_base: Path | None = None, seed: Path | None = None,
                    prepare: Callable[[AgentRecord], Awaitable[None]] | None = None) -> AgentRecord: ...

    async def pause(self, rec: AgentRecord) -> None: ...

    async def resume(self, rec: AgentRecord) -> None: ...

    async def deliver(self, sender: AgentRecord | None, target: AgentRecord, message: Any) -> dict[str, Any]: ...
