"""System calls of the kernel itself: ``kernel.info``, ``kernel.shutdown``, ``events.tail``,
``session.bind`` (operator)."""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any, Callable

from agentix.core.errors import InvalidRequest, NotFound
from agentix.kernel.dispatch import Call, Pipeline
from agentix.kernel.methods import method
from agentix.kernel.param_checks import optional, required
from agentix.store.audit_store import AuditEvents

__all__ = ["register"]

FACE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def register(pipeline: Pipeline, *, info: Callable[[], dict[str, Any]], shutdown_requested: asyncio.Event,
             log: AuditEvents | None) -> None:
    """``log``: the audit log's events as stored (``events.tail`` reads what was recorded);
    None for a kernel with a test sink (``events.tail`` is then not found)."""

    async def kernel_info(call: Call) -> dict[str, Any]:
        return info()

    async def kernel_shutdown(call: Call) -> dict[str, Any]:
        shutdown_requested.set()
        return {"stopping": True, "pid": os.getpid()}

    async def events_tail(call: Call) -> dict[str, Any]:
        if log is None:
            raise NotFound("this kernel's event sink has no tail; use audit.tail")
        after = optional(call.params, "after", int, "a sequence number", 0)
        wait = optional(call.params, "wait", (int, float), "seconds", 0)
        limit = optional(call.params, "limit", int, "a count", 1000)
        if not 1 <= limit <= 10_000:  # read in the kernel's loop: a bounded page, like audit.tail
            raise InvalidRequest('"limit" must be between 1 and 10000 (page with "after")', field="limit")
        kw = dict(after=after, agent=call.params.get("agent"), kind=call.params.get("kind"), limit=limit)
        await log.sync()  # see the caller's own no-effect records
        found = log.tail(**kw)
        if not found and wait:
            await log.wait_for_new(min(float(wait), 60.0))
            found = log.tail(**kw)
        return {"events": found}

    async def session_bind(call: Call) -> dict[str, Any]:
        """Name this operator connection's face for the audit log, optionally read-only
        (``dispatch.OperatorSession`` holds the result; it only narrows)."""
        if call.caller.is_face:
            raise InvalidRequest(f"this connection is already bound as {call.caller.label()!r}; a "
                                 "connection binds once (open a new one)", field="face")
        face = required(call.params, "face", str, "the face's name, e.g. mcp")
        if not FACE_NAME.fullmatch(face) or face == "operator":
            raise InvalidRequest(f'"face" must be a short lowercase name such as mcp (1-32 of a-z, 0-9, '
                                 f'- and _, not "operator"), got {face!r}', field="face")
        read_only = optional(call.params, "read_only", bool, "true or false", False)
        call.event_data = {"face": face, "read_only": read_only}
        # what this connection may call from now on, derived from the method table's policies
        allowed = {spec.name: spec.policy.durability for spec in pipeline.specs() if spec.operator
                   and not (read_only and spec.policy.durability == "effect")}
        return {"caller": face, "read_only": read_only, "methods": allowed}

    for name, fn in [("kernel.info", kernel_info), ("kernel.shutdown", kernel_shutdown),
                     ("events.tail", events_tail), ("session.bind", session_bind)]:
        pipeline.register(method(name, fn, operator=True))
