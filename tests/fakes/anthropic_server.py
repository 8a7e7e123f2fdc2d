"""A fake Anthropic Messages API on 127.0.0.1: ``POST /v1/messages``, JSON or SSE events
(message_start, content_block_start/delta/stop with text_delta and input_json_delta,
message_delta with stop_reason and usage, message_stop), errors in Anthropic's shape."""

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
        stop = "tool_use" if item.tool_calls else ("max_tokens" if item.text is None else "end_turn")
        if not data.get("stream"):
            await self.pace(n_out)
            await self._send_json(writer, 200, {
                "id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": blocks,
                "stop_reason": stop, "stop_sequence": None,
                "usage": {"input_tokens": n_in, "output_tokens": n_out}})
            return
        await self._start_sse(writer)

        async def ev(kind: str, obj: dict[str, Any]) -> None:
            await self._chunk(writer, f"event: {kind}\ndata: {json.dumps({'type': kind, **obj})}\n\n")

        await ev("message_start", {"message": {"id": "msg_fake", "type": "message", "role": "assistant",
                                               "model": model, "content": [], "stop_reason": None,
                                               "usage": {"input_tokens": n_in, "output_tokens": 1}}})
        await self._chunk(writer, "event: ping\ndata: {\"type\": \"ping\"}\n\n")
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
                                   "usage": {"output_tokens": n_out}})
        await ev("message_stop", {})
        await self._end_chunks(writer)
