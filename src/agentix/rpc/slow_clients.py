"""Slow clients on every HTTP face agentix serves: a deadline to send a request, and a cap on the
connections that have not sent one yet. The one place the HTTP API (``agentix up --http``),
``agentix mcp --http`` and ``agentix a2a serve`` get their uvicorn protocol and config.

uvicorn has no timeout covering a request's transmission: ``timeout_keep_alive`` is cancelled by
the first byte a client sends, so a client sending one header byte a second holds its connection
(and a slot of ``limit_concurrency``: beyond it every request is a 503) for as long as it likes —
slowloris. ASGI middleware cannot help, it runs once the head is parsed. So the protocol does it:

- a connection must send its whole request head within ``head_timeout`` seconds of opening (or of
  its first byte after a kept-alive response), and the body within ``body_timeout`` seconds of the
  head; else it gets ``408 Request Timeout`` and is closed;
- at most ``max_pending`` connections per server may be waiting for their head (unauthenticated
  by construction: the token is a header). One more evicts the one that has waited longest (a
  ``503`` and close), so a flood of slow connections never keeps out a client that sends its
  request at once, and never reaches ``limit_concurrency``.

Once a request is in, the deadlines are off: a long response (an event stream, a slow call) is
bounded by the faces themselves (``MAX_STREAMS``, their own timeouts).

The protocol is uvicorn's h11 one (the only one the ``http`` extra installs) with four hooks;
``GuardStats`` is a frozen snapshot of its counters (trio's ``statistics()``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any

__all__ = ["MAX_CONCURRENCY", "GuardStats", "SlowClientLimits", "guarded_config", "serve_blocking"]


#: connections and requests a CLI face (``agentix mcp --http``, ``agentix a2a serve``) serves at
#: once, the same as the HTTP API's ``rpc.http.MAX_CONCURRENCY``
MAX_CONCURRENCY = 256


@dataclass(frozen=True)
class SlowClientLimits:
    """Deadlines (seconds) and the pending-connection cap of one HTTP face."""

    head_timeout: float = 10.0
    body_timeout: float = 30.0
    max_pending: int = 64

    def __post_init__(self) -> None:
        for name in ("head_timeout", "body_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value <= 3600):
                raise ValueError(f"{name} must be a number of seconds in (0, 3600], not {value!r}")
        if not (isinstance(self.max_pending, int) and 1 <= self.max_pending <= 65_536):
            raise ValueError(f"max_pending must be an integer in [1, 65536], not {self.max_pending!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SlowClientLimits:
        """The limits of a face started from the CLI (``agentix mcp --http``, ``agentix a2a
        serve``): ``AGENTIX_HTTP_HEAD_TIMEOUT``, ``AGENTIX_HTTP_BODY_TIMEOUT`` (seconds) and
        ``AGENTIX_HTTP_MAX_PENDING``, each defaulting to the class default. (The kernel's own
        HTTP API takes them from config.toml: ``http_head_timeout`` ...)"""
        values: dict[str, Any] = {}
        for field, env, kind in (("head_timeout", "AGENTIX_HTTP_HEAD_TIMEOUT", float),
                                 ("body_timeout", "AGENTIX_HTTP_BODY_TIMEOUT", float),
                                 ("max_pending", "AGENTIX_HTTP_MAX_PENDING", int)):
            raw = environ.get(env)
            if raw is None or raw == "":
                continue
            try:
                values[field] = kind(raw)
            except ValueError:
                raise ValueError(f"${env}={raw!r}: expected {'an integer' if kind is int else 'a number'}") from None
        try:
            return cls(**values)
        except ValueError as err:
            raise ValueError(f"the AGENTIX_HTTP_* settings: {err}") from None


@dataclass(frozen=True)
class GuardStats:
    """What one face's guard has done so far."""

    pending: int = 0          # connections waiting for their request head now
    head_timeouts: int = 0    # closed: no complete head within head_timeout
    body_timeouts: int = 0    # closed: no complete body within body_timeout
    evicted: int = 0          # closed: the longest-waiting of more than max_pending


def _raw_response(status: int, reason: str, text: str) -> bytes:
    body = text.encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body


class _Guard:
    """The state one server's connections share: who waits for a head, in arrival order."""

    def __init__(self, limits: SlowClientLimits) -> None:
        self.limits = limits
        self.pending: collections.OrderedDict[Any, None] = collections.OrderedDict()
        self.counts = {"head_timeouts": 0, "body_timeouts": 0, "evicted": 0}

    def stats(self) -> GuardStats:
        return GuardStats(pending=len(self.pending), **self.counts)


def _protocol_class(guard: _Guard) -> type:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    limits = guard.limits
    head_msg = _raw_response(408, "Request Timeout",
                             f"the request was not received within {limits.head_timeout:g} s of connecting: "
                             "send the request line and headers at once\n")
    body_msg = _raw_response(408, "Request Timeout",
                             f"the request body was not received within {limits.body_timeout:g} s of its "
                             "headers: send the body at once\n")
    evict_msg = _raw_response(503, "Service Unavailable",
                              f"more than {limits.max_pending} connections are waiting to send a request; "
                              "this one waited longest: retry, sending the request at once\n")

    class GuardedH11Protocol(H11Protocol):  # type: ignore[misc]
        # phase: "head" (waiting for the request head), "body" (head in, body not yet),
        # "served" (the request is in), "idle" (kept alive between requests: uvicorn's timer)
        _phase = "head"
        _timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._await_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            guard.pending.pop(self, None)
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._phase == "idle":
                self._await_head()  # the first byte of the next request on a kept-alive connection
            super().data_received(data)
            self._track()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._track()

        # ------------------------------------------------------------------ the rule
        def _await_head(self) -> None:
            self._phase = "head"
            guard.pending[self] = None
            self._arm(limits.head_timeout, "head_timeouts", head_msg)
            while len(guard.pending) > limits.max_pending:
                oldest = next(iter(guard.pending))
                oldest._close("evicted", evict_msg)

        def _track(self) -> None:
            if self.transport is None or self.transport.is_closing():
                self._disarm()
                guard.pending.pop(self, None)
                return
            their = self.conn.their_state
            if their is h11.IDLE:
                if self._phase != "head":
                    self._phase = "idle"
                    self._disarm()
            elif their is h11.SEND_BODY:
                if self._phase != "body":
                    guard.pending.pop(self, None)
                    self._phase = "body"
                    self._arm(limits.body_timeout, "body_timeouts", body_msg)
            elif self._phase != "served":
                guard.pending.pop(self, None)
                self._phase = "served"
                self._disarm()

        def _arm(self, seconds: float, counter: str, message: bytes) -> None:
            self._disarm()
            self._timer = self.loop.call_later(seconds, self._close, counter, message)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _close(self, counter: str, message: bytes) -> None:
            self._disarm()
            guard.pending.pop(self, None)
            guard.counts[counter] += 1
            if self.transport is not None and not self.transport.is_closing():
                # in the body phase the app may have answered already (before reading the
                # body): then the connection is just closed (the app sees http.disconnect)
                answered = self._phase == "body" and getattr(self.cycle, "response_started", False)
                if not answered:
                    with contextlib.suppress(Exception):
                        self.transport.write(message)
                self.transport.close()

    return GuardedH11Protocol


def guarded_config(app: Any, limits: SlowClientLimits | None = None, **kwargs: Any) -> Any:
    """A ``uvicorn.Config`` serving ``app`` with the slow-client guard (``http``) and no
    WebSocket upgrade (no face uses one). The config's ``guard_stats()`` reads the counters."""
    import uvicorn

    guard = _Guard(limits or SlowClientLimits())
    config = uvicorn.Config(app, http=_protocol_class(guard), ws="none", **kwargs)
    config.guard_stats = guard.stats  # type: ignore[attr-defined]
    return config


def serve_blocking(app: Any, host: str, port: int, limits: SlowClientLimits | None = None,
                   **kwargs: Any) -> None:
    """``uvicorn.run`` with the guard: serve until SIGINT/SIGTERM (the CLI faces). Without
    ``limits``, they come from the environment (``SlowClientLimits.from_env``)."""
    import os

    import uvicorn

    if limits is None:
        limits = SlowClientLimits.from_env(os.environ)

    kwargs.setdefault("log_level", "warning")
    # at most this many connections and requests at once, as the HTTP API (beyond: 503)
    kwargs.setdefault("limit_concurrency", MAX_CONCURRENCY)
    uvicorn.Server(guarded_config(app, limits, host=host, port=port, **kwargs)).run()
