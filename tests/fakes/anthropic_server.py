"""A fake Anthropic Messages API on 127.0.0.1: ``POST /v1/messages``, JSON or SSE events
(message_start, ping, content_block_start/delta/stop with text_delta and input_json_delta,
message_delta with stop_reason and usage, message_stop, and an ``error`` event mid-stream
when a ``Scripted`` asks for one), errors in Anthropic's shape.

It refuses (400 ``invalid_request_error``) what the real API refuses: an empty text block,
a message with empty content, a temperature outside 0–1, a ``tool_choice`` that is not one
of ``{"type": "auto" | "any" | "none"}`` / ``{"type": "tool", "name"}``, a tool_result whose
``is_error`` is not a boolean, roles that do not alternate starting with ``user``. Usage
carries ``cache_read_input_tokens`` and ``cache_creation_input_tokens``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.fakes.openai_server import FakeLLMServer, Scripted

__all__ = ["FakeAnthropicServer"]


class FakeAnthropicServer(FakeLLMServer):
    path = "/messages"

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(
            status, "api_error" if status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": kind, "message": message}}

    def validate(self, data: dict[str, Any]) -> str | None:
        t = data.get("temperature")
        if t is not None and not (isinstance(t, (int, float)) and 0 <= t <= 1):
            return f"temperature: range: 0..1 (got {t})"
        tc = data.get("tool_choice")
        if tc is not None:
            if not isinstance(tc, dict) or tc.get("type") not in ("auto", "any", "none", "tool"):
                return f"tool_choice: Input tag {tc!r} does not match any of the expected tags"
            if tc["type"] == "tool" and not isinstance(tc.get("name"), str):
                return "tool_choice.name: Field required"
        msgs = data.get("messages")
        if not isinstance(msgs, list) or not msgs:
            return "messages: at least one message is required"
        for i, m in enumerate(msgs):
            if m.get("role") != ("user" if i % 2 == 0 else "assistant"):
                return f"messages.{i}.role: roles must alternate between user and assistant, starting with user"
            content = m.get("content")
            if content in ("", []) or content is None:
                return f"messages.{i}: all messages must have non-empty content"
            for j, b in enumerate(content if isinstance(content, list) else []):
                if b.get("type") == "text" and not b.get("text"):
                    return f"messages.{i}.content.{j}.text: text content blocks must be non-empty"
                if b.get("type") == "tool_result" and "is_error" in b and not isinstance(b["is_error"], bool):
                    return f"messages.{i}.content.{j}.is_error: Input should be a valid boolean"
        return None

    def count_input(self, data: dict[str, Any]) -> int:
        return max(1, len(json.dumps(data.get("messages", []))) // 4 + len(str(data.get("system", ""))) // 4)

    async def respond(self, data: dict[str, Any], writer: asyncio.StreamWriter, item: Scripted, text: str,
                      n_in: int, n_out: int) -> None:
        model = data.get("model", "fake")
        blocks: list[dict[str, Any]] = []
        if item.text is not None or not item.tool_calls:
            blocks.append({"type": "text", "text": text})
        for i, c in enumerate(item.tool_calls):
            blocks.append({"type": "tool_use", "id": f"toolu_{i}", "name": c["name"], "input": c.get("arguments", {})})
        stop = item.stop_reason or ("tool_use" if item.tool_calls else ("max_tokens" if item.text is None
                                                                        else "end_turn"))
        usage = {"input_tokens": n_in, "cache_creation_input_tokens": item.cache_write_tokens,
                 "cache_read_input_tokens": item.cache_read_tokens, "output_tokens": n_out}
        if not data.get("stream"):
            await self.pace(n_out)
            await self._send_json(writer, 200, {
                "id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": blocks,
                "stop_reason": stop, "stop_sequence": None, "usage": usage})
            return
        await self._start_sse(writer)

        async def ev(kind: str, obj: dict[str, Any]) -> None:
            await self._chunk(writer, f"event: {kind}\ndata: {json.dumps({'type': kind, **obj})}\n\n")

        await ev("message_start", {"message": {"id": "msg_fake", "type": "message", "role": "assistant",
                                               "model": model, "content": [], "stop_reason": None,
                                               "usage": {**usage, "output_tokens": 1}}})
        await self._chunk(writer, "event: ping\ndata: {\"type\": \"ping\"}\n\n")
        if item.stream_error:   # e.g. overloaded_error / api_error after the 200
            await ev("error", {"error": {"type": item.stream_error, "message": "simulated " + item.stream_error}})
            await self._end_chunks(writer)
            return
        for idx, b in enumerate(blocks):
            if b["type"] == "text":
                await ev("content_block_start", {"index": idx, "content_block": {"type": "text", "text": ""}})
                words = b["text"].split(" ")
                for i, w in enumerate(words):
                    await self.pace(1 if item.text is None else n_out / max(1, len(words)))
                    await ev("content_block_delta", {"index": idx, "delta": {
                        "type": "text_delta", "text": w if i == 0 else " " + w}})
            else:
                await ev("content_block_start", {"index": idx, "content_block": {
                    "type": "tool_use", "id": b["id"], "name": b["name"], "input": {}}})
                raw = json.dumps(b["input"])
                half = len(raw) // 2
                for part in (raw[:half], raw[half:]):
                    await ev("content_block_delta", {"index": idx, "delta": {
                        "type": "input_json_delta", "partial_json": part}})
            await ev("content_block_stop", {"index": idx})
        await ev("message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None},
                                   "usage": {"output_tokens": n_out}})  # cumulative
        await ev("message_stop", {})
        await self._end_chunks(writer)
