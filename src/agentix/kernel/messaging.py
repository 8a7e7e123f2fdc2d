"""Messages between agents (and from the operator): envelopes, delivery, receipt.

A message carries the sender's taint plus ``agent_message``; receiving it taints the
receiver's context with those labels (DESIGN.md section 6).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from agentix.core.errors import NotFound
from agentix.kernel.clock import Clock
from agentix.kernel.dispatch import EventSink
from agentix.kernel.process import AgentRecord

__all__ = ["Messaging", "envelope_size"]


class Messaging:
    """Delivers into and receives from the agents' bounded mailboxes, recording both."""

    def __init__(self, events: EventSink, clock: Clock) -> None:
        self.events = events
        self.clock = clock  # dates the envelopes (a receive's timeout waits in real time: below)

    @staticmethod
    def envelope(sender: AgentRecord | None, message: Any, taint: set[str], sent_at: float) -> dict[str, Any]:
        return {
            "from": sender.agent_id if sender else None,
            "from_name": sender.name if sender else "operator",
            "message": message,
            "sent_at": sent_at,
            "taint": sorted(taint),
        }

    async def deliver(self, sender: AgentRecord | None, target: AgentRecord, message: Any) -> dict[str, Any]:
        if not target.live:
            raise NotFound(f"agent {target.name} ({target.agent_id}) has exited", agent=target.agent_id)
        taint = set(sender.taint) if sender else set()
        if sender is not None:
            taint.add("agent_message")
        env = self.envelope(sender, message, taint, self.clock.now())
        target.mailbox.put(env, envelope_size(env))
        target.mail_event.set()
        await self.events.record("message.sent", sender.agent_id if sender else None, {
            "to": target.agent_id, "to_name": target.name}, tuple(sorted(taint)))
        return {"delivered": True, "to": target.agent_id, "queued": len(target.mailbox)}

    async def receive(self, rec: AgentRecord, timeout: float) -> dict[str, Any] | None:
        """The next message, or None after ``timeout`` seconds of real time: it waits on another
        party (a live process), not on a deadline of the kernel's own."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            env = rec.mailbox.get()
            if env is not None:
                rec.taint |= set(env.get("taint", ()))
                await self.events.record("message.delivered", rec.agent_id,
                                         {"from": env["from"], "from_name": env["from_name"]},
                                         tuple(env.get("taint", ())))
                return env
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not rec.live:
                return None
            rec.mail_event.clear()
            try:
                await asyncio.wait_for(rec.mail_event.wait(), timeout=remaining)
            except asyncio.TimeoutError:
                return None


def envelope_size(envelope: dict[str, Any]) -> int:
    """What a queued message counts against its mailbox's byte limit (its JSON size)."""
    return len(orjson.dumps(envelope, default=str))

