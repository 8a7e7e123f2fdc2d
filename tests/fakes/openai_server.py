"""A fake OpenAI-compatible server on 127.0.0.1 speaking the real wire format.

It is a real HTTP/1.1 server (asyncio streams, in its own thread): ``POST
/v1/chat/completions`` answers JSON or server-sent events (chunked), with ``usage``. It
models a provider's capacity: ``concurrency`` slots (more at once get 429 with
``retry-after``, or queue when ``reject_when_busy`` is false), ``latency`` seconds before the
first token and ``tokens_per_second`` per stream. Tests queue exact responses with
``push(...)``: text, tool calls, or an HTTP error status with an optional retry-after.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FakeLLMServer", "FakeOpenAIServer", "Scripted"]


@dataclass
class Scripted:
    """One queued answer: text and/or tool calls, or an error status."""

    text: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # [{"name", "arguments"}]
    status: int = 200
    retry_after: float | None = None
    error_message: str = "simulated error"
    input_tokens: int | None = None
    output_tokens: int | None = None
    stop_reason: str | None = None       # the provider's own stop reason (default: from the content)
    stream_error: str | None = None      # an error event of this type mid-stream (Anthropic)
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass
class ServerStats:
    requests: int = 0
    completed: int = 0
    rejected_429: int = 0
    errors_5xx: int = 0
    max_concurrent: int = 0
    busy_seconds: float = 0.0
    output_tokens: int = 0
    first_at: float | None = None
    last_at: float | None = None
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)


class FakeLLMServer:
    """HTTP machinery + capacity model; subclasses implement the route."""

    path = "/"

    def __init__(self, latency: float = 0.0, tokens_per_second: float = 0.0, concurrency: int | None = None,
                 reject_when_busy: bool = True, retry_after: float | None = 0.05, keep_bodies: bool = True) -> None:
        self.latency = latency
        self.tokens_per_second = tokens_per_second
        self.concurrency = concurrency
        self.reject_when_busy = reject_when_busy
        self.retry_after = retry_after
        self.keep_bodies = keep_bodies
        self.queue: deque[Scripted] = deque()
        self.stats = ServerStats()
        self._active = 0
        self._inflight: dict[int, float] = {}
        self._ids = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> str:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._conn, "127.0.0.1", 0, backlog=1024))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()
            self._server.close()
            self._loop.run_until_complete(self._server.wait_closed())
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name=type(self).__name__)
        self._thread.start()
        ready.wait(10)
        return self.base_url

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FakeLLMServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats_data(self) -> dict[str, Any]:
        st = self.stats
        out = {k: getattr(st, k) for k in ("requests", "completed", "rejected_429", "errors_5xx", "max_concurrent",
                                           "busy_seconds", "output_tokens", "first_at", "last_at")}
        now = time.monotonic()
        out["busy_seconds"] += sum(now - t for t in self._inflight.values())  # the in-flight part too
        out["active"] = self._active
        return out

    def push(self, *items: Scripted) -> None:
        self.queue.extend(items)

    # -- HTTP ---------------------------------------------------------------------------------
    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, v = h.decode("latin-1").split(":", 1)
                    headers[k.strip().lower()] = v.strip()
                n = int(headers.get("content-length", "0"))
                body = await reader.readexactly(n) if n else b""
                if method == "GET" and target.endswith("/_stats"):
                    await self._send_json(writer, 200, self.stats_data())
                    continue
                if method == "POST" and target.endswith("/_reset"):
                    self.stats = ServerStats()
                    now = time.monotonic()
                    for k in self._inflight:
                        self._inflight[k] = now  # busy time counts from the reset
                    await self._send_json(writer, 200, {})
                    continue
                if method != "POST" or not target.endswith(self.path):
                    await self._send_json(writer, 404, {"error": {"message": f"no route {method} {target}"}})
                    continue
                try:
                    data = json.loads(body)
                except ValueError:
                    await self._send_json(writer, 400, {"error": {"message": "body is not JSON"}})
                    continue
                await self._handle(data, headers, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _send_json(self, writer: asyncio.StreamWriter, status: int, obj: Any,
                         extra: dict[str, str] | None = None) -> None:
        raw = json.dumps(obj).encode()
        head = [f"HTTP/1.1 {status} X", "content-type: application/json", f"content-length: {len(raw)}"]
        head += [f"{k}: {v}" for k, v in (extra or {}).items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + raw)
        await writer.drain()

    async def _start_sse(self, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        await writer.drain()

    async def _chunk(self, writer: asyncio.StreamWriter, text: str) -> None:
        raw = text.encode()
        writer.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
        await writer.drain()

    async def _end_chunks(self, writer: asyncio.StreamWriter) -> None:
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def _handle(self, data: dict[str, Any], headers: dict[str, str], writer: asyncio.StreamWriter) -> None:
        st = self.stats
        st.requests += 1
        if self.keep_bodies:
            st.bodies.append(data)
            st.headers.append(headers)
        problem = self.validate(data)
        if problem is not None:   # what the real API refuses with 400
            await self._send_json(writer, 400, self.error_body(400, problem))
            return
        item = self.queue.popleft() if self.queue else None
        if item is not None and item.status != 200:
            extra = {} if item.retry_after is None else {"retry-after": f"{item.retry_after:g}"}
            if item.status == 429:
                st.rejected_429 += 1
            elif item.status >= 500:
                st.errors_5xx += 1
            await self._send_json(writer, item.status, self.error_body(item.status, item.error_message), extra)
            return
        if self.concurrency is not None and self._active >= self.concurrency and self.reject_when_busy:
            st.rejected_429 += 1
            extra = {} if self.retry_after is None else {"retry-after": f"{self.retry_after:g}"}
            await self._send_json(writer, 429, self.error_body(429, "rate limit: too many concurrent requests"), extra)
            return
        self._active += 1
        st.max_concurrent = max(st.max_concurrent, self._active)
        t0 = time.monotonic()
        st.first_at = t0 if st.first_at is None else st.first_at
        self._ids += 1
        rid = self._ids
        self._inflight[rid] = t0
        try:
            max_tokens = int(data.get("max_tokens") or 16)
            if item is None:
                item = Scripted()
            n_out = item.output_tokens if item.output_tokens is not None else (
                max_tokens if item.text is None else max(1, len(item.text.split())))
            n_out = min(n_out, max_tokens) if item.text is None else n_out
            text = item.text if item.text is not None else " ".join(["tok"] * n_out)
            n_in = item.input_tokens if item.input_tokens is not None else self.count_input(data)
            if self.latency:
                await asyncio.sleep(self.latency)
            await self.respond(data, writer, item, text, n_in, n_out)
            st.completed += 1
            st.output_tokens += n_out
        finally:
            self._active -= 1
            now = time.monotonic()
            st = self.stats  # (it may have been reset meanwhile)
            st.busy_seconds += now - self._inflight.pop(rid)
            st.last_at = now

    def count_input(self, data: dict[str, Any]) -> int:
        return max(1, len(json.dumps(data.get("messages", data))) // 4)

    async def pace(self, n_tokens: int) -> None:
        if self.tokens_per_second and n_tokens:
            await asyncio.sleep(n_tokens / self.tokens_per_second)

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        raise NotImplementedError

    def validate(self, data: dict[str, Any]) -> str | None:
        """The reason the real API would reject this body (400), or None."""
        return None

    async def respond(self, data: dict[str, Any], writer: asyncio.StreamWriter, item: Scripted, text: str,
                      n_in: int, n_out: int) -> None:
        raise NotImplementedError


class FakeOpenAIServer(FakeLLMServer):
    """``POST /v1/chat/completions`` in OpenAI's format (JSON or SSE with usage)."""

    path = "/chat/completions"

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        kind = "rate_limit_exceeded" if status == 429 else "server_error" if status >= 500 else "invalid_request_error"
        return {"error": {"message": message, "type": kind, "code": kind}}

    async def respond(self, data: dict[str, Any], writer: asyncio.StreamWriter, item: Scripted, text: str,
                      n_in: int, n_out: int) -> None:
        model = data.get("model", "fake")
        calls = [
            {"id": f"call_{i}", "type": "function",
             "function": {"name": c["name"], "arguments": c["arguments"] if isinstance(c.get("arguments"), str)
                          else json.dumps(c.get("arguments", {}))}}  # a str goes out as is (broken JSON)
            for i, c in enumerate(item.tool_calls)
        ]
        finish = "tool_calls" if calls else ("length" if item.text is None else "stop")
        usage = {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}
        if not data.get("stream"):
            await self.pace(n_out)
            msg: dict[str, Any] = {"role": "assistant", "content": None if calls and not item.text else text}
            if calls:
                msg["tool_calls"] = calls
            await self._send_json(writer, 200, {
                "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": msg, "finish_reason": finish}], "usage": usage})
            return
        await self._start_sse(writer)

        def ev(choices: list[dict[str, Any]], **kw: Any) -> str:
            return "data: " + json.dumps({"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                                          "created": int(time.time()), "model": model, "choices": choices,
                                          **kw}) + "\n\n"

        await self._chunk(writer, ev([{"index": 0, "delta": {"role": "assistant", "content": ""}}]))
        if not (calls and not item.text):
            words = text.split(" ")
            for i, w in enumerate(words):
                await self.pace(1 if item.text is None else n_out / max(1, len(words)))
                await self._chunk(writer, ev([{"index": 0, "delta": {"content": w if i == 0 else " " + w}}]))
        for i, c in enumerate(calls):
            args = c["function"]["arguments"]
            half = len(args) // 2
            await self._chunk(writer, ev([{"index": 0, "delta": {"tool_calls": [
                {"index": i, "id": c["id"], "type": "function", "function": {"name": c["function"]["name"],
                                                                             "arguments": ""}}]}}]))
            for part in (args[:half], args[half:]):
                await self._chunk(writer, ev([{"index": 0, "delta": {"tool_calls": [
                    {"index": i, "function": {"arguments": part}}]}}]))
        await self._chunk(writer, ev([{"index": 0, "delta": {}, "finish_reason": finish}]))
        if (data.get("stream_options") or {}).get("include_usage"):
            await self._chunk(writer, ev([], usage=usage))
        await self._chunk(writer, "data: [DONE]\n\n")
        await self._end_chunks(writer)


def main() -> None:
    """Run a fake OpenAI server in its own process: prints its base URL, serves until killed."""
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--tokens-per-second", type=float, default=0.0)
    ap.add_argument("--concurrency", type=int, default=None)
    ap.add_argument("--retry-after", type=float, default=0.05)
    ap.add_argument("--queue-when-busy", action="store_true")
    a = ap.parse_args()
    srv = FakeOpenAIServer(latency=a.latency, tokens_per_second=a.tokens_per_second, concurrency=a.concurrency,
                           reject_when_busy=not a.queue_when_busy, retry_after=a.retry_after, keep_bodies=False)
    print(srv.start(), flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
