"""Stable error codes and the one exception family of agentix.

Every refusal the kernel gives has a stable string code, a stable numeric JSON-RPC code, a
message a person can act on, and structured ``data``. Errors are raised as
``AgentixError`` subclasses inside the kernel and translated exactly once, at the RPC
boundary, into a JSON-RPC error object::

    {"code": -32010, "message": "...", "data": {"error": "capability_denied", ...}}

Hierarchy (whose fault it is)::

    AgentixError                      base; carries .code, .message, .data
    ├── RequestError                  the caller sent something malformed
    │   ├── InvalidRequest            invalid_request      (bad params, bad manifest, ...)
    │   ├── MethodNotFound            method_not_found
    │   └── NotFound                  not_found            (unknown agent, tool, token ...)
    ├── RefusedError                  the request was well-formed but is not allowed
    │   ├── CapabilityDenied          capability_denied
    │   ├── CapabilityExpired         capability_expired
    │   ├── CapabilityExhausted       capability_exhausted
    │   ├── CapabilityRevoked         capability_revoked
    │   ├── HandoffEscalationDenied   handoff_escalation_denied
    │   ├── TaintViolation            taint_violation
    │   ├── ApprovalDenied            approval_denied
    │   ├── BudgetExceeded            budget_exceeded
    │   ├── LimitExceeded             limit_exceeded       (depth, count, mailbox full ...)
    │   ├── IsolationUnavailable      isolation_unavailable
    │   └── PackageRejected           package_rejected     (bad signature, untrusted, rollback, unsafe archive)
    ├── StateError                    conflict             (wrong lifecycle state)
    ├── Timeout                       timeout
    ├── ToolError                     tool_error           (the tool ran and failed)
    ├── ProviderError                 provider_error       (inference backend failed)
    ├── RegistryError                 registry_error       (a remote OCI registry failed: 401, 404, 5xx, timeout)
    └── InternalError                 internal_error       (a kernel bug; never leaks details)

The table ``CODES`` maps each string code to its numeric JSON-RPC code; both are part of
the public API and never change meaning.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing imports re: agent programs import this module (sdk/client.py)
if TYPE_CHECKING:
    from typing import Any, ClassVar

__all__ = [
    "CODES",
    "AgentixError",
    "ApprovalDenied",
    "BudgetExceeded",
    "CapabilityDenied",
    "CapabilityExhausted",
    "CapabilityExpired",
    "CapabilityRevoked",
    "HandoffEscalationDenied",
    "InternalError",
    "InvalidRequest",
    "IsolationUnavailable",
    "LimitExceeded",
    "MethodNotFound",
    "NotFound",
    "PackageRejected",
    "ParseError",
    "ProviderError",
    "RefusedError",
    "RegistryError",
    "RequestError",
    "StateError",
    "TaintViolation",
    "Timeout",
    "ToolError",
    "error_from_code",
]

# string code -> JSON-RPC numeric code. -32700..-32600 are JSON-RPC's own.
CODES: dict[str, int] = {
    "parse_error": -32700,
    "invalid_request": -32600,
    "method_not_found": -32601,
    "invalid_params": -32602,
    "internal_error": -32603,
    "not_found": -32004,
    "conflict": -32009,
    "capability_denied": -32010,
    "capability_expired": -32011,
    "capability_exhausted": -32012,
    "capability_revoked": -32013,
    "handoff_escalation_denied": -32014,
    "taint_violation": -32020,
    "approval_denied": -32021,
    "budget_exceeded": -32030,
    "limit_exceeded": -32031,
    "isolation_unavailable": -32040,
    "timeout": -32050,
    "tool_error": -32060,
    "provider_error": -32070,
    "package_rejected": -32080,
    "registry_error": -32081,
}


class AgentixError(Exception):
    """Base of every error agentix raises on purpose."""

    code: ClassVar[str] = "internal_error"

    #: taint labels (``source:origin``) of text from the world this error carries — a
    #: server's status line, a redirect target, a body: the kernel labels the context that
    #: receives the error with them, as it would for a result
    taint: tuple[str, ...] = ()

    def __init__(self, message: str, **data: Any) -> None:
        super().__init__(message)
        self.message = message
        self.data: dict[str, Any] = data

    def tainted(self, *labels: str) -> AgentixError:
        """Mark this error as carrying world text labelled ``labels``; returns itself."""
        self.taint = tuple(sorted(set(self.taint) | set(labels)))
        return self

    @property
    def rpc_code(self) -> int:
        return CODES[self.code]

    def to_rpc(self) -> dict[str, Any]:
        """The JSON-RPC error object for this error."""
        return {
            "code": self.rpc_code,
            "message": self.message,
            "data": {"error": self.code, **self.data},
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, {self.data!r})"


class RequestError(AgentixError):
    code = "invalid_request"


class ParseError(RequestError):
    code = "parse_error"


class InvalidRequest(RequestError):
    code = "invalid_request"


class MethodNotFound(RequestError):
    code = "method_not_found"


class NotFound(RequestError):
    code = "not_found"


class RefusedError(AgentixError):
    code = "capability_denied"


class CapabilityDenied(RefusedError):
    code = "capability_denied"


class CapabilityExpired(RefusedError):
    code = "capability_expired"


class CapabilityExhausted(RefusedError):
    code = "capability_exhausted"


class CapabilityRevoked(RefusedError):
    code = "capability_revoked"


class HandoffEscalationDenied(RefusedError):
    code = "handoff_escalation_denied"


class TaintViolation(RefusedError):
    code = "taint_violation"


class ApprovalDenied(RefusedError):
    code = "approval_denied"


class BudgetExceeded(RefusedError):
    code = "budget_exceeded"


class LimitExceeded(RefusedError):
    code = "limit_exceeded"


class IsolationUnavailable(RefusedError):
    code = "isolation_unavailable"


class PackageRejected(RefusedError):
    code = "package_rejected"


class StateError(AgentixError):
    code = "conflict"


class Timeout(AgentixError):
    code = "timeout"


class ToolError(AgentixError):
    code = "tool_error"


class ProviderError(AgentixError):
    code = "provider_error"


class RegistryError(AgentixError):
    code = "registry_error"


class InternalError(AgentixError):
    code = "internal_error"


def _all_subclasses(cls: type[AgentixError]) -> list[type[AgentixError]]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


def error_from_code(code: str, message: str, data: dict[str, Any] | None = None) -> AgentixError:
    """Rebuild the typed error for a string code (used by clients)."""
    # the most specific class registered for the code wins (leaf classes come last)
    chosen: type[AgentixError] = AgentixError
    for cls in _all_subclasses(AgentixError):
        if cls.code == code:
            chosen = cls
    if code == "invalid_params":
        chosen = InvalidRequest
    err = chosen(message, **{k: v for k, v in (data or {}).items() if k != "error"})
    if chosen is AgentixError:
        err.code = code  # type: ignore[misc]  # unknown code from a newer kernel: keep it
    return err
