"""The kernel's side of the HTTP API: operator tokens, idempotency keys, and the backend
that ``rpc/http.py`` calls (docs/http.md).

- **Tokens** (``tokens.create/list/revoke``, operator methods in the method table): a token
  is ``agx_<id>_<secret>``; the store keeps only SHA-256 of the secret (table
  ``http_tokens``, written by the store's one writer). The kernel keeps the rows in memory
  too (it is their only writer), so checking a bearer token reads no disk.
- **The backend**: every HTTP call is ``Pipeline.run`` with ``Caller(name="http:<token
  name>")`` — the same methods, stages and records as the operator socket. Which methods a
  viewer may call is read from the table (``durability == "no_effect"``), not listed here.
- **Idempotency keys** (table ``http_idempotency``): the first response to a spawning POST
  with an ``Idempotency-Key`` is kept for ``IDEMPOTENCY_TTL`` seconds per token name.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from agentix.core.units import parse_duration
from agentix.core.errors import AgentixError, InvalidRequest, NotFound, StateError, Unauthenticated
from agentix.kernel.dispatch import Call, Caller, EventSink, Pipeline
from agentix.kernel.method_params import params_schema
from agentix.kernel.methods import method
from agentix.kernel.record_gate import quiet
from agentix.rpc.slow_clients import SlowClientLimits
from agentix.rpc.http import HttpServer, MethodInfo, Principal, Stored, create_app, start_server
from agentix.rpc.static import StaticSet, load_static
from agentix.store.db import Database, Txn

if TYPE_CHECKING:
    from agentix.kernel.telemetry import Metrics

__all__ = ["IDEMPOTENT", "IDEMPOTENCY_TTL", "HttpTokens", "KernelHttpBackend", "register", "start_http"]

log = logging.getLogger(__name__)

#: the methods that start agents: a retried POST with the same Idempotency-Key must not
#: start a second one (the brief of issue 16: spawn and goal submission)
IDEMPOTENT = frozenset({"agent.spawn", "agent.submit_goal", "agent.run", "package.run"})
IDEMPOTENCY_TTL = 24 * 3600.0
#: the largest request body the HTTP API reads (the socket's frame limit is the same idea)
DEFAULT_MAX_BODY = 1024 * 1024
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")
_TOKEN = re.compile(r"^agx_([0-9a-f]{16})_([A-Za-z0-9_-]{20,100})\Z")


@dataclass(frozen=True)
class TokenRecord:
    id: str
    name: str
    role: str
    secret_hash: bytes
    created_at: float
    expires_at: float | None
    revoked_at: float | None

    def public(self, now: float) -> dict[str, Any]:
        state = ("revoked" if self.revoked_at is not None
                 else "expired" if self.expires_at is not None and now >= self.expires_at else "active")
        return {"id": self.id, "name": self.name, "role": self.role, "created_at": self.created_at,
                "expires_at": self.expires_at, "revoked_at": self.revoked_at, "state": state}


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class HttpTokens:
    """Operator tokens for HTTP callers: held in memory, durable in the store."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock
        rows = db.reader().execute(
            "SELECT id, name, role, secret_hash, created_at, expires_at, revoked_at FROM http_tokens").fetchall()
        self._by_id: dict[str, TokenRecord] = {r[0]: TokenRecord(r[0], r[1], r[2], bytes(r[3]), r[4], r[5], r[6])
                                               for r in rows}

    def _by_name(self, name: str) -> TokenRecord | None:
        return next((t for t in self._by_id.values() if t.name == name), None)

    async def create(self, name: str, role: str, ttl: float | str | None) -> tuple[TokenRecord, str]:
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidRequest('"name" must be 1-64 letters, digits, "_", "." or "-"', field="name")
        if role not in ("viewer", "operator"):
            raise InvalidRequest('"role" must be viewer or operator', field="role")
        if ttl is not None:
            try:
                ttl = parse_duration(ttl)  # type: ignore[arg-type]
            except (ValueError, TypeError):
                ttl = 0
            if not ttl:
                raise InvalidRequest('"ttl" must be a positive duration such as 3600, "30m", "12h" or "7d"',
                                     field="ttl")
        if self._by_name(name) is not None:
            raise StateError(f"a token named {name!r} exists already (names stay taken after "
                             "revocation: pick another)", field="name")
        now = self.clock()
        tid, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        rec = TokenRecord(tid, name, role, _hash(secret), now, now + ttl if ttl else None, None)

        def op(txn: Txn) -> None:
            txn.conn.execute("INSERT INTO http_tokens VALUES (?,?,?,?,?,?,?)",
                             (rec.id, rec.name, rec.role, rec.secret_hash, rec.created_at, rec.expires_at, None))

        await self.db.write(op)
        self._by_id[tid] = rec
        return rec, f"agx_{tid}_{secret}"

    async def revoke(self, name: str) -> TokenRecord:
        rec = self._by_name(name) if isinstance(name, str) else None
        if rec is None:
            raise NotFound(f"no HTTP token named {name!r}; `agentix tokens list` shows them", name=name)
        if rec.revoked_at is not None:
            return rec
        now = self.clock()

        def op(txn: Txn) -> None:
            txn.conn.execute("UPDATE http_tokens SET revoked_at=? WHERE id=?", (now, rec.id))

        await self.db.write(op)
        rec = replace(rec, revoked_at=now)
        self._by_id[rec.id] = rec
        return rec

    def list(self) -> list[dict[str, Any]]:
        now = self.clock()
        return [t.public(now) for t in sorted(self._by_id.values(), key=lambda t: t.created_at)]

    def authenticate(self, token: str) -> Principal:
        m = _TOKEN.match(token)
        rec = self._by_id.get(m.group(1)) if m else None
        if m is None or rec is None or not hmac.compare_digest(rec.secret_hash, _hash(m.group(2))):
            raise Unauthenticated("the bearer token is not valid: create one with "
                                  "`agentix tokens create NAME --role viewer|operator`", reason="invalid")
        if rec.revoked_at is not None:
            raise Unauthenticated(f"the token {rec.name!r} was revoked", reason="revoked", name=rec.name)
        if rec.expires_at is not None and self.clock() >= rec.expires_at:
            raise Unauthenticated(f"the token {rec.name!r} has expired; create a new one", reason="expired",
                                  name=rec.name)
        return Principal(rec.name, rec.role)  # type: ignore[arg-type]


class KernelHttpBackend:
    """``rpc.http.HttpBackend`` over this kernel: one more caller of its pipeline, whose
    refusals and calls it records in ``events``; idempotency keys are kept in ``db``."""

    def __init__(self, pipeline: Pipeline, events: EventSink, tokens: HttpTokens, db: Database,
                 clock: Callable[[], float] = time.time) -> None:
        self.pipeline, self.events, self.tokens, self.db, self.clock = pipeline, events, tokens, db, clock

    def methods(self) -> list[MethodInfo]:
        out = []
        for spec in self.pipeline.specs():
            if not spec.operator:
                continue
            out.append(MethodInfo(spec.name, spec.policy.durability == "no_effect", spec.policy.doc,
                                  params_schema(spec.name), idempotent=spec.name in IDEMPOTENT))
        return out

    def authenticate(self, token: str) -> Principal:
        return self.tokens.authenticate(token)

    async def call(self, principal: Principal, method_name: str, params: dict[str, Any]) -> Any:
        return await self.pipeline.run(Caller(agent_id=None, name=principal.label), method_name, params)

    async def refused(self, principal: Principal, method_name: str, err: AgentixError) -> None:
        if self.pipeline.observer is not None:  # kernel/telemetry.py counts it
            self.pipeline.observer.refused(method_name, err)
        with quiet(principal.label):  # nothing changed: within the token's record quota
            await self.events.record("http.refused", None, {"by": principal.label, "method": method_name,
                                                            "error": err.code, "message": err.message})

    async def completed(self, principal: Principal, method_name: str, status: int,
                        err: AgentixError | None) -> None:
        data: dict[str, Any] = {"by": principal.label, "method": method_name, "status": status, "ok": err is None}
        if err is not None:
            data["error"] = err.code
        await self.events.record("http.call", None, data)

    async def idempotency_get(self, principal: Principal, key: str) -> Stored | None:
        row = self.db.reader().execute(
            "SELECT method, request_hash, status, response, created_at FROM http_idempotency "
            "WHERE principal=? AND key=?", (principal.name, key)).fetchone()
        if row is None or self.clock() - row[4] >= IDEMPOTENCY_TTL:
            return None
        return Stored(row[0], bytes(row[1]), row[2], bytes(row[3]))

    async def idempotency_put(self, principal: Principal, key: str, stored: Stored) -> None:
        now = self.clock()

        def op(txn: Txn) -> None:
            txn.conn.execute("DELETE FROM http_idempotency WHERE created_at < ?", (now - IDEMPOTENCY_TTL,))
            txn.conn.execute("INSERT OR REPLACE INTO http_idempotency VALUES (?,?,?,?,?,?,?)",
                             (principal.name, key, stored.method, stored.request_hash, stored.status,
                              stored.body, now))

        await self.db.write(op)


def register(pipeline: Pipeline, *, db: Database, events: EventSink,
             clock: Callable[[], float] = time.time) -> HttpTokens:
    """Add ``tokens.create/list/revoke/verify`` (operator methods) to ``pipeline``; the tokens
    are kept in ``db``, a refused ``tokens.verify`` is recorded in ``events``; ``clock`` (wall
    time) dates them and decides their expiry."""
    tokens = HttpTokens(db, clock)

    async def tokens_create(call: Call) -> dict[str, Any]:
        p = call.params
        rec, token = await tokens.create(p.get("name"), p.get("role"), p.get("ttl"))  # type: ignore[arg-type]
        call.event_data = {"name": rec.name, "role": rec.role, "expires_at": rec.expires_at}
        return {**rec.public(tokens.clock()), "token": token}

    async def tokens_list(call: Call) -> dict[str, Any]:
        return {"tokens": tokens.list()}

    async def tokens_revoke(call: Call) -> dict[str, Any]:
        rec = await tokens.revoke(call.params.get("name"))  # type: ignore[arg-type]
        call.event_data = {"name": rec.name}
        return rec.public(tokens.clock())

    async def tokens_verify(call: Call) -> dict[str, Any]:
        """Who a bearer token names (for a face that serves HTTP itself: `agentix mcp --http`)."""
        token = call.params.get("token")
        if not isinstance(token, str):
            raise InvalidRequest('"token" must be the bearer token string', field="token")
        try:
            p = tokens.authenticate(token)
        except Unauthenticated as err:
            await events.record("http.refused", None, {"by": call.caller.label(), "method": "tokens.verify",
                                                         "error": err.code, "message": err.message})
            raise
        return {"name": p.name, "role": p.role}

    for name, fn in [("tokens.create", tokens_create), ("tokens.list", tokens_list),
                     ("tokens.revoke", tokens_revoke), ("tokens.verify", tokens_verify)]:
        pipeline.register(method(name, fn, operator=True))
    return tokens


def dashboard_files() -> StaticSet:
    """The web dashboard's files, read as package data of ``agentix.web`` (no code imported)."""
    from importlib import resources

    with resources.as_file(resources.files("agentix.web").joinpath("static")) as root:
        return load_static(root)


async def start_http(backend: KernelHttpBackend, host: str, port: int, *,
                     max_body: int = DEFAULT_MAX_BODY, metrics: Metrics | None = None,
                     limits: SlowClientLimits | None = None) -> HttpServer:
    """Serve the HTTP API of ``backend`` (the kernel's ``http``) on ``host:port`` in this event loop."""
    from agentix import __version__

    static = dashboard_files()
    server = await start_server(
        lambda origins: create_app(backend, origins=origins, max_body=max_body, version=__version__,
                                   static=static, metrics=metrics.render if metrics is not None else None),
        host, port, limits)
    log.info("HTTP API and dashboard on %s/ (sign in with a token from `agentix tokens create NAME "
             "--role operator`)", server.url)
    return server
