"""The HTTP face of the operator API: Starlette on uvicorn, in the kernel's own event loop.
(Over 400 lines: one request path (Host, Origin, token, body, role, idempotency, pipeline) whose
order is the security rule.)

HTTP is one more *caller* of the kernel's pipeline, never a second path into it: every
request that reaches a method ends in ``HttpBackend.call`` (the kernel's ``Pipeline.run``
with a ``Caller`` named ``http:<token name>``). This module is an edge: it knows HTTP,
bearer tokens, JSON bodies, server-sent events and idempotency keys, and nothing of the
kernel (``kernel/http_api.py`` implements ``HttpBackend``).

Routes::

    GET  /openapi.json                  OpenAPI 3.1, generated from the method table's schemas
    POST /v1/call/{method}              one operator method; JSON body = its params
    GET  /v1/whoami                     the bearer token's name and role (the dashboard's sign-in)
    GET  /v1/events                     server-sent events: the audit log from Last-Event-ID
    GET  /v1/agents/{agent_id}/logs     server-sent events: an agent's output, following
    GET  /  and  /ui/{file}             the web dashboard (rpc/static.py; docs/dashboard.md)
    GET  /metrics                       Prometheus metrics, any live token (kernel/telemetry.py)

Every response carries the security headers of ``rpc/static.py`` (a strict CSP with
``frame-ancestors 'none'``, ``nosniff``, ...).

What a request passes, in order (the first failure answers; nothing later runs):

0. the ``Host`` header must name the address the server is bound to (``127.0.0.1:PORT``,
   ``localhost:PORT``, ``[::1]:PORT`` on loopback): a page whose own name was rebound to
   127.0.0.1 (DNS rebinding) sends its name and gets 421, on every route, static ones too;
1. a browser ``Origin`` header must be this server's own origin (403, CSRF);
2. ``Authorization: Bearer <token>`` must name a live token (401);
3. a body must be ``application/json`` (415), at most ``max_body`` bytes (413), valid JSON
   (400 ``parse_error``) and an object (400 ``invalid_request``);
4. the method must be an operator method (404 ``method_not_found``);
5. a viewer token may call only methods the table marks ``no_effect`` (403);
6. with an ``Idempotency-Key`` (accepted on the methods that start agents), a key seen
   before returns the first response (for the same body: a different body is 409);
7. the pipeline decides and runs; its ``AgentixError`` becomes ``{"error": {code, message,
   data}}`` with the status of ``STATUS``.

Event streams hold a connection each: a token may hold at most ``MAX_STREAMS_PER_TOKEN`` open
at once and all tokens together ``MAX_STREAMS``, and at most ``MAX_CALLS_PER_TOKEN`` calls in
flight (``agent.wait`` and ``events.tail`` may wait a minute each) (429 beyond, with
``Retry-After``), so a viewer cannot take the ``MAX_CONCURRENCY`` connections the operator
needs. ``Last-Event-ID``
is 1-18 ASCII digits (400 otherwise, the value not echoed).

Before any of this, the connection itself: its request head must arrive within a deadline and
its body within another, and only a few connections may be waiting for theirs at once (408/503
and close beyond), so slow-header clients never hold the server's slots (rpc/slow_clients.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import orjson

from agentix.core.hosts import served_hosts
from agentix.rpc.framing import MAX_DEPTH, too_deep
from agentix.rpc.slow_clients import SlowClientLimits, guarded_config
from agentix.rpc.static import StaticSet, security_headers
from agentix.core.errors import (
    CODES,
    AgentixError,
    CapabilityDenied,
    InternalError,
    InvalidRequest,
    ParseError,
    StateError,
    Unauthenticated,
)

__all__ = ["STATUS", "HttpBackend", "HttpServer", "MethodInfo", "Principal", "Stored", "create_app",
           "host_guard", "openapi", "own_origins", "status_for", "start_server"]

log = logging.getLogger(__name__)

Role = Literal["viewer", "operator"]

#: HTTP status for each error code (the code itself is the body's ``error.code``)
STATUS: dict[str, int] = {
    "parse_error": 400,
    "invalid_request": 400,
    "invalid_params": 400,
    "unauthenticated": 401,
    "capability_denied": 403,
    "capability_expired": 403,
    "capability_exhausted": 403,
    "capability_revoked": 403,
    "handoff_escalation_denied": 403,
    "taint_violation": 403,
    "approval_denied": 403,
    "package_rejected": 403,
    "budget_exceeded": 403,
    "method_not_found": 404,
    "not_found": 404,
    "conflict": 409,
    "limit_exceeded": 429,
    "internal_error": 500,
    "tool_error": 502,
    "provider_error": 502,
    "registry_error": 502,
    "isolation_unavailable": 503,
    "timeout": 504,
}

#: SSE: seconds each long-poll of the kernel waits before a keep-alive comment
SSE_WAIT = 15.0
IDEMPOTENCY_HEADER = "idempotency-key"
MAX_CONCURRENCY = 256
MAX_KEY = 200
#: event streams one token may hold open at once, and all tokens together (each holds a
#: connection of the server's MAX_CONCURRENCY for as long as it is open)
MAX_STREAMS_PER_TOKEN = 8
MAX_STREAMS = MAX_CONCURRENCY // 2
#: calls one token may have in flight at once (each may hold its connection for a long wait)
MAX_CALLS_PER_TOKEN = 32
#: a stream's resume id: the audit seq or a byte offset (SQLite INTEGER: below 2**63)
_EVENT_ID = re.compile(r"[0-9]{1,18}")


def status_for(err: AgentixError) -> int:
    return err.data.get("http_status") or STATUS.get(err.code, 500)


@dataclass(frozen=True)
class Principal:
    """Who is calling over HTTP: a token's name and role (never taken from the request)."""

    name: str
    role: Role

    @property
    def label(self) -> str:
        return f"http:{self.name}"


@dataclass(frozen=True)
class MethodInfo:
    """One operator method as HTTP shows it (from the method table)."""

    name: str
    read_only: bool          # the table's durability is ``no_effect``
    doc: str                 # what it is authorised against
    params: dict[str, Any]   # JSON Schema of its params
    idempotent: bool = False  # accepts an Idempotency-Key (the methods that start agents)
    summary: str = ""


@dataclass(frozen=True)
class Stored:
    """The first response to an idempotent request."""

    method: str
    request_hash: bytes
    status: int
    body: bytes


class HttpBackend(Protocol):
    """What the HTTP face needs from the kernel (``kernel/http_api.py``)."""

    def methods(self) -> Sequence[MethodInfo]: ...

    def authenticate(self, token: str) -> Principal:
        """The principal of a bearer token; ``Unauthenticated`` if unknown, expired or revoked."""

    async def call(self, principal: Principal, method: str, params: dict[str, Any]) -> Any: ...

    async def refused(self, principal: Principal, method: str, err: AgentixError) -> None:
        """Record a request refused at this edge after authentication (a viewer's state change)."""

    async def completed(self, principal: Principal, method: str, status: int, err: AgentixError | None) -> None:
        """Record that a state-changing method was called over HTTP (who, what, outcome)."""

    async def idempotency_get(self, principal: Principal, key: str) -> Stored | None: ...

    async def idempotency_put(self, principal: Principal, key: str, stored: Stored) -> None: ...


# ---------------------------------------------------------------------------- OpenAPI
_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object", "required": ["code", "message", "data"],
        "properties": {
            "code": {"type": "string", "enum": sorted(CODES), "description": "the stable error code"},
            "rpc_code": {"type": "integer", "description": "the same error's JSON-RPC code"},
            "message": {"type": "string"},
            "data": {"type": "object"},
        }}},
}


def openapi(methods: Sequence[MethodInfo], *, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document: one path per operator method, plus the two event streams."""
    err_ref = {"$ref": "#/components/responses/Error"}
    paths: dict[str, Any] = {}
    for m in sorted(methods, key=lambda m: m.name):
        op: dict[str, Any] = {
            "operationId": m.name.replace(".", "_"),
            "summary": m.summary or m.name,
            "description": f"Authorised against: {m.doc}. Role: "
                           f"{'viewer or operator' if m.read_only else 'operator'}.",
            "tags": [m.name.split(".")[0]],
            "requestBody": {"required": False,
                            "content": {"application/json": {"schema": m.params}}},
            "responses": {"200": {"description": "the method's result (the JSON-RPC result)",
                                  "content": {"application/json": {"schema": {}}}},
                          "default": err_ref},
            "x-agentix-method": m.name,
            "x-agentix-read-only": m.read_only,
        }
        if m.idempotent:
            op["parameters"] = [{"name": "Idempotency-Key", "in": "header", "required": False,
                                 "schema": {"type": "string", "maxLength": MAX_KEY},
                                 "description": "a retry with the same key returns the first response"}]
        paths[f"/v1/call/{m.name}"] = {"post": op}
    sse = {"description": "text/event-stream; each event's id resumes with Last-Event-ID",
           "content": {"text/event-stream": {"schema": {"type": "string"}}}}
    last_id = {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}}
    paths["/v1/whoami"] = {"get": {
        "operationId": "whoami", "summary": "the bearer token's name and role", "tags": ["auth"],
        "responses": {"200": {"description": "{name, role, version}", "content": {"application/json": {
            "schema": {"type": "object", "properties": {"name": {"type": "string"},
                                                        "role": {"enum": ["viewer", "operator"]},
                                                        "version": {"type": "string"}}}}}},
                      "default": err_ref}}}
    paths["/v1/events"] = {"get": {
        "operationId": "events_stream", "summary": "the audit log as server-sent events (id = audit seq)",
        "tags": ["events"], "parameters": [
            last_id,
            {"name": "agent", "in": "query", "required": False, "schema": {"type": "string"}},
            {"name": "kind", "in": "query", "required": False, "schema": {"type": "string"}}],
        "responses": {"200": sse, "default": err_ref}}}
    paths["/v1/agents/{agent_id}/logs"] = {"get": {
        "operationId": "agent_logs_stream", "summary": "an agent's output as server-sent events "
        "(id = byte offset); ends with an `end` event when the agent has exited",
        "tags": ["agent"], "parameters": [
            last_id, {"name": "agent_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": sse, "default": err_ref}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "agentix operator API", "version": version,
                 "description": "The kernel's operator methods over HTTP (docs/http.md). "
                                "Every call goes through the same pipeline as JSON-RPC."},
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "a token from `agentix tokens create`"}},
            "schemas": {"Error": _ERROR_SCHEMA},
            "responses": {"Error": {"description": "a refusal or failure, with the JSON-RPC error code",
                                    "content": {"application/json": {
                                        "schema": {"$ref": "#/components/schemas/Error"}}}}},
        },
    }


# ---------------------------------------------------------------------------- the app
def _error_body(err: AgentixError) -> bytes:
    return orjson.dumps({"error": {"code": err.code, "rpc_code": CODES.get(err.code),
                                   "message": err.message,
                                   "data": {k: v for k, v in err.data.items() if k != "http_status"}}},
                        default=str)


def _json_response(status: int, body: bytes, headers: dict[str, str] | None = None) -> Any:
    from starlette.responses import Response

    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _error_response(err: AgentixError) -> Any:
    headers = ({"WWW-Authenticate": 'Bearer realm="agentix"'} if err.code == "unauthenticated"
               else {"Retry-After": "1"} if err.code == "limit_exceeded" else None)
    return _json_response(status_for(err), _error_body(err), headers)


class _TooLarge(InvalidRequest):
    pass


@dataclass
class _App:
    backend: HttpBackend
    origins: set[str]
    max_body: int
    version: str
    _inflight: dict[tuple[str, str], asyncio.Future[tuple[int, bytes]]] = field(default_factory=dict)
    #: open event streams and calls in flight, per token name
    _streams: dict[str, int] = field(default_factory=dict)
    _calls: dict[str, int] = field(default_factory=dict)
    _methods: dict[str, MethodInfo] = field(default_factory=dict)
    _openapi: bytes = b""

    def __post_init__(self) -> None:
        self._methods = {m.name: m for m in self.backend.methods()}
        self._openapi = orjson.dumps(openapi(list(self._methods.values()), version=self.version))

    # -- the checks every request passes
    def _origin(self, request: Any) -> None:
        origin = request.headers.get("origin")
        if origin is not None and origin not in self.origins:
            raise CapabilityDenied(
                f"a browser request from origin {origin!r} is refused: only this server's own pages "
                f"({', '.join(sorted(self.origins))}) may call it (no CORS)",
                reason="origin", origin=origin)

    def _principal(self, request: Any) -> Principal:
        return self.backend.authenticate(self._bearer(request))

    def _bearer(self, request: Any) -> str:
        auth = request.headers.get("authorization")
        if auth is None:
            raise Unauthenticated("no Authorization header: send `Authorization: Bearer TOKEN` with a "
                                  "token from `agentix tokens create`", reason="missing")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the Authorization header must be `Bearer TOKEN`", reason="scheme")
        return token.strip()

    async def _body(self, request: Any) -> dict[str, Any]:
        length = request.headers.get("content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                raise InvalidRequest("Content-Length is not a number", field="content-length") from None
            if n > self.max_body:
                raise _TooLarge(f"the body is {n} bytes, over the limit of {self.max_body}",
                                limit=self.max_body, http_status=413)
        chunks: list[bytes] = []
        got = 0
        async for chunk in request.stream():
            got += len(chunk)
            if got > self.max_body:
                raise _TooLarge(f"the body is over the limit of {self.max_body} bytes",
                                limit=self.max_body, http_status=413)
            chunks.append(chunk)
        raw = b"".join(chunks)
        if not raw.strip():
            return {}
        ctype = request.headers.get("content-type", "")
        if ctype.split(";", 1)[0].strip().lower() != "application/json":
            raise InvalidRequest(f"the body must be JSON sent as Content-Type: application/json, not "
                                 f"{ctype or 'no content type'!r}", field="content-type",
                                 http_status=415)
        try:
            params = orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            raise ParseError(f"the body is not valid JSON: {err}") from None
        if too_deep(raw, params):  # the same bound as the kernel socket's frames (rpc/framing)
            raise InvalidRequest(f"the body nests deeper than {MAX_DEPTH} levels of arrays and "
                                 "objects; send flatter data", field="body", limit=MAX_DEPTH)
        if not isinstance(params, dict):
            raise InvalidRequest("the body must be a JSON object of the method's params",
                                 field="body")
        return params

    def _method(self, name: str) -> MethodInfo:
        info = self._methods.get(name)
        if info is None:
            from agentix.core.errors import MethodNotFound

            raise MethodNotFound(f"unknown operator method {name!r}; GET /openapi.json lists them",
                                 method=name)
        return info

    # -- routes
    async def openapi_json(self, request: Any) -> Any:
        try:
            self._origin(request)
        except AgentixError as err:
            return _error_response(err)
        return _json_response(200, self._openapi)

    async def call(self, request: Any) -> Any:
        name = request.path_params["method"]
        try:
            self._origin(request)
            principal = self._principal(request)
            held = self._calls.get(principal.name, 0)
            if held >= MAX_CALLS_PER_TOKEN:  # a long wait each (agent.wait, events.tail wait=60)
                from agentix.core.errors import LimitExceeded

                raise LimitExceeded(f"the token {principal.name!r} has {held} calls in flight, the most "
                                    f"one token may hold ({MAX_CALLS_PER_TOKEN}): wait for one to finish",
                                    limit=MAX_CALLS_PER_TOKEN)
        except AgentixError as err:
            log.info("HTTP %s refused (%s): %s", name, err.code, err.message)
            return _error_response(err)
        self._calls[principal.name] = held + 1
        try:
            return await self._call(request, name, principal)
        finally:
            left = self._calls.get(principal.name, 1) - 1
            if left > 0:
                self._calls[principal.name] = left
            else:
                self._calls.pop(principal.name, None)

    async def _call(self, request: Any, name: str, principal: Principal) -> Any:
        try:
            info = self._method(name)
            params = await self._body(request)
        except AgentixError as err:  # not in the audit log (see docs/http.md): the kernel log only
            log.info("HTTP %s refused (%s): %s", name, err.code, err.message)
            return _error_response(err)
        if principal.role != "operator" and not info.read_only:
            err = CapabilityDenied(f"{name} changes state; the token {principal.name!r} has role "
                                   f"{principal.role!r}, which may call only read methods",
                                   reason="role", role=principal.role, method=name)
            await self.backend.refused(principal, name, err)
            return _error_response(err)
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is not None and not info.idempotent:
            names = ", ".join(sorted(m.name for m in self._methods.values() if m.idempotent))
            return _error_response(InvalidRequest(
                f"Idempotency-Key is accepted only on the methods that start agents ({names}), "
                f"not on {name}", field="Idempotency-Key"))
        if key is not None:
            status, body, replayed = await self._idempotent(principal, name, key, params)
            return _json_response(status, body, {"Idempotent-Replayed": "true"} if replayed else None)
        status, body = await self._run(principal, info, params)
        return _json_response(status, body)

    async def whoami(self, request: Any) -> Any:
        try:
            self._origin(request)
            principal = self._principal(request)
        except AgentixError as err:
            return _error_response(err)
        return _json_response(200, orjson.dumps({"name": principal.name, "role": principal.role,
                                                 "version": self.version}))

    async def _run(self, principal: Principal, info: MethodInfo, params: dict[str, Any]) -> tuple[int, bytes]:
        err: AgentixError | None = None
        try:
            result = await self.backend.call(principal, info.name, params)
            status, body = 200, orjson.dumps(result, default=str)
        except AgentixError as e:
            err = e
            status, body = status_for(e), _error_body(e)
        except Exception:
            log.exception("internal error in HTTP %s", info.name)
            err = InternalError(f"internal error while handling {info.name}; see the kernel log")
            status, body = 500, _error_body(err)
        if not info.read_only:
            await self.backend.completed(principal, info.name, status, err)
        return status, body

    async def _idempotent(self, principal: Principal, name: str, key: str,
                          params: dict[str, Any]) -> tuple[int, bytes, bool]:
        if not key or len(key) > MAX_KEY or not key.isprintable():
            e = InvalidRequest(f"Idempotency-Key must be 1..{MAX_KEY} printable characters",
                               field="Idempotency-Key")
            return status_for(e), _error_body(e), False
        digest = hashlib.sha256(name.encode() + b"\0" + orjson.dumps(params, option=orjson.OPT_SORT_KEYS)).digest()
        slot = (principal.name, key)
        while (pending := self._inflight.get(slot)) is not None:  # the same key is running now
            await asyncio.shield(pending)
        stored = await self.backend.idempotency_get(principal, key)
        if stored is not None:
            if stored.method != name or stored.request_hash != digest:
                e = StateError(f"Idempotency-Key {key!r} was first used for a different request "
                               f"({stored.method}); use a new key for a new request",
                               field="Idempotency-Key", first_method=stored.method)
                return status_for(e), _error_body(e), False
            return stored.status, stored.body, True
        fut: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._inflight[slot] = fut
        try:
            status, body = await self._run(principal, self._methods[name], params)
            if status < 500:  # a kernel failure may be retried; anything else is the answer
                await self.backend.idempotency_put(principal, key, Stored(name, digest, status, body))
            fut.set_result((status, body))
            return status, body, False
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: waiters re-read the store
            raise
        finally:
            del self._inflight[slot]

    async def _again(self, token: str, method: str, params: dict[str, Any]) -> Any:
        """A stream's next long-poll: its token is checked again first, so a stream ends at the
        first poll after its token is revoked or expires (it never outlives its authority)."""
        return await self.backend.call(self.backend.authenticate(token), method, params)

    async def _stream_start(self, request: Any, method: str) -> tuple[Principal, str, int | None]:
        """Open one event stream of ``method``: origin, token, a well-formed ``Last-Event-ID``,
        the method's row, then a stream slot (last: nothing before it holds one). Returns who
        asks, their token (checked again at every poll) and where to resume."""
        self._origin(request)
        principal = self._principal(request)
        last = request.headers.get("last-event-id") or request.query_params.get("after")
        if last is not None and not _EVENT_ID.fullmatch(last):
            shown = last if len(last) <= 40 else f"{last[:40]}... ({len(last)} characters)"
            raise InvalidRequest(f"Last-Event-ID must be an id this stream sent (1-18 digits), not {shown!r}",
                                 field="Last-Event-ID")
        token = self._bearer(request)
        self._method(method)
        self._open_stream(principal)
        return principal, token, (None if last is None else int(last))

    @contextlib.contextmanager
    def _slot_released_on_error(self, principal: Principal) -> Iterator[None]:
        """Until the stream's response exists, a failure gives its slot back."""
        try:
            yield
        except BaseException:
            self._close_stream(principal)
            raise

    def _open_stream(self, principal: Principal) -> None:
        """Count one more open stream for ``principal``, or refuse (429) over either cap."""
        mine = self._streams.get(principal.name, 0)
        total = sum(self._streams.values())
        if mine >= MAX_STREAMS_PER_TOKEN or total >= MAX_STREAMS:
            from agentix.core.errors import LimitExceeded

            which = (f"the token {principal.name!r} has {mine} event streams open, the most one token may "
                     f"hold ({MAX_STREAMS_PER_TOKEN})" if mine >= MAX_STREAMS_PER_TOKEN
                     else f"{total} event streams are open, the most this server holds ({MAX_STREAMS})")
            raise LimitExceeded(f"{which}: close one (or reuse it) before opening another",
                                limit=MAX_STREAMS_PER_TOKEN if mine >= MAX_STREAMS_PER_TOKEN else MAX_STREAMS)
        self._streams[principal.name] = mine + 1

    def _close_stream(self, principal: Principal) -> None:
        left = self._streams.get(principal.name, 1) - 1
        if left > 0:
            self._streams[principal.name] = left
        else:
            self._streams.pop(principal.name, None)

    def _stream(self, principal: Principal, gen: AsyncIterator[bytes]) -> Any:
        """The SSE response; its stream slot is given back when the response ends, however."""
        return _sse(gen, on_close=lambda: self._close_stream(principal))

    async def events(self, request: Any) -> Any:
        filters = {k: request.query_params[k] for k in ("agent", "kind") if k in request.query_params}
        try:
            principal, token, after = await self._stream_start(request, "events.tail")
            with self._slot_released_on_error(principal):
                if after is None:  # from now on: start after the newest entry
                    newest = await self.backend.call(principal, "events.tail", {"after": 0, "limit": 1})
                    after = newest["events"][-1]["seq"] if newest["events"] else 0
                first = await self.backend.call(principal, "events.tail", {"after": after, **filters})
        except AgentixError as err:
            return _error_response(err)

        async def gen() -> AsyncIterator[bytes]:
            pos = after
            batch = first["events"]
            yield b": agentix events\n\n"
            while True:
                for ev in batch:
                    pos = ev["seq"]
                    yield (f"id: {pos}\ndata: ".encode()
                           + orjson.dumps(ev, default=str) + b"\n\n")
                if not batch:
                    yield b": keep-alive\n\n"
                try:
                    batch = (await self._again(token, "events.tail",
                                               {"after": pos, "wait": SSE_WAIT, **filters}))["events"]
                except AgentixError as err:
                    yield b"event: error\ndata: " + _error_body(err) + b"\n\n"
                    return

        return self._stream(principal, gen())

    async def logs(self, request: Any) -> Any:
        agent_id = request.path_params["agent_id"]
        try:
            principal, token, offset = await self._stream_start(request, "agent.logs")
            with self._slot_released_on_error(principal):
                first = await self.backend.call(principal, "agent.logs",
                                                {"agent_id": agent_id, "offset": offset or 0})
        except AgentixError as err:
            return _error_response(err)

        async def gen() -> AsyncIterator[bytes]:
            chunk = first
            yield b": agentix logs\n\n"
            while True:
                if chunk["data"]:
                    yield (f"id: {chunk['offset']}\ndata: ".encode()
                           + orjson.dumps({"data": chunk["data"], "offset": chunk["offset"]}) + b"\n\n")
                elif not chunk["live"]:
                    yield f"id: {chunk['offset']}\nevent: end\ndata: {{}}\n\n".encode()
                    return
                else:
                    yield b": keep-alive\n\n"
                try:
                    chunk = await self._again(token, "agent.logs",
                                              {"agent_id": agent_id, "offset": chunk["offset"],
                                               "wait": SSE_WAIT})
                except AgentixError as err:
                    yield b"event: error\ndata: " + _error_body(err) + b"\n\n"
                    return

        return self._stream(principal, gen())


def _sse(gen: AsyncIterator[bytes], on_close: Callable[[], None]) -> Any:
    """A text/event-stream response; ``on_close`` runs exactly once when it ends (the body was
    sent, the client went away, the server stopped), never relying on the generator being
    finalised."""
    from starlette.responses import StreamingResponse

    class _Stream(StreamingResponse):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            try:
                await super().__call__(scope, receive, send)
            finally:
                on_close()
                with contextlib.suppress(Exception):
                    await gen.aclose()  # type: ignore[attr-defined]

    return _Stream(gen, media_type="text/event-stream",
                   headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _static_routes(files: StaticSet) -> list[Any]:
    """``/`` (the dashboard's page) and ``/ui/{name}`` (a file of the fixed set, else 404)."""
    from starlette.responses import RedirectResponse, Response
    from starlette.routing import Route

    def serve(name: str) -> Any:
        found = files.get(name)
        if found is None:
            from agentix.core.errors import NotFound

            return _error_response(NotFound(f"no dashboard file {name!r}", path=name))
        body, ctype = found
        return Response(body, media_type=ctype, headers={"Cache-Control": "no-cache"})

    async def index(request: Any) -> Any:
        return serve("index.html")

    async def ui(request: Any) -> Any:
        return serve(request.path_params["name"])

    async def ui_root(request: Any) -> Any:
        return RedirectResponse("/", status_code=308)

    return [Route("/", index, methods=["GET"]), Route("/ui/", ui_root, methods=["GET"]),
            Route("/ui/{name:path}", ui, methods=["GET"])]


def create_app(backend: HttpBackend, *, origins: set[str], max_body: int, version: str = "0",
               static: StaticSet | None = None,
               metrics: Callable[[], tuple[bytes, str]] | None = None) -> Any:
    """The Starlette application. ``origins`` is filled in once the server knows its port
    (the set is read per request). ``static``: the dashboard's files (none: no dashboard).
    ``metrics``: renders the Prometheus exposition (none: no ``/metrics``)."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    app = _App(backend, origins, max_body, version)

    async def metrics_route(request: Any) -> Any:
        from starlette.responses import Response

        try:
            app._origin(request)
            app._principal(request)   # any live token (viewer or operator): agent names are in it
        except AgentixError as err:
            return _error_response(err)
        assert metrics is not None
        body, ctype = metrics()
        return Response(body, media_type=ctype, headers={"Cache-Control": "no-store"})

    async def not_found(request: Any, exc: Any) -> Any:
        from starlette.exceptions import HTTPException

        if isinstance(exc, HTTPException) and exc.status_code == 405:
            return _error_response(InvalidRequest(f"{request.method} is not allowed on {request.url.path}",
                                                  http_status=405))
        from agentix.core.errors import NotFound

        return _error_response(NotFound(f"no route {request.url.path}; GET /openapi.json lists the API",
                                        path=request.url.path))

    return security_headers(host_guard(origins, Starlette(
        routes=[
            Route("/openapi.json", app.openapi_json, methods=["GET"]),
            Route("/v1/call/{method}", app.call, methods=["POST"]),
            Route("/v1/whoami", app.whoami, methods=["GET"]),
            Route("/v1/events", app.events, methods=["GET"]),
            Route("/v1/agents/{agent_id}/logs", app.logs, methods=["GET"]),
            *(_static_routes(static) if static is not None else []),
            *([Route("/metrics", metrics_route, methods=["GET"])] if metrics is not None else []),
        ],
        exception_handlers={404: not_found, 405: not_found},
    )))


def host_guard(origins: set[str], app: Any) -> Any:
    """ASGI: refuse (421) a request whose ``Host`` is not the bound address (DNS rebinding:
    a page at evil.example whose name now resolves to 127.0.0.1 is same-origin with itself,
    sends no ``Origin`` on a GET and its own name as ``Host``). ``origins`` is read per
    request (filled in once the port is known); the hosts allowed are theirs."""

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await app(scope, receive, send)
        raw = next((v for k, v in scope.get("headers") or () if k == b"host"), b"")
        host = raw.decode("latin-1").lower()
        if f"http://{host}" not in origins:
            allowed = sorted(o.removeprefix("http://") for o in origins)
            shown = host if len(host) <= 80 else host[:80] + "..."
            err = CapabilityDenied(
                f"the Host header {shown!r} is not this server's address ({', '.join(allowed)}): a page "
                "reaching it under another name (DNS rebinding) is refused; use the address it is bound to",
                reason="host", host=shown, http_status=421)
            return await _error_response(err)(scope, receive, send)
        return await app(scope, receive, send)

    return guarded


# ---------------------------------------------------------------------------- the server
@dataclass
class HttpServer:
    """A running uvicorn server inside the caller's event loop."""

    host: str
    port: int
    server: Any
    task: asyncio.Task[None]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(asyncio.shield(self.task), 5.0)
        if not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


def own_origins(host: str, port: int) -> set[str]:
    """The origins a server bound to ``host:port`` answers as (its own pages' ``Origin``, and
    after ``http://`` the ``Host`` headers ``host_guard`` accepts): ``core.hosts.served_hosts``."""
    return {f"http://{h}" for h in served_hosts(host, port)}


async def start_server(app_factory: Callable[[set[str]], Any], host: str, port: int,
                       limits: SlowClientLimits | None = None) -> HttpServer:
    """Serve the app on ``host:port`` (port 0: any free port) as a task of this loop, with the
    slow-client deadlines and pending cap of ``limits`` (rpc/slow_clients.py)."""
    import socket

    try:
        importlib.import_module("starlette")  # the app is built from it below
        import uvicorn
    except ImportError as err:
        raise InvalidRequest(f"the HTTP API needs the http extra ({err.name} is missing): "
                             "pip install 'agentix[http]'", field="http") from None

    class _Embedded(uvicorn.Server):
        # the kernel owns SIGTERM/SIGINT; uvicorn must not replace its handlers
        def capture_signals(self) -> contextlib.AbstractContextManager[None]:
            return contextlib.nullcontext()

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP
    # (accepted ones inherit it); without it every keep-alive response waits ~40 ms for an ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise InvalidRequest(f"--http {host}:{port}: cannot listen there: {err.strerror or err}",
                             field="http") from None
    sock.set_inheritable(False)
    bound = sock.getsockname()[1]
    origins = own_origins(host, bound)
    # at most MAX_CONCURRENCY connections and requests at once (streams included): beyond, 503
    # (the operator socket has its own in-flight bound: rpc/server.py)
    # a request head must arrive within its deadline and few connections may wait for one, so
    # slow-header clients never hold those MAX_CONCURRENCY slots (rpc/slow_clients.py)
    config = guarded_config(app_factory(origins), limits, lifespan="off", log_level="warning",
                            access_log=False, timeout_graceful_shutdown=2, server_header=False,
                            date_header=False, limit_concurrency=MAX_CONCURRENCY)
    server = _Embedded(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="http-api")
    while not server.started:
        if task.done():
            sock.close()
            task.result()  # raises the start-up error
            raise RuntimeError("the HTTP server stopped during start-up")
        await asyncio.sleep(0.01)
    return HttpServer(host, bound, server, task)
