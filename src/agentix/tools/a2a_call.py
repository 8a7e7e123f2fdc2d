"""a2a_call: send one message to a remote A2A agent (``a2a-sdk``'s client) on an agent's behalf.

Rules (the same as ``web_fetch``'s, hop for hop):

- ``url`` is the remote agent's base URL, ``http`` or ``https`` only. Before any connection its
  host is checked against the caller's grants (``network: HOST``), then the name is resolved
  and the address checked: private, loopback and link-local addresses only when a grant names
  the host or address explicitly.
- Every request of the exchange (the agent card, then the JSON-RPC call) goes to the address
  that was checked (the connection is pinned: ``Host`` and TLS SNI stay the host's name), and
  only to that host and port: an agent card naming another endpoint is refused, and
  redirects are not followed. Proxies from the environment are ignored.
- A response over ``max_bytes`` is cut off with ``limit_exceeded`` (for a streamed answer,
  the whole stream); the whole exchange has one ``timeout``.
- When the agent card says the remote agent streams, the message is sent with
  ``SendStreamingMessage`` and the answer is folded from the events as they come (status
  updates, artifact chunks, appended or replaced): the remote task's id is known from the
  first event. So a call that times out (or whose task is cancelled) first asks the remote
  agent to cancel that task (``CancelTask``, at most ``CANCEL_TIMEOUT`` seconds, the same
  pinned connection), rather than leave it working for nobody; the ``timeout`` error says
  which task and whether the cancel was accepted. A remote agent that does not stream is
  sent ``SendMessage`` and answers once, as before.
- The answer is ``{url, state, task_id, context_id, text}``: the remote task's state and the
  text of its artifacts and status message (or of the message it answered with).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from agentix.core.errors import AgentixError, CapabilityDenied, InvalidRequest, Timeout, ToolError
from agentix.core.hosts import normalize_host
from agentix.net.pinned import Permits, Resolver, pick_address, system_resolver

__all__ = ["CANCEL_TIMEOUT", "DEFAULT_MAX_BYTES", "MAX_MESSAGE_BYTES", "a2a_call"]

DEFAULT_MAX_BYTES = 1024 * 1024
#: how long a timed-out call waits for the remote agent to accept the cancel of its task
CANCEL_TIMEOUT = 5.0
#: a message to send is text of at most this many bytes (UTF-8)
MAX_MESSAGE_BYTES = 256 * 1024


def _texts(parts: Any) -> list[str]:
    return [p.text for p in parts if p.HasField("text")]


class _Folded:
    """The answer folded from an exchange's events: one task or message (the non-streaming
    answer), or a task, then its status updates and artifact chunks (a stream)."""

    TERMINAL = ("completed", "failed", "canceled", "rejected")

    def __init__(self, url: str) -> None:
        self.url = url
        self.message: dict[str, Any] | None = None
        self.task_id: str | None = None
        self.context_id: str | None = None
        self.state: str | None = None
        self.artifacts: dict[str, list[str]] = {}  # by artifact id, in the order first seen
        self.status_texts: list[str] = []

    def _status(self, status: Any) -> None:
        from a2a.types import TaskState

        self.state = TaskState.Name(status.state).removeprefix("TASK_STATE_").lower()
        self.status_texts = _texts(status.message.parts) if status.HasField("message") else []

    def _ours(self, task_id: str) -> bool:
        """An update belongs to the exchange's task (the first one named); a remote's updates
        for any other task are ignored."""
        self.task_id = self.task_id or task_id or None
        return not task_id or task_id == self.task_id

    def add(self, ev: Any) -> None:
        if ev.HasField("message"):
            m = ev.message
            self.message = {"url": self.url, "state": "message", "task_id": m.task_id or None,
                            "context_id": m.context_id or None, "text": "\n".join(_texts(m.parts))}
        elif ev.HasField("task"):
            t = ev.task
            self.task_id, self.context_id = t.id, t.context_id or None
            self.artifacts = {a.artifact_id: _texts(a.parts) for a in t.artifacts}
            self._status(t.status)
        elif ev.HasField("status_update"):
            if not self._ours(ev.status_update.task_id):
                return
            self._status(ev.status_update.status)
        elif ev.HasField("artifact_update"):
            u = ev.artifact_update
            if not self._ours(u.task_id):
                return
            texts = _texts(u.artifact.parts)
            if u.append:
                self.artifacts.setdefault(u.artifact.artifact_id, []).extend(texts)
            else:
                self.artifacts[u.artifact.artifact_id] = texts

    @property
    def running(self) -> bool:
        return self.message is None and self.task_id is not None and self.state not in self.TERMINAL

    def answer(self) -> dict[str, Any]:
        if self.message is not None:
            return self.message
        if self.task_id is None or self.state is None:
            raise ToolError(f"the A2A agent at {self.url} answered with no task and no message", url=self.url)
        texts = [x for chunk in self.artifacts.values() for x in chunk] + self.status_texts
        return {"url": self.url, "state": self.state, "task_id": self.task_id, "context_id": self.context_id,
                "text": "\n".join(texts)}


async def a2a_call(url: str, message: str, *, permits: Permits, task_id: str | None = None,
                   context_id: str | None = None, headers: dict[str, str] | None = None,
                   timeout: float = 60.0, max_bytes: int = DEFAULT_MAX_BYTES,
                   resolve: Resolver = system_resolver) -> dict[str, Any]:
    """Send ``message`` to the A2A agent at ``url``; ``permits(host, address)`` is the capability
    check. ``headers`` (the kernel's secret injection) go to that host only."""
    import httpx

    if not isinstance(message, str) or not message:
        raise InvalidRequest("a2a_call: 'message' must be non-empty text", field="message")
    if len(message.encode()) > MAX_MESSAGE_BYTES:
        raise InvalidRequest(f"a2a_call: 'message' is over {MAX_MESSAGE_BYTES} bytes", field="message")
    try:
        target = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as err:
        raise InvalidRequest(f"a2a_call: {url!r} is not a valid URL: {err}", field="url") from None
    if target.scheme not in ("http", "https"):
        raise CapabilityDenied(f"a2a_call allows only http and https, not {target.scheme or 'no scheme'}:",
                               reason="scheme", url=url)
    if not target.host:
        raise InvalidRequest(f"a2a_call: {url!r} has no host", field="url")
    host = normalize_host(target.host)
    port = target.port or (443 if target.scheme == "https" else 80)
    left: dict[str, Any] = {}  # what a timed-out exchange left behind: the remote task, its cancel
    try:
        async with asyncio.timeout(timeout):
            addr = await pick_address(host, port, permits, resolve)
            return await _exchange(url, message, target.scheme, host, port, addr, task_id, context_id,
                                   headers or {}, timeout, max_bytes, left)
    except TimeoutError:
        said = ""
        if "task_id" in left:
            said = (f"; its task {left['task_id']} was cancelled" if left.get("remote_cancelled") else
                    f"; cancelling its task {left['task_id']} failed ({left.get('cancel_error')})")
        raise Timeout(f"a2a_call to {url} took longer than {timeout:g} s{said}", url=url, timeout=timeout,
                      **left) from None


async def _cancel_remote(client: Any, task_id: str, left: dict[str, Any]) -> None:
    """Ask the remote agent to cancel ``task_id`` (bounded); record whether it did."""
    from a2a.types import CancelTaskRequest, TaskState

    left["task_id"] = task_id
    try:
        task = await asyncio.wait_for(client.cancel_task(CancelTaskRequest(id=task_id)), CANCEL_TIMEOUT)
        left["remote_cancelled"] = task.status.state == TaskState.TASK_STATE_CANCELED
    except (Exception, asyncio.TimeoutError) as err:  # noqa: BLE001 - best effort, reported
        left["remote_cancelled"] = False
        left["cancel_error"] = f"{type(err).__name__}: {err}"[:300]


async def _exchange(url: str, message: str, scheme: str, host: str, port: int, addr: str, task_id: str | None,
                    context_id: str | None, headers: dict[str, str], timeout: float,
                    max_bytes: int, left: dict[str, Any]) -> dict[str, Any]:
    import httpx
    from a2a.client import ClientConfig, create_client
    from a2a.client.errors import A2AClientError
    from a2a.types import Message, Part, Role, SendMessageRequest

    from agentix.net.pinned_httpx import PinnedTransport

    transport = PinnedTransport(scheme, host, port, addr, max_bytes)
    folded = _Folded(url)
    async with httpx.AsyncClient(transport=transport, headers=headers, timeout=timeout, trust_env=False,
                                 follow_redirects=False) as http:
        try:
            # streaming when the card says the agent streams (the SDK's choice), else one answer
            client = await create_client(url, ClientConfig(httpx_client=http, streaming=True))
            msg = Message(role=Role.ROLE_USER, parts=[Part(text=message)], message_id=str(uuid.uuid4()),
                          task_id=task_id or None, context_id=context_id or None)
            try:
                async for resp in client.send_message(SendMessageRequest(message=msg)):
                    folded.add(resp)
            except asyncio.CancelledError:
                if folded.running:  # timed out or abandoned: do not leave it working for nobody
                    assert folded.task_id is not None
                    await _cancel_remote(client, folded.task_id, left)
                raise
        except AgentixError:
            raise
        except (A2AClientError, httpx.HTTPError, ValueError) as err:
            cause = err.__cause__ or err.__context__
            if isinstance(cause, AgentixError):
                raise cause from None
            raise ToolError(f"a2a_call to {url} failed: {type(err).__name__}: {err}", url=url) from None
    if folded.message is None and folded.task_id is None:
        raise ToolError(f"the A2A agent at {url} sent no answer", url=url)
    return folded.answer()
