"""A2A push notifications for the published agent, delivered by the kernel.

``a2a-sdk`` does the protocol: ``InMemoryPushNotificationConfigStore`` holds each client's
webhook configs (keyed by the client's identity, so a client sees and sets only its own), and
``BasePushNotificationSender`` turns every task update into the spec's notification (the
``StreamResponse`` as JSON, the config's ``token`` as ``X-A2A-Notification-Token``, its
``authentication`` as ``Authorization``). What this module changes is who makes the request:
the sender's HTTP client has a transport (``KernelTransport``) that hands each notification to
the kernel's ``a2a.push`` (kernel/a2a_push.py) on a connection bound as the face ``a2a``. The
kernel decides the target (http(s) only; no loopback, private, link-local or metadata address
unless the operator's ``push_allow`` names the host), pins the connection to the checked
address, follows no redirect, bounds the time and the sizes, and audits every delivery and
every refusal (event ``a2a.push``, ``by: a2a``).

A webhook is also decided when a client registers it (``validator``, the handler's
``push_url_validator``): a refused URL is refused to the client then (``InvalidParamsError``
naming why and what the operator can do), nothing is stored and nothing is ever sent to it.

Delivery is the SDK's: best effort, in the order the task's events happen (the task's event
loop awaits each notification before the next), a failed delivery logged and audited, never
failing the task.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from contextvars import ContextVar
from typing import Any

import httpx
from a2a.server.tasks import BasePushNotificationSender, InMemoryPushNotificationConfigStore
from a2a.utils.errors import InvalidParamsError

from agentix.sdk.errors import ConnectionClosed
from agentix.sdk.kernel import Kernel

__all__ = ["CLIENT", "MAX_WEBHOOKS_PER_TASK", "BoundedPushConfigs", "KernelTransport", "KernelWebhooks",
           "face_kernel"]


def face_kernel(home: Any) -> Kernel:
    """A connection to the kernel's operator socket bound as the face ``a2a`` (every call it
    makes is audited ``by: a2a``); closed again if the bind fails."""
    k = Kernel(home)
    try:
        k.bind("a2a")
    except BaseException:
        k.close()
        raise
    return k


#: the A2A client the current request came from (set by the server's guard); a task's own
#: work (its executor, its push deliveries) runs in tasks started by the request that created
#: it, so it carries its creator, who is the only client that can register its webhooks
CLIENT: ContextVar[str | None] = ContextVar("agentix_a2a_client", default=None)

#: webhooks one client may register on one task (each update is one delivery per webhook)
MAX_WEBHOOKS_PER_TASK = 4

log = logging.getLogger(__name__)


def _task_id(body: bytes) -> str:
    """The task a notification (a ``StreamResponse`` as JSON) is about, for the audit record."""
    try:
        doc = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(doc, dict):
        return ""
    for key, field in (("task", "id"), ("statusUpdate", "taskId"), ("artifactUpdate", "taskId")):
        part = doc.get(key)
        if isinstance(part, dict) and isinstance(part.get(field), str):
            return part[field]
    return ""


class BoundedPushConfigs(InMemoryPushNotificationConfigStore):
    """The SDK's in-memory store of push configs (keyed by client), with at most
    ``MAX_WEBHOOKS_PER_TASK`` per client per task: a client cannot turn one task into a flood
    of deliveries. Replacing a config (the same ``id``) is always allowed."""

    async def set_info(self, task_id: str, notification_config: Any, context: Any) -> Any:
        have = await self.get_info(task_id, context)
        given = notification_config.id or task_id
        if len(have) >= MAX_WEBHOOKS_PER_TASK and given not in {c.id for c in have}:
            raise InvalidParamsError(message=f"task {task_id} has {len(have)} webhooks, the most one client may "
                                             f"register on a task; delete one first")
        return await super().set_info(task_id, notification_config, context)


class KernelWebhooks:
    """The kernel side of push notifications for one A2A server: ``push_allow`` is the
    operator's list of hosts a webhook may reach even when they are loopback or private."""

    def __init__(self, home: Any, push_allow: tuple[str, ...], timeout: float) -> None:
        self.home, self.push_allow, self.timeout = home, list(push_allow), timeout
        # idle connections bound as ``a2a`` (one per concurrent push; a connection that failed
        # is closed, not reused)
        self._idle: list[Kernel] = []
        self._lock = threading.Lock()

    def _take(self) -> Kernel:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return face_kernel(self.home)

    def call(self, **params: Any) -> dict[str, Any]:
        """``a2a.push`` on a connection bound as ``a2a`` (blocking: run it in a thread)."""
        client = CLIENT.get()
        if client is not None:
            params["client"] = client
        k = self._take()
        try:
            out = k.call("a2a.push", allow_hosts=self.push_allow, timeout=self.timeout, **params)
        except ConnectionClosed:
            k.close()  # broken: not reused
            raise
        except Exception as err:
            if getattr(err, "code", None) is None:  # not the kernel's answer (a bug, a broken socket)
                k.close()
            else:  # the kernel refused or the delivery failed: the connection is fine
                with self._lock:
                    self._idle.append(k)
            raise
        with self._lock:
            self._idle.append(k)
        return out

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for k in idle:
            k.close()

    async def validator(self, url: str) -> bool:
        """The handler's ``push_url_validator``: the kernel decides ``url`` (sending nothing);
        a refusal becomes the client's ``InvalidParamsError`` saying why."""
        try:
            await asyncio.to_thread(self.call, url=url, check=True)
        except Exception as err:  # noqa: BLE001 - the kernel's refusal, told to the client
            message = getattr(err, "message", None) or str(err)
            raise InvalidParamsError(message=f"push notification URL refused: {message}") from None
        return True

    def sender(self, store: InMemoryPushNotificationConfigStore) -> BasePushNotificationSender:
        """The SDK's sender, its requests made by the kernel."""
        return BasePushNotificationSender(httpx.AsyncClient(transport=KernelTransport(self)), store)


class KernelTransport(httpx.AsyncBaseTransport):
    """An httpx transport that makes each POST through the kernel's ``a2a.push``: the SDK's
    sender builds the request (body and headers as the spec says), the kernel sends it."""

    def __init__(self, webhooks: KernelWebhooks) -> None:
        self.webhooks = webhooks

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        params: dict[str, Any] = {"url": str(request.url), "task_id": _task_id(body), "body": body.decode()}
        token = request.headers.get("X-A2A-Notification-Token")
        auth = request.headers.get("Authorization")
        if token is not None:
            params["token"] = token
        if auth is not None:
            params["authorization"] = auth
        try:
            res = await asyncio.to_thread(self.webhooks.call, **params)
        except Exception as err:  # noqa: BLE001 - the SDK logs a failed delivery; the kernel audited it
            raise httpx.TransportError(f"{getattr(err, 'code', type(err).__name__)}: "
                                       f"{getattr(err, 'message', None) or err}") from None
        return httpx.Response(int(res.get("status", 200)), request=request)
