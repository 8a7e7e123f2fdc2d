"""``a2a.push`` (operator; the A2A face): one A2A push notification POSTed to a client's webhook.

A remote A2A client names a webhook URL for its task; the A2A server (``agentix.a2a.push``)
hands every task update to this method, so the outbound request is made, decided and
audited by the kernel, never by code a remote client steers:

    a2a.push {url, task_id?, body?, token?, authorization?, allow_hosts?, check?, timeout?, client?}

Rules (the webhook is a request the kernel makes on behalf of a remote client, so it must not
be a server-side request forgery):

- ``url``: ``http`` or ``https`` only, no user info; its host, then every address it resolves
  to, is decided: a loopback, private, link-local (the cloud metadata address 169.254.169.254
  among them), multicast, reserved or unspecified address is refused unless ``allow_hosts``
  (the A2A server's operator configuration, ``--push-allow``) names the host or the address
  exactly. The connection goes to the checked address (``Host`` and TLS SNI stay the name),
  so DNS cannot answer differently between the check and the connection.
- Redirects are not followed (a 3xx is a failed delivery), proxies from the environment are
  ignored, the whole delivery has one ``timeout`` (default 10 s, at most 30 s), the body sent
  is at most ``MAX_BODY`` bytes and at most ``MAX_RESPONSE`` bytes of the answer are read.
- ``token`` goes out as ``X-A2A-Notification-Token`` and ``authorization`` as
  ``Authorization`` (the client's own credentials from its push config, as the A2A
  specification says); neither is recorded.
- ``check: true`` decides the target (resolving it) and sends nothing: the A2A server asks
  it when a client registers a webhook, so a refused target is refused to the client then.
- Every call is recorded by the pipeline (an ``effect`` row called by a face): event
  ``a2a.push`` with ``by: a2a``, ``ok``, ``task_id``, ``client`` (the A2A client the
  webhook is for, as the A2A server names it), ``host``, ``address``, ``sent`` and
  the HTTP ``status``, or the refusal (``error``, ``message``). The URL's path and query
  are not recorded (a webhook URL may carry a secret).
"""

from __future__ import annotations

import asyncio
from typing import Any, Sequence

from agentix.core.errors import AgentixError, CapabilityDenied, InvalidRequest, LimitExceeded, Timeout, ToolError
from agentix.core.hosts import is_public_address, normalize_host
from agentix.kernel.dispatch import Call, Pipeline
from agentix.kernel.methods import method
from agentix.kernel.param_checks import optional, required
from agentix.net.pinned import Resolver, pick_address, system_resolver

__all__ = ["DEFAULT_TIMEOUT", "MAX_BODY", "MAX_RESPONSE", "MAX_TIMEOUT", "register"]

DEFAULT_TIMEOUT = 10.0
MAX_TIMEOUT = 30.0
#: a notification's body (one task, status or artifact update as JSON; under the socket's
#: 1 MiB frame, which bounds the whole call first)
MAX_BODY = 512 * 1024
#: what is read of the webhook's answer (its status is what counts)
MAX_RESPONSE = 64 * 1024
MAX_ALLOW = 64

_WHAT_TO_DO = ("webhooks to loopback, private, link-local or metadata addresses are refused; the "
               "A2A server's operator can allow this host by name (agentix a2a serve --push-allow HOST)")


def _target(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of a webhook URL, or the refusal naming what is wrong."""
    import httpx

    try:
        u = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as err:
        raise InvalidRequest(f"the push notification URL {url[:200]!r} is not a valid URL: {err}",
                             field="url") from None
    if u.scheme not in ("http", "https"):
        raise CapabilityDenied(f"a push notification URL must be http or https, not {u.scheme or 'no scheme'}:",
                               reason="scheme", scheme=u.scheme)
    if u.userinfo:
        raise InvalidRequest("a push notification URL must not carry a user name or password; send "
                             "credentials in the push config's authentication", field="url")
    if not u.host:
        raise InvalidRequest(f"the push notification URL {url[:200]!r} has no host", field="url")
    return u.scheme, normalize_host(u.host), u.port or (443 if u.scheme == "https" else 80)


def _allowed(allow: Sequence[str]) -> frozenset[str]:
    if not isinstance(allow, list) or len(allow) > MAX_ALLOW or not all(isinstance(h, str) for h in allow):
        raise InvalidRequest(f'"allow_hosts" must be a list of at most {MAX_ALLOW} host names or addresses',
                             field="allow_hosts")
    return frozenset(normalize_host(h) for h in allow)


async def push(url: str, *, allow_hosts: frozenset[str], body: bytes | None, headers: dict[str, str],
               timeout: float, record: dict[str, Any], resolve: Resolver = system_resolver) -> dict[str, Any]:
    """Decide ``url`` and (unless ``body`` is None) POST ``body`` to it; what happened goes into
    ``record`` as it happens (the audit event's data)."""
    import httpx

    from agentix.net.pinned_httpx import PinnedTransport

    scheme, host, port = _target(url)
    record.update(host=host, port=port, sent=False)

    def permits(h: str, address: str | None) -> bool:
        if address is None:
            return True  # any name; its addresses decide
        return is_public_address(address) or h in allow_hosts or normalize_host(address) in allow_hosts

    try:
        async with asyncio.timeout(timeout):
            try:
                addr = await pick_address(host, port, permits, resolve)
            except CapabilityDenied as err:
                raise CapabilityDenied(f"{err.message}. {_WHAT_TO_DO}", reason="private_address", host=host,
                                       addresses=err.data.get("addresses", [])) from None
            record["address"] = addr
            if body is None:
                return {"allowed": True, "host": host, "address": addr}
            transport = PinnedTransport(scheme, host, port, addr, MAX_RESPONSE)
            async with httpx.AsyncClient(transport=transport, timeout=timeout, trust_env=False,
                                         follow_redirects=False) as http:
                record["sent"] = True
                async with http.stream("POST", url, content=body, headers={
                        **headers, "content-type": "application/json"}) as resp:
                    record["status"] = resp.status_code
                    await resp.aread()  # bounded by the transport; then dropped
    except TimeoutError:
        raise Timeout(f"the push notification to {host} took longer than {timeout:g} s", host=host,
                      timeout=timeout) from None
    except AgentixError:
        raise
    except httpx.HTTPError as err:
        raise ToolError(f"the push notification to {host} failed: {type(err).__name__}: {err}"[:500],
                        host=host) from None
    status = record["status"]
    if 300 <= status < 400:
        raise ToolError(f"the webhook at {host} answered {status} (a redirect); redirects are not "
                        "followed: register the final URL", host=host, status=status)
    if not 200 <= status < 300:
        raise ToolError(f"the webhook at {host} answered {status}", host=host, status=status)
    return {"delivered": True, "status": status, "host": host, "address": record["address"]}


def register(pipeline: Pipeline, *, resolve: Resolver = system_resolver) -> None:

    async def a2a_push(call: Call) -> dict[str, Any]:
        url = required(call.params, "url", str, "the webhook URL")
        check = optional(call.params, "check", bool, "true or false", False)
        task_id = optional(call.params, "task_id", str, "the A2A task the notification is about", "")
        if not task_id and not check:
            raise InvalidRequest('missing parameter "task_id" (the A2A task the notification is about)',
                                 field="task_id")
        allow = _allowed(optional(call.params, "allow_hosts", list, "a list of hosts", []))
        timeout = optional(call.params, "timeout", (int, float), "seconds", DEFAULT_TIMEOUT)
        if not 0 < timeout <= MAX_TIMEOUT:
            raise InvalidRequest(f'"timeout" must be more than 0 and at most {MAX_TIMEOUT:g} s', field="timeout")
        headers: dict[str, str] = {}
        for key, header in (("token", "X-A2A-Notification-Token"), ("authorization", "Authorization")):
            value = optional(call.params, key, str, "text", None)
            if value is not None:
                if not value.isprintable() or len(value) > 4096:
                    raise InvalidRequest(f'"{key}" must be printable text of at most 4096 characters', field=key)
                headers[header] = value
        body: bytes | None = None
        if not check:
            text = required(call.params, "body", str, "the notification as JSON text")
            body = text.encode()
            if len(body) > MAX_BODY:
                raise LimitExceeded(f"a push notification body of {len(body)} bytes is over the limit of "
                                    f"{MAX_BODY} bytes", limit=MAX_BODY)
        client = optional(call.params, "client", str, "the A2A client's name", None)
        record: dict[str, Any] = {"task_id": task_id[:200], "check": check, "sent": False}
        if client is not None:
            record["client"] = client[:64]
        call.event_data = record  # recorded with the outcome, success or failure
        # its own task, as a2a_call's: httpx's connection pool enters anyio cancel scopes, which
        # must be left in the task that entered them
        return await asyncio.create_task(push(url, allow_hosts=allow, body=body, headers=headers,
                                              timeout=float(timeout), record=record, resolve=resolve))

    pipeline.register(method("a2a.push", a2a_push, operator=True))
