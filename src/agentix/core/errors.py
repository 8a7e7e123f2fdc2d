"""Stable error codes and the one exception family of agentix.

Every refusal the kernel gives has a stable string code, a stable numeric JSON-RPC code, a
message a person can act on, and structured ``data``. Errors are raised as
``AgentixError`` subclasses inside the kernel and translated exactly once, at the RPC
boundary, into a JSON-RPC error object::

    {"code": -32010, "message": "...", "data": {"error": "capability_denied", ...}}

Hierarchy (whose fault it is). Every code has exactly one class (``CLASSES``), and a client
rebuilds that class from the code (``error_from_code``); a class below a coded class is a
more specific kind of the same error and travels as its parent's code::

    AgentixError                      base (abstract); carries .code, .message, .data, .taint
    ├── RequestError                  the caller sent something malformed (abstract)
    │   ├── ParseError                parse_error          (the frame is not JSON)
    │   ├── InvalidRequest            invalid_request      (bad params, bad manifest, ...)
    │   │   └── FrameTooLarge           (rpc.framing: a frame over the size limit)
    │   ├── InvalidParams             invalid_params       (JSON-RPC's own; the kernel says invalid_request)
    │   ├── MethodNotFound            method_not_found
    │   └── NotFound                  not_found            (unknown agent, tool, token ...)
    │       └── NoSuchTool              (SDK: ``k.tools.NAME`` for a tool the kernel lacks; an AttributeError too)
    ├── RefusedError                  the request was well-formed but is not allowed (abstract)
    │   ├── Unauthenticated           unauthenticated      (HTTP: no, unknown, expired or revoked token)
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
    │   │   ├── ConfineError            (sandbox.confine: a layer could not be applied)
    │   │   └── LayerError              (a layer's set-up failed; an OSError too, with .errno)
    │   │       ├── LandlockError         (sandbox.landlock)
    │   │       ├── SeccompError          (sandbox.seccomp)
    │   │       └── CgroupError           (sandbox.cgroups)
    │   └── PackageRejected           package_rejected     (bad signature, untrusted, rollback, unsafe archive)
    ├── StateError                    conflict             (wrong lifecycle state)
    ├── Timeout                       timeout
    ├── ToolError                     tool_error           (the tool ran and failed)
    ├── ProviderError                 provider_error       (inference backend failed)
    ├── RegistryError                 registry_error       (a remote OCI registry failed: 401, 404, 5xx, timeout)
    ├── InternalError                 internal_error       (a kernel bug; never leaks details)
    ├── ConnectionClosed              connection_closed    (client side: the connection to the kernel broke)
    │   └── KernelNotRunning          kernel_not_running   (client side: nothing answers on the socket)
    └── UnknownError                  (client side: a code this version does not know; keeps it)

The table ``CODES`` maps each wire code to its numeric JSON-RPC code; both are part of the
public API and never change meaning. ``LOCAL_CODES`` are the client-side codes: they are
never sent by a kernel. The sandbox errors are defined in their modules (they run inside an
agent's process before anything else) and register themselves here only as subclasses.

Errors are values: nothing changes an error once it is built. To add details or taint on
the way up, make a changed copy with ``evolve`` (or ``tainted``) and raise that.
"""

from __future__ import annotations

TYPE_CHECKING = False  # no typing import: agent programs import this module (sdk/_client.py)
if TYPE_CHECKING:
    from typing import Any, ClassVar

__all__ = [
    "CLASSES",
    "CODES",
    "LOCAL_CODES",
    "AgentixError",
    "ApprovalDenied",
    "BudgetExceeded",
    "CapabilityDenied",
    "CapabilityExhausted",
    "CapabilityExpired",
    "CapabilityRevoked",
    "ConnectionClosed",
    "HandoffEscalationDenied",
    "InternalError",
    "InvalidParams",
    "InvalidRequest",
    "IsolationUnavailable",
    "KernelNotRunning",
    "LayerError",
    "LimitExceeded",
    "MethodNotFound",
    "NoSuchTool",
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
    "Unauthenticated",
    "UnknownError",
    "error_from_code",
]

# string code -> JSON-RPC numeric code. -32700..-32600 are JSON-RPC's own.
CODES: dict[str, int] = {
    "parse_error": -32700,
    "invalid_request": -32600,
    "method_not_found": -32601,
    "invalid_params": -32602,
    "internal_error": -32603,
    "unauthenticated": -32001,
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

#: codes a client makes up itself (the kernel never sends them): no numeric code
LOCAL_CODES: tuple[str, ...] = ("connection_closed", "kernel_not_running")


class AgentixError(Exception):
    """Base of every error agentix raises on purpose. Not raised itself: raise the class
    of the code (``CLASSES``)."""

    code: ClassVar[str] = "internal_error"

    #: taint labels (``source:origin``) of text from the world this error carries — a
    #: server's status line, a redirect target, a body: the kernel labels the context that
    #: receives the error with them, as it would for a result. Set by ``tainted``/``evolve``
    #: on a copy, never on a raised error.
    taint: tuple[str, ...] = ()

    def __init__(self, message: str, /, **data: Any) -> None:
        if type(self) in _ABSTRACT:
            raise TypeError(f"{type(self).__name__} is a family, not an error: raise the class "
                            "of the code (agentix.core.errors.CLASSES)")
        super().__init__(message)
        self.message = message
        self.data: dict[str, Any] = data

    def evolve(self, *, message: str | None = None, taint: tuple[str, ...] | list[str] = (),
               **data: Any) -> AgentixError:
        """A copy of this error (same class, traceback and cause) with ``message`` replaced,
        ``data`` merged over the details (a key given here wins) and ``taint`` added.

        The way to add to an error on its way up: ``raise err.evolve(tool="x") from None``.
        The original is left as it was (it may be held elsewhere: a refusal is shared by
        every resource it refused)."""
        cls = type(self)
        new = cls.__new__(cls, *self.args)
        new.__dict__.update(self.__dict__)
        new.data = {**self.data, **data}
        if message is not None:
            new.message = message
            new.args = (message,)
        else:
            new.args = self.args
        if taint:
            new.taint = tuple(sorted(set(self.taint) | set(taint)))
        new.__cause__, new.__context__ = self.__cause__, self.__context__
        new.__suppress_context__ = self.__suppress_context__
        return new.with_traceback(self.__traceback__)

    def tainted(self, *labels: str) -> AgentixError:
        """A copy of this error carrying world text labelled ``labels`` (``evolve``)."""
        return self.evolve(taint=labels)

    def with_default(self, **data: Any) -> AgentixError:
        """This error if it already has every key of ``data``; else a copy (``evolve``)
        with the missing keys added (the keys it has keep their values)."""
        missing = {k: v for k, v in data.items() if k not in self.data}
        return self.evolve(**missing) if missing else self

    @property
    def rpc_code(self) -> int:
        """The numeric JSON-RPC code (a client-side code has none: ``internal_error``'s)."""
        return CODES.get(self.code, CODES["internal_error"])

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
    """The caller sent something malformed (abstract: raise a subclass)."""

    code = "invalid_request"


class ParseError(RequestError):
    code = "parse_error"


class InvalidRequest(RequestError):
    code = "invalid_request"


class InvalidParams(RequestError):
    """JSON-RPC's ``invalid_params``; the kernel reports bad parameters as ``invalid_request``
    with ``data.field``, but a JSON-RPC peer may send this one."""

    code = "invalid_params"


class MethodNotFound(RequestError):
    code = "method_not_found"


class NotFound(RequestError):
    code = "not_found"


class NoSuchTool(NotFound, AttributeError):
    """``k.tools.NAME`` names a tool the kernel does not have (``not_found``; it is an
    ``AttributeError`` too, so ``hasattr``/``getattr(..., default)`` work)."""

    def __init__(self, message: str, /, **data: Any) -> None:
        NotFound.__init__(self, message, **data)


class RefusedError(AgentixError):
    """The request was well-formed but is not allowed (abstract: raise a subclass)."""

    code = "capability_denied"


class Unauthenticated(RefusedError):
    """An HTTP request without a valid operator token (missing, unknown, expired, revoked)."""

    code = "unauthenticated"


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


class LayerError(IsolationUnavailable, OSError):
    """An isolation layer (``layer``: landlock, seccomp, cgroups) could not be set up; an
    ``OSError`` too, with the ``errno`` of the failing system call when there was one."""

    layer: ClassVar[str] = "isolation"

    def __init__(self, message: str, /, *, errno: int | None = None, **data: Any) -> None:
        if errno is not None:
            data["errno"] = errno
        super().__init__(message, layer=self.layer, **data)
        self.errno = errno


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


class ConnectionClosed(AgentixError):
    """Client side: the connection to the kernel broke (closed, reset, unreadable)."""

    code = "connection_closed"


class KernelNotRunning(ConnectionClosed):
    """Client side: no kernel answers on the socket."""

    code = "kernel_not_running"


class UnknownError(AgentixError):
    """Client side: an error whose code this version does not know (a newer kernel's);
    ``code`` is the code as received."""

    def __init__(self, code: str, message: str, /, **data: Any) -> None:
        super().__init__(message, **data)
        self.code = code  # type: ignore[misc]  # set once, at construction


_ABSTRACT = (AgentixError, RequestError, RefusedError)

#: every code -> its one class (``error_from_code`` builds these; a test checks that each
#: class's code leads back to it, and that every other family member is a subclass of the
#: class of its code)
CLASSES: dict[str, type[AgentixError]] = {cls.code: cls for cls in (
    ParseError, InvalidRequest, InvalidParams, MethodNotFound, NotFound, InternalError,
    Unauthenticated, StateError, CapabilityDenied, CapabilityExpired, CapabilityExhausted,
    CapabilityRevoked, HandoffEscalationDenied, TaintViolation, ApprovalDenied, BudgetExceeded,
    LimitExceeded, IsolationUnavailable, Timeout, ToolError, ProviderError, PackageRejected,
    RegistryError, ConnectionClosed, KernelNotRunning,
)}


def error_from_code(code: str, message: str, data: dict[str, Any] | None = None) -> AgentixError:
    """Rebuild the typed error for a string code (used by clients): the one class of the
    code (``CLASSES``), or ``UnknownError`` keeping a code this version does not know."""
    details = {k: v for k, v in (data or {}).items() if k != "error"}
    cls = CLASSES.get(code)
    if cls is None:
        return UnknownError(code, message, **details)
    return cls(message, **details)
