"""OpenAI-compatible chat completions over HTTP (OpenAI, DeepSeek, vLLM, Ollama,
llama.cpp server, LM Studio): ``POST {base_url}/chat/completions``.

Streams with server-sent events when asked (``stream: true``), assembling tool calls from
their streamed ``delta.tool_calls`` fragments. HTTP 429 and 5xx become retryable
``ProviderError`` carrying the server's ``retry-after``; other 4xx are not retryable.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from agentix.llm.base import (DeltaCallback, InferenceRequest, InferenceResponse, ModelToolCall, TokenUsage,
                              emit, parse_arguments, provider_error)
from agentix.llm.http_provider import HTTPProvider, parse_retry_after

__all__ = ["OpenAIProvider", "parse_retry_after"]

_FINISH = {"stop": "end", "length": "max_tokens", "tool_calls": "tool_calls", "function_call": "tool_calls",
           "content_filter": "content_filter"}


def _usage(u: dict[str, Any]) -> TokenUsage:
    """OpenAI usage: ``prompt_tokens`` includes ``prompt_tokens_details.cached_tokens``."""
    cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return TokenUsage(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0), int(cached))


class OpenAIProvider(HTTPProvider):
    """One OpenAI-compatible endpoint. The key never leaves this object."""

    path = "/chat/completions"

    def body(self, req: InferenceRequest) -> dict[str, Any]:
        # ``is_error`` on a tool message is agentix's (Anthropic has it, OpenAI does not)
        msgs = [{k: v for k, v in m.items() if k != "is_error"} if "is_error" in m else m for m in req.messages]
        b: dict[str, Any] = {"model": req.model, "messages": msgs, "max_tokens": req.max_tokens}
        if req.tools:
            b["tools"] = list(req.tools)
            if req.tool_choice in ("auto", "none", "required"):
                b["tool_choice"] = req.tool_choice
            elif req.tool_choice:
                b["tool_choice"] = {"type": "function", "function": {"name": req.tool_choice}}
        if req.temperature is not None:
            b["temperature"] = req.temperature
        if req.stop:
            b["stop"] = list(req.stop)
        if req.stream:
            b["stream"] = True
            b["stream_options"] = {"include_usage": True}
        return b

    def _headers(self) -> dict[str, str]:
        h = {"content-type": "application/json"}
        if self._key:
            h["authorization"] = f"Bearer {self._key}"
        return h

    def _http_error(self, r: httpx.Response) -> Exception:
        msg = ""
        try:
            err = r.json().get("error")
            msg = err.get("message", "") if isinstance(err, dict) else str(err or "")
        except ValueError:
            msg = r.text[:200]
        return provider_error(self.name, f"HTTP {r.status_code}: {msg}".rstrip(": "), status=r.status_code,
                              retry_after=parse_retry_after(r.headers))

    def _parse(self, data: dict[str, Any], req: InferenceRequest) -> InferenceResponse:
        if "error" in data and "choices" not in data:
            raise provider_error(self.name, f"error in body: {data['error']}", status=200)
        choice = data["choices"][0]
        msg = choice.get("message") or {}
        calls = tuple(
            ModelToolCall(c.get("id") or f"call_{i}", c["function"]["name"],
                     parse_arguments(self.name, c["function"].get("arguments")))
            for i, c in enumerate(msg.get("tool_calls") or [])
        )
        u = data.get("usage") or {}
        return InferenceResponse(
            text=msg.get("content") or "",
            tool_calls=calls,
            usage=_usage(u),
            stop_reason=_FINISH.get(choice.get("finish_reason") or "stop", "end"),  # type: ignore[arg-type]
            model=data.get("model") or req.model,
            provider=self.name,
        )

    async def _read_stream(self, r: httpx.Response, req: InferenceRequest,
                           on_delta: DeltaCallback | None) -> InferenceResponse:
        text: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        usage: dict[str, Any] = {}
        finish = None
        model = req.model
        async for line in r.aiter_lines():
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                break
            ev = json.loads(payload)
            if "error" in ev:
                raise provider_error(self.name, f"error in stream: {ev['error']}", status=200)
            model = ev.get("model") or model
            if ev.get("usage"):
                usage = ev["usage"]
            for ch in ev.get("choices") or []:
                d = ch.get("delta") or {}
                if d.get("content"):
                    text.append(d["content"])
                    await emit(on_delta, d["content"])
                for tc in d.get("tool_calls") or []:
                    slot = calls.setdefault(int(tc.get("index", 0)), {"id": None, "name": "", "args": ""})
                    if tc.get("id"):
                        slot["id"] = tc["id"]
                    fn = tc.get("function") or {}
                    slot["name"] += fn.get("name") or ""
                    slot["args"] += fn.get("arguments") or ""
                if ch.get("finish_reason"):
                    finish = ch["finish_reason"]
        tool_calls = tuple(
            ModelToolCall(c["id"] or f"call_{i}", c["name"], parse_arguments(self.name, c["args"]))
            for i, c in sorted(calls.items())
        )
        return InferenceResponse(
            text="".join(text),
            tool_calls=tool_calls,
            usage=_usage(usage),
            stop_reason=_FINISH.get(finish or "stop", "end"),  # type: ignore[arg-type]
            model=model,
            provider=self.name,
        )
