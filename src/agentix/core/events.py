"""Every kind of audit event the kernel produces, each with its one-line meaning.

The kind is a dotted string ``<subject>.<verb>``; it is part of the hashed entry, so these
strings never change meaning. ``KINDS`` maps each kind to its meaning; ``lag`` is not a
kind: it is the notice a slow live subscriber gets instead of the entries it missed.
"""

from __future__ import annotations

__all__ = [
    "AGENT_EXITED",
    "AGENT_PAUSED",
    "AGENT_RESUMED",
    "AGENT_SPAWNED",
    "APPROVAL_DENIED",
    "APPROVAL_EXPIRED",
    "APPROVAL_GRANTED",
    "APPROVAL_REQUESTED",
    "BUDGET_EXCEEDED",
    "BUDGET_WARNING",
    "CAPABILITY_DELEGATED",
    "CAPABILITY_DENIED",
    "CAPABILITY_GRANTED",
    "CAPABILITY_REVOKED",
    "CONTEXT_SUMMARISED",
    "CONTEXT_SUMMARY_FAILED",
    "ISOLATION_DEGRADED",
    "KERNEL_RECOVERED",
    "KERNEL_STARTED",
    "KERNEL_STOPPED",
    "KINDS",
    "LAG",
    "MEMORY_QUERIED",
    "MEMORY_STORED",
    "MESSAGE_DELIVERED",
    "MESSAGE_SENT",
    "TOOL_INVOKED",
    "TOOL_RESULT",
    "USAGE_REPORTED",
    "WORKER_REJECTED",
    "is_kind",
]

AGENT_SPAWNED = "agent.spawned"
AGENT_EXITED = "agent.exited"
AGENT_PAUSED = "agent.paused"
AGENT_RESUMED = "agent.resumed"
CAPABILITY_GRANTED = "capability.granted"
CAPABILITY_DENIED = "capability.denied"
CAPABILITY_REVOKED = "capability.revoked"
CAPABILITY_DELEGATED = "capability.delegated"
TOOL_INVOKED = "tool.invoked"
TOOL_RESULT = "tool.result"
MESSAGE_SENT = "message.sent"
MESSAGE_DELIVERED = "message.delivered"
APPROVAL_REQUESTED = "approval.requested"
APPROVAL_GRANTED = "approval.granted"
APPROVAL_DENIED = "approval.denied"
APPROVAL_EXPIRED = "approval.expired"
USAGE_REPORTED = "usage.reported"
BUDGET_WARNING = "budget.warning"
BUDGET_EXCEEDED = "budget.exceeded"
ISOLATION_DEGRADED = "isolation.degraded"
CONTEXT_SUMMARISED = "context.summarised"
CONTEXT_SUMMARY_FAILED = "context.summary_failed"
MEMORY_STORED = "memory.stored"
MEMORY_QUERIED = "memory.queried"
KERNEL_STARTED = "kernel.started"
KERNEL_STOPPED = "kernel.stopped"
KERNEL_RECOVERED = "kernel.recovered"
WORKER_REJECTED = "worker.rejected"

LAG = "lag"

KINDS: dict[str, str] = {
    AGENT_SPAWNED: "an agent process was started (data: name, parent, manifest digest, pid)",
    AGENT_EXITED: "an agent ended (data: reason, exit code or signal, usage totals)",
    AGENT_PAUSED: "an agent was frozen (data: by whom, why)",
    AGENT_RESUMED: "a paused agent was thawed",
    CAPABILITY_GRANTED: "a capability token was minted for an agent (data: token id, scope)",
    CAPABILITY_DENIED: "a system call was refused for want of a covering capability",
    CAPABILITY_REVOKED: "a token (and everything delegated from it) was revoked",
    CAPABILITY_DELEGATED: "an agent attenuated one of its tokens and handed it to another",
    TOOL_INVOKED: "a tool call passed every check and started (data: tool, args digest)",
    TOOL_RESULT: "a tool call finished (data: ok or error code, result digest, duration)",
    MESSAGE_SENT: "an agent sent a message to another agent's mailbox",
    MESSAGE_DELIVERED: "a message was taken from a mailbox by its recipient",
    APPROVAL_REQUESTED: "a call was held for a human decision (data: approval id, call)",
    APPROVAL_GRANTED: "a human approved a held call",
    APPROVAL_DENIED: "a human refused a held call",
    APPROVAL_EXPIRED: "a held call's approval deadline passed without a decision",
    USAGE_REPORTED: "inference usage was settled (data: provider, model, tokens, cost)",
    BUDGET_WARNING: "an agent crossed its budget warning threshold",
    BUDGET_EXCEEDED: "an agent ran out of budget and was stopped",
    ISOLATION_DEGRADED: "an agent runs with weaker isolation than asked (data: what is missing)",
    CONTEXT_SUMMARISED: "an agent's context was summarised (data: turns folded, tokens saved)",
    CONTEXT_SUMMARY_FAILED: "summarising failed; the history was kept (data: error)",
    MEMORY_STORED: "an agent wrote to its memory",
    MEMORY_QUERIED: "an agent read from its memory",
    KERNEL_STARTED: "the kernel started (data: version, key id, substrate)",
    KERNEL_STOPPED: "the kernel stopped cleanly",
    KERNEL_RECOVERED: "the kernel restarted after an unclean stop, with agents left or approvals "
                      "pending (data: what it found and restored)",
    WORKER_REJECTED: "a warm-pool worker failed the outside check of its confinement and was "
                     "killed unused (data: worker, when, mismatches)",
}


def is_kind(kind: str) -> bool:
    """True if ``kind`` is a known event kind."""
    return kind in KINDS
