"""Anthropic Messages API: ``POST {base_url}/messages`` with ``x-api-key``.

Translates the OpenAI-shaped request: system messages go to ``system``; assistant
``tool_calls`` become ``tool_use`` blocks; ``tool`` messages become ``tool_result`` blocks
in a user turn; tools become ``{name, description, input_schema}``. Streaming reads the
event stream (text_delta, input_json_delta, message_delta). 429, 5xx and 529 (overloaded)
are retryable, with ``retry-after``.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from agentix.llm.base import (
    DeltaCallback,
    InferenceRequest,
    InferenceResponse,
    Provider,
    TokenUsage,
    ToolCall,
    emit,
    parse_arguments,
    provider_error,
)
from agentix.llm.openai import http_exchange, parse_retry_after

__all__ = ["AnthropicProvider", "to_anthropic"]

API_VERSION = "2023-06-01"
_STOP = {"end_turn": "end", "max_tokens": "max_tokens", "tool_use": "tool_calls", "stop_sequence": "stop_sequence"}


def to_anthropic(req: InferenceRequest) -> dict[str, Any]:
    """The Messages API body for an OpenAI-shaped request."""
    system: list[str] = []
    msgs: list[dict[str, Any]] = []

    def add(role: str, block: dict[str, Any]) -> None:
        if msgs and msgs[-1]["role"] == role:
            msgs[-1]["content"].append(block)
        else:
            msgs.append({"role": role, "content": [block]})

    for m in req.messages:
        role, content = m["role"], m.get("content")
        text = content if isinstance(content, str) else (json.dumps(content) if content else "")
        if role == "system":
            system.append(text)
        elif role == "tool":
            add("user", {"type": "tool_result", "tool_use_id": m.get("tool_call_id", ""), "content": text})
        elif role == "assistant":
            if text:
                add("assistant", {"type": "text", "text": text})
            for c in m.get("tool_calls") or []:
                fn = c.get("function", c)
                add("assistant", {"type": "tool_use", "id": c.get("id", ""), "name": fn["name"],
                                  "input": parse_arguments("anthropic", fn.get("arguments"))})
        else:
            add("user", {"type": "text", "text": text})
    body: dict[str, Any] = {"model": req.model, "max_tokens": req.max_tokens, "messages": msgs}
    if system:
        body["system"] = "\n\n".join(system)
    if req.tools:
        body["tools"] = [
            {"name": t["function"]["name"], "description": t["function"].get("description", ""),
             "input_schema": t["function"].get("parameters") or {"type": "object", "properties": {}}}
            for t in req.tools
        ]
        if req.tool_choice == "required":
            body["tool_choice"] = {"type": "any"}
        elif req.tool_choice and req.tool_choice not in ("auto", "none"):
            body["tool_choice"] = {"type": "tool", "name": req.tool_choice}
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.stop:
        body["stop_sequences"] = list(req.stop)
    if req.stream:
        body["stream"] = True
    return body


class AnthropicProvider(Provider):
    def __init__(self, name: str, base_url: str, api_key: str | None, timeout: float = 120.0,
                 client: httpx.AsyncClient | None = None) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._key = api_key
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=10.0))

    def __repr__(self) -> str:
        return f"AnthropicProvider({self.name!r}, {self.base_url!r})"

    def _headers(self) -> dict[str, str]:
        h = {"content-type": "application/json", "anthropic-version": API_VERSION}
        if self._key:
            h["x-api-key"] = self._key
        return h

    async def complete(self, req: InferenceRequest, on_delta: DeltaCallback | None = None) -> InferenceResponse:
        url = f"{self.base_url}/messages"
        body = to_anthropic(req)
        return await http_exchange(self, url, body, req, on_delta)

    def _http_error(self, r: httpx.Response) -> Exception:
        try:
            err = r.json().get("error") or {}
            msg = f"{err.get('type', '')}: {err.get('message', '')}"
        except ValueError:
            msg = r.text[:200]
        return provider_error(self.name, f"HTTP {r.status_code}: {msg}", status=r.status_code,
                              retry_after=parse_retry_after(r.headers))

    def _parse(self, data: dict[str, Any], req: InferenceRequest) -> InferenceResponse:
        text, calls = [], []
        for b in data["content"]:
            if b["type"] == "text":
                text.append(b["text"])
            elif b["type"] == "tool_use":
                calls.append(ToolCall(b["id"], b["name"], parse_arguments(self.name, b.get("input"))))
        u = data.get("usage") or {}
        return InferenceResponse(
            text="".join(text), tool_calls=tuple(calls),
            usage=TokenUsage(int(u.get("input_tokens", 0)), int(u.get("output_tokens", 0))),
            stop_reason=_STOP.get(data.get("stop_reason") or "end_turn", "end"),  # type: ignore[arg-type]
            model=data.get("model") or req.model, provider=self.name,
        )

    async def _read_stream(self, r: httpx.Response, req: InferenceRequest,
                           on_delta: DeltaCallback | None) -> InferenceResponse:
        text: list[str] = []
        blocks: dict[int, dict[str, Any]] = {}
        n_in = n_out = 0
        stop = None
        model = req.model
        async for line in r.aiter_lines():
            if not line.startswith("data:"):
                continue
            ev = json.loads(line[5:].strip())
            kind = ev.get("type")
            if kind == "message_start":
                m = ev["message"]
                model = m.get("model") or model
                n_in = int((m.get("usage") or {}).get("input_tokens", 0))
                n_out = int((m.get("usage") or {}).get("output_tokens", 0))
            elif kind == "content_block_start":
                cb = ev["content_block"]
                blocks[ev["index"]] = {"type": cb["type"], "id": cb.get("id"), "name": cb.get("name"), "json": ""}
            elif kind == "content_block_delta":
                d = ev["delta"]
                if d["type"] == "text_delta":
                    text.append(d["text"])
                    await emit(on_delta, d["text"])
                elif d["type"] == "input_json_delta":
                    blocks[ev["index"]]["json"] += d["partial_json"]
            elif kind == "message_delta":
                stop = (ev.get("delta") or {}).get("stop_reason") or stop
                n_out = int((ev.get("usage") or {}).get("output_tokens", n_out))
            elif kind == "error":
                err = ev.get("error") or {}
                raise provider_error(self.name, f"error in stream: {err.get('type')}: {err.get('message')}",
                                     status=529 if err.get("type") == "overloaded_error" else 200,
                                     retryable=err.get("type") == "overloaded_error")
        calls = tuple(ToolCall(b["id"], b["name"], parse_arguments(self.name, b["json"]))
                      for _, b in sorted(blocks.items()) if b["type"] == "tool_use")
        return InferenceResponse(
            text="".join(text), tool_calls=calls, usage=TokenUsage(n_in, n_out),
            stop_reason=_STOP.get(stop or "end_turn", "end"),  # type: ignore[arg-type]
            model=model, provider=self.name,
        )

    async def aclose(self) -> None:
        await self._client.aclose()
