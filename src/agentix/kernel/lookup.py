"""``Lookup``: all that the method table's resource functions and guards may read of the kernel.

Built once by the composition root (``KernelRoot.lookup``) and handed to each resource function
(``kernel/methods.py``) by the capability stage. A function given only this cannot change
the kernel or reach a service it was not meant to read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from agentix.core.hosts import HostPattern
from agentix.kernel.process import ProcessTable

__all__ = ["Lookup"]


@dataclass(frozen=True)
class Lookup:
    """The process table, the hosts each secret is bound to, and the default model."""

    table: ProcessTable
    secret_hosts: Mapping[str, tuple[HostPattern, ...]]
    default_model: Callable[[], str | None]
