"""``EventSink``: what every service records through (one method, ``record``).

The kernel's sink is the audit log's (``store/audit_store.AuditEvents``), wrapped by the vault's
redaction (``vault.RedactingSink``) and the per-caller quota (``record_gate.RecordGate``).
The wrappers only write; reading the log (``tail``, ``sync``, ``wait_for_new``) is the log's,
``KernelRoot.audit.sink``. ``dispatch`` re-exports the name, where the services import it from.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["EventSink"]


class EventSink(Protocol):
    async def record(
        self, kind: str, agent_id: str | None, data: dict[str, Any], taint: tuple[str, ...] = (),
        *, durable: bool = True,
    ) -> Any: ...
