"""An agentix agent published as an A2A server.
(Over 400 lines: the config, the card, the executor and the HTTP guard are one server's parts,
each used only here; the push sender lives in a2a/push.py.)

    app = build_app(A2AServerConfig(home=..., manifest=..., token=..., url="http://host:8700/"))
    # or: agentix a2a serve agent.yaml --port 8700      (token from $AGENTIX_A2A_TOKEN or --token-file)

Rules:

- The agent card comes from the agent's manifest: its ``name``, ``description``, one skill
  describing the agent, text in and out, streaming and push notifications, and a required
  HTTP bearer security scheme. The card (``/.well-known/agent-card.json``) is public; every
  other request needs ``Authorization: Bearer TOKEN`` of a known client (compared in
  constant time against each) or gets 401 with a JSON body saying so. There is no
  unauthenticated mode.
- Clients: ``clients`` names each client and its own token (``token`` alone is the client
  ``default``). The token names the client, and ``a2a-sdk`` keys every task and push config
  on it (``ServerCallContext.user``): another client's get, cancel, subscribe, continue,
  list or push-config call on a task is ``TaskNotFoundError``, as for no such task.
- Push notifications (``agentix.a2a.push``): a client's webhook for its task gets every
  update, POSTed by the kernel (``a2a.push``: no loopback/private/link-local target unless
  ``push_allow`` names the host, pinned, no redirects, bounded, audited); a refused URL is
  refused when it is registered.
- A request body over ``max_body`` bytes (default 256 KiB) is refused with 413 before it is
  parsed (by its Content-Length, or while it is read when chunked).
- Each A2A task is one run of the agent: the server spawns the manifest through the kernel's
  operator socket (the connection bound as the face ``a2a``, so every spawn is audited ``by:
  a2a``) with the task's text as the agent's first message, waits for it (``timeout``), and
  completes the task with the agent's result as a text artifact, or fails it with the exit
  reason. The agent runs under its manifest's grants like any other: A2A gives a caller no
  capability the manifest does not.
- Streaming: the card says ``streaming: true``; ``SendStreamingMessage`` (``message/stream``)
  answers with Server-Sent Events as the task moves (the task ``submitted``, ``working`` once
  the agent is spawned, the result artifact, then ``completed``/``failed``/``canceled``), and
  ``SubscribeToTask`` (``tasks/resubscribe``) joins a running task's stream (a finished one is
  ``UnsupportedOperationError``: read it with ``GetTask``).
- ``CancelTask`` (``tasks/cancel``) of a running task stops its run through the kernel (the
  call is audited ``agent.stop`` ``by: a2a``; the agent exits ``killed``), then reports the
  task ``canceled`` (on its stream too). A task that finished first is not cancelable
  (``TaskNotCancelableError``) and keeps its result.
- With ``stream_output`` (``--stream-output``), what the agent writes to its log streams as
  it is written, appended to the task's artifact ``output`` (off by default).
- Unknown task ids, malformed JSON-RPC and unsupported methods are answered by ``a2a-sdk``
  with the protocol's errors (``TaskNotFoundError``, ...).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from a2a.helpers.proto_helpers import new_task_from_user_message, new_text_artifact, new_text_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    HTTPAuthSecurityScheme,
    Part,
    SecurityRequirement,
    SecurityScheme,
    StringList,
)
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, SimpleUser

from agentix.a2a.push import CLIENT, BoundedPushConfigs, KernelWebhooks, face_kernel
from agentix.sdk._results import answer_text
from agentix.sdk.kernel import Kernel

__all__ = ["A2AServerConfig", "CARD_PATH", "DEFAULT_CLIENT", "agent_card", "build_app"]

log = logging.getLogger(__name__)

CARD_PATH = "/.well-known/agent-card.json"
DEFAULT_MAX_BODY = 256 * 1024
MIN_TOKEN_LENGTH = 16


class A2AConfigError(ValueError):
    """The server's configuration is unusable (no token, no manifest name, ...)."""


CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
#: the client name of the single ``token`` (``$AGENTIX_A2A_TOKEN``)
DEFAULT_CLIENT = "default"


@dataclass(frozen=True)
class A2AServerConfig:
    """What one A2A server publishes: the agent ``manifest`` (a dict whose relative
    ``program`` resolves against ``base_dir``), reached at ``url``, guarded by bearer tokens:
    ``clients`` maps each client's name to its token (``token`` alone is the client
    ``default``). A client's tasks are its own: another client cannot see, follow, cancel or
    set a webhook on them."""

    home: Path | None
    manifest: dict[str, Any]
    url: str
    token: str = ""
    clients: Mapping[str, str] = field(default_factory=dict)
    base_dir: Path | None = None
    max_body: int = DEFAULT_MAX_BODY
    timeout: float = 300.0
    #: stream what the agent writes to its log (stdout and stderr) to the client as it is
    #: written, as the artifact ``output``; off by default: the log is the operator's, and
    #: publishing it to A2A callers is the operator's choice
    stream_output: bool = False
    #: hosts (names or addresses) a client's push-notification webhook may reach even when
    #: they are loopback or private (``--push-allow``); others must be public addresses
    push_allow: tuple[str, ...] = ()
    #: seconds one push notification may take
    push_timeout: float = 10.0

    def __post_init__(self) -> None:
        self.identities()  # refuses an unusable set of clients
        if not isinstance(self.manifest.get("name"), str):
            raise A2AConfigError('the published manifest needs a "name"')
        if self.max_body < 1024:
            raise A2AConfigError("max_body must be at least 1024 bytes")
        if not 0 < self.push_timeout <= 30:
            raise A2AConfigError("push_timeout must be more than 0 and at most 30 seconds")
        if isinstance(self.push_allow, str) or not all(isinstance(h, str) and h for h in self.push_allow):
            raise A2AConfigError("push_allow must be a list of host names or addresses")

    def identities(self) -> dict[str, str]:
        """Client name by token; refuses no client, a short or shared token, a bad name."""
        clients = dict(self.clients)
        if self.token:
            if DEFAULT_CLIENT in clients:
                raise A2AConfigError(f"the client name {DEFAULT_CLIENT!r} is the single token's; "
                                     "name the clients differently")
            clients[DEFAULT_CLIENT] = self.token
        if not clients:
            raise A2AConfigError(f"an A2A server needs a bearer token of at least {MIN_TOKEN_LENGTH} "
                                 "characters (set $AGENTIX_A2A_TOKEN, pass --token-file, or name clients "
                                 "with --clients-file)")
        out: dict[str, str] = {}
        for name, token in clients.items():
            if not isinstance(name, str) or not CLIENT_NAME.fullmatch(name):
                raise A2AConfigError(f"client name {name!r} must be 1-64 letters, digits, _ . @ - "
                                     "(starting with a letter or digit)")
            if not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH or not token.isprintable() \
                    or token != token.strip():
                raise A2AConfigError(f"client {name!r} needs a bearer token of at least {MIN_TOKEN_LENGTH} "
                                     "printable characters (no surrounding spaces)")
            if token in out:
                raise A2AConfigError(f"clients {out[token]!r} and {name!r} share a token; each client needs "
                                     "its own (its tasks are keyed on it)")
            out[token] = name
        return out


def agent_card(cfg: A2AServerConfig) -> AgentCard:
    """The A2A agent card for the manifest: name, description, one skill, bearer auth."""
    m = cfg.manifest
    name = m["name"]
    desc = m.get("description") or f"the agentix agent {name}"
    return AgentCard(
        name=name, description=desc, version=str(m.get("version") or "0.1.0"),
        supported_interfaces=[AgentInterface(url=cfg.url, protocol_binding="JSONRPC", protocol_version="1.0")],
        capabilities=AgentCapabilities(streaming=True, push_notifications=True),
        default_input_modes=["text/plain"], default_output_modes=["text/plain"],
        skills=[AgentSkill(id=name, name=name, description=desc, tags=["agentix"])],
        security_schemes={"bearer": SecurityScheme(http_auth_security_scheme=HTTPAuthSecurityScheme(
            scheme="bearer", description="the token the operator gave this server"))},
        security_requirements=[SecurityRequirement(schemes={"bearer": StringList()})],
    )


class _Run:
    """One task's run: the agent it spawned (once spawned) and whether it was cancelled.

    The spawn runs in a worker thread and a cancel on the event loop; each side writes its
    own field, then reads the other's, so whichever comes second stops the agent. The task's
    end is reported once: ``lock`` makes "cancelled" and "finished" exclusive."""

    def __init__(self) -> None:
        self.agent_id: str | None = None
        self.cancelled = threading.Event()
        self.finished = False
        self.lock = asyncio.Lock()
        # set once cancel() has reported the task canceled: the run's execute() must not end
        # before that (its end closes the client's stream, which would miss the report)
        self.reported = asyncio.Event()


class AgentixExecutor(AgentExecutor):
    """One A2A task = one run of the published agent, spawned through the operator socket;
    cancelling the task stops that run."""

    def __init__(self, cfg: A2AServerConfig) -> None:
        self.cfg = cfg
        self._runs: dict[str, _Run] = {}

    def _kernel(self) -> Kernel:
        """A connection to the kernel's operator socket bound as the face ``a2a``."""
        return face_kernel(self.cfg.home)

    def _follow(self, k: Kernel, agent_id: str, emit: Callable[[str], None]) -> None:
        """Hand what the agent writes to its log to ``emit`` as it is written, until it exits
        or the task's timeout."""
        deadline = time.monotonic() + self.cfg.timeout
        offset = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            data, offset, live = k.logs(agent_id, offset, wait=min(1.0, left))
            if data:
                emit(data)
            elif not live:
                return

    def _run(self, text: str, run: _Run, emit: Callable[[str], None] | None = None) -> tuple[bool, str] | None:
        """Spawn and wait (handing its output to ``emit`` if given); ``None`` when the task
        was cancelled (its canceller reports it)."""
        with self._kernel() as k:
            if run.cancelled.is_set():
                return None
            spawned = k.spawn(dict(self.cfg.manifest), message=text, base_dir=self.cfg.base_dir)
            run.agent_id = spawned.agent_id
            if run.cancelled.is_set():  # cancelled while it was being spawned
                k.stop(spawned.agent_id)
                return None
            started = time.monotonic()
            if emit is not None:
                self._follow(k, spawned.agent_id, emit)
            info = k.wait(spawned.agent_id, max(0.0, self.cfg.timeout - (time.monotonic() - started)))
            if run.cancelled.is_set():
                return None
            if info.state != "exited":
                k.stop(spawned.agent_id)
                return False, f"the agent did not finish within {self.cfg.timeout:g} s and was stopped"
            if info.reason != "completed":
                return False, f"the agent ended {info.reason} (exit code {(info.exit or {}).get('code')})"
            return True, answer_text(info.result)

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.message is not None
        task = context.current_task or new_task_from_user_message(context.message)
        if context.current_task is None:
            await event_queue.enqueue_event(task)
        up = TaskUpdater(event_queue, task.id, task.context_id)
        run = self._runs[task.id] = _Run()
        emit = self._emitter(up, run, task.id) if self.cfg.stream_output else None
        try:
            await up.start_work()
            try:
                outcome = await asyncio.to_thread(self._run, context.get_user_input(), run, emit)
            except Exception as err:  # noqa: BLE001 - the kernel's refusal becomes the task's failure
                outcome = None if run.cancelled.is_set() else \
                    (False, f"{getattr(err, 'code', type(err).__name__)}: {err}")
            async with run.lock:  # the run's end is reported once: here, or by cancel()
                cancelled = outcome is None or run.cancelled.is_set()
                if not cancelled:
                    assert outcome is not None
                    run.finished = True
                    ok, text = outcome
                    if ok:
                        await up.add_artifact([new_text_artifact(name="result", text=text).parts[0]],
                                              name="result")
                        await up.complete()
                    else:
                        await up.failed(new_text_message(text, context_id=task.context_id, task_id=task.id))
            if cancelled:
                await run.reported.wait()  # cancel() reports it; the stream must carry that
        finally:
            if self._runs.get(task.id) is run:
                del self._runs[task.id]

    def _emitter(self, up: TaskUpdater, run: _Run, task_id: str) -> Callable[[str], None]:
        """``emit(text)`` for the worker thread: appends ``text`` to the task's ``output``
        artifact on the event loop (never after the task's end was reported)."""
        loop = asyncio.get_running_loop()
        sent = False

        async def append(text: str) -> None:
            nonlocal sent
            async with run.lock:
                if run.cancelled.is_set() or run.finished:
                    return
                await up.add_artifact([Part(text=text)], artifact_id=f"{task_id}-output", name="output",
                                      append=sent)
                sent = True

        def emit(text: str) -> None:
            asyncio.run_coroutine_threadsafe(append(text), loop).result(timeout=30)

        return emit

    def _stop(self, agent_id: str) -> None:
        with self._kernel() as k:
            k.stop(agent_id)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        """Stop the task's run (through the kernel, audited ``agent.stop`` by ``a2a``; the
        agent's exit reason is ``killed``) and report the task ``canceled``."""
        task_id = context.task_id
        assert task_id is not None
        run = self._runs.get(task_id)
        if run is None:
            return  # no run behind it: the handler closes the task out as canceled
        async with run.lock:
            if run.finished:
                return  # it ended first: the handler answers with the finished task
            run.cancelled.set()
        try:
            if run.agent_id is not None:
                await asyncio.to_thread(self._stop, run.agent_id)
            up = TaskUpdater(event_queue, task_id, context.context_id or "")
            await up.cancel(new_text_message("cancelled by the client; the agent was stopped",
                                             context_id=context.context_id, task_id=task_id))
        finally:
            run.reported.set()


def _reply(status: int, message: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, list]:
    body = json.dumps({"jsonrpc": "2.0", "id": None,
                       "error": {"code": -32600 if status != 401 else -32001, "message": message}}).encode()
    hs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    hs += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    return status, body, hs


class Guard:
    """ASGI middleware: bearer auth on everything but the card, and a bound on request bodies.

    ``clients`` maps each client's name to its token (a single token is the client
    ``default``). The token a request carries names its client: the request goes on as that
    user (``scope["user"]``), which ``a2a-sdk`` keys every task and push config on."""

    def __init__(self, app: Any, clients: str | Mapping[str, str], max_body: int) -> None:
        if isinstance(clients, str):
            clients = {DEFAULT_CLIENT: clients}
        self.app, self.max_body = app, max_body
        self._clients = [(token.encode(), name) for name, token in clients.items()]

    def _who(self, given: bytes) -> str | None:
        """The client whose token ``given`` is, compared in constant time against every one."""
        found = None
        for token, name in self._clients:
            if hmac.compare_digest(given, token):
                found = name
        return found

    async def _send_error(self, send: Any, status: int, message: str, **headers: str) -> None:
        st, body, hs = _reply(status, message, headers)
        await send({"type": "http.response.start", "status": st, "headers": hs})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") == CARD_PATH:
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"")
        scheme, _, given = auth.partition(b" ")
        client = self._who(given.strip()) if scheme.lower() == b"bearer" else None
        if client is None:
            return await self._send_error(send, 401, "authentication required: send Authorization: Bearer "
                                          "<token> (the agent card names the scheme)", **{"www-authenticate":
                                                                                          "Bearer"})
        # the client's identity, for a2a-sdk's ServerCallContext: tasks and push configs are
        # keyed on it (a client's tasks are its own)
        scope = {**scope, "user": SimpleUser(client), "auth": AuthCredentials(["a2a_client"])}
        who = CLIENT.set(client)  # named in the audit of the webhooks its tasks make the kernel call
        try:
            return await self._bounded(scope, receive, send, headers)
        finally:
            CLIENT.reset(who)

    async def _bounded(self, scope: Any, receive: Any, send: Any, headers: dict[bytes, bytes]) -> None:
        length = headers.get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                n = -1
            if n < 0:
                return await self._send_error(send, 400, "Content-Length is not a byte count")
            if n > self.max_body:
                return await self._send_error(send, 413, f"request body of {n} bytes is over this server's "
                                              f"limit of {self.max_body} bytes")
        # the body is read here, bounded, before the app parses any of it (a chunked body has
        # no Content-Length to refuse by); the app then reads it from memory
        body = bytearray()
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return None
            body += msg.get("body", b"")
            if len(body) > self.max_body:
                return await self._send_error(send, 413, f"request body is over this server's limit of "
                                              f"{self.max_body} bytes")
            if not msg.get("more_body"):
                break
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)




def build_app(cfg: A2AServerConfig, *, executor: AgentExecutor | None = None) -> Any:
    """The ASGI app: the agent card, the A2A JSON-RPC endpoint at ``/``, behind ``Guard``.

    Tasks and push configs are the SDK's, keyed on the client the token names. Push
    notifications are delivered by the kernel (``agentix.a2a.push``). ``executor`` replaces
    the one that runs the manifest (tests of the protocol's ownership rules)."""
    card = agent_card(cfg)
    webhooks = KernelWebhooks(cfg.home, cfg.push_allow, cfg.push_timeout)
    pushes = BoundedPushConfigs()
    handler = DefaultRequestHandler(agent_executor=executor or AgentixExecutor(cfg), task_store=InMemoryTaskStore(),
                                    agent_card=card, push_config_store=pushes, push_sender=webhooks.sender(pushes),
                                    push_url_validator=webhooks.validator)
    app = Starlette(routes=[*create_agent_card_routes(card),
                            *create_jsonrpc_routes(handler, rpc_url="/", enable_v0_3_compat=True)])
    return Guard(app, {name: token for token, name in cfg.identities().items()}, cfg.max_body)
