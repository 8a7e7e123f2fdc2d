"""Anthropic Messages API: ``POST {base_url}/messages`` with ``x-api-key``.

Translates the OpenAI-shaped request: system messages go to ``system``; assistant
``tool_calls`` become ``tool_use`` blocks; ``tool`` messages become ``tool_result`` blocks
in a user turn (``is_error: true`` when the tool message says ``is_error``); tools become
``{name, description, input_schema}``. Streaming reads the event stream (``message_start``,
``content_block_start/delta/stop`` with ``text_delta`` and ``input_json_delta``,
``message_delta``, ``ping``, ``error``). 429, 5xx, 529 (overloaded) and an in-stream
``api_error`` / ``overloaded_error`` are retryable, with ``retry-after``.

Where the two APIs differ:

* ``tool_choice``: ``auto`` → ``{"type": "auto"}``, ``none`` → ``{"type": "none"}``,
  ``required`` → ``{"type": "any"}``, a tool name → ``{"type": "tool", "name": ...}``.
* Empty text is never sent: the API rejects an empty text block, so empty text blocks are
  left out, and a message with nothing left is left out; a request with no non-empty
  message at all is refused (``ProviderError``, not retryable) before anything is sent.
* ``temperature``: the Messages API takes 0–1, agents may ask 0–2 (the OpenAI range);
  values above 1 are clamped to 1 (documented in docs/inference.md).
* Stop reasons: ``end_turn`` → ``end``, ``max_tokens``, ``stop_sequence``, ``tool_use`` →
  ``tool_calls``, ``refusal``, ``pause_turn``, ``model_context_window_exceeded`` →
  ``context_window_exceeded``; an unknown one → ``end``.
* Usage: ``input_tokens`` counts the whole prompt (Anthropic's ``input_tokens`` plus
  ``cache_read_input_tokens`` plus ``cache_creation_input_tokens``); the cached parts are
  reported separately and priced at the cache rates.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from agentix.llm.base import (DeltaCallback, InferenceRequest, InferenceResponse, ModelToolCall, TokenUsage,
                              emit, parse_arguments, provider_error)
from agentix.llm.http_provider import HTTPProvider, parse_retry_after

__all__ = ["AnthropicProvider", "to_anthropic"]

API_VERSION = "2023-06-01"
MAX_TEMPERATURE = 1.0
_STOP = {"end_turn": "end", "max_tokens": "max_tokens", "tool_use": "tool_calls", "stop_sequence": "stop_sequence",
         "refusal": "refusal", "pause_turn": "pause_turn",
         "model_context_window_exceeded": "context_window_exceeded"}
_RETRYABLE_STREAM_ERRORS = {"api_error": 500, "overloaded_error": 529, "rate_limit_error": 429}


def _usage(u: dict[str, Any], prev: TokenUsage | None = None) -> TokenUsage:
    """TokenUsage from an Anthropic ``usage`` object (fields missing keep ``prev``'s values)."""
    p = prev or TokenUsage()
    base = int(u["input_tokens"]) if u.get("input_tokens") is not None else None
    read = int(u.get("cache_read_input_tokens") or 0) if "cache_read_input_tokens" in u else p.cache_read_tokens
    write = (int(u.get("cache_creation_input_tokens") or 0) if "cache_creation_input_tokens" in u
             else p.cache_write_tokens)
    total_in = base + read + write if base is not None else p.input_tokens
    out = int(u["output_tokens"]) if u.get("output_tokens") is not None else p.output_tokens
    return TokenUsage(total_in, out, read, write)


def _tool_input(raw: Any) -> dict[str, Any]:
    args = parse_arguments("anthropic", raw)
    return args if isinstance(args, dict) else {"_raw": args}  # the API needs an object


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
            if text.strip():
                system.append(text)
        elif role == "tool":
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.get("tool_call_id", "")}
            if text.strip():
                block["content"] = text
            if m.get("is_error"):
                block["is_error"] = True
            add("user", block)
        elif role == "assistant":
            if text.strip():
                add("assistant", {"type": "text", "text": text})
            for c in m.get("tool_calls") or []:
                fn = c.get("function", c)
                add("assistant", {"type": "tool_use", "id": c.get("id", ""), "name": fn["name"],
                                  "input": _tool_input(fn.get("arguments"))})
        elif text.strip():
            add("user", {"type": "text", "text": text})
    if not msgs:
        raise provider_error("anthropic", "the request has no non-empty message: the Messages API rejects empty "
                             "text; give the model some text to answer", status=400, retryable=False)
    body: dict[str, Any] = {"model": req.model, "max_tokens": req.max_tokens, "messages": msgs}
    if system:
        body["system"] = "\n\n".join(system)
    if req.tools:
        body["tools"] = [
            {"name": t["function"]["name"], "description": t["function"].get("description", ""),
             "input_schema": t["function"].get("parameters") or {"type": "object", "properties": {}}}
            for t in req.tools
        ]
        if req.tool_choice in ("auto", "none"):
            body["tool_choice"] = {"type": req.tool_choice}
        elif req.tool_choice == "required":
            body["tool_choice"] = {"type": "any"}
        elif req.tool_choice:
            body["tool_choice"] = {"type": "tool", "name": req.tool_choice}
    if req.temperature is not None:
        body["temperature"] = min(MAX_TEMPERATURE, max(0.0, req.temperature))
    if req.stop:
        body["stop_sequences"] = list(req.stop)
    if req.stream:
        body["stream"] = True
    return body


class AnthropicProvider(HTTPProvider):
    path = "/messages"

    def body(self, req: InferenceRequest) -> dict[str, Any]:
        return to_anthropic(req)

    def _headers(self) -> dict[str, str]:
        h = {"content-type": "application/json", "anthropic-version": API_VERSION}
        if self._key:
            h["x-api-key"] = self._key
        return h

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
                calls.append(ModelToolCall(b["id"], b["name"], parse_arguments(self.name, b.get("input"))))
        return InferenceResponse(
            text="".join(text), tool_calls=tuple(calls),
            usage=_usage(data.get("usage") or {}),
            stop_reason=_STOP.get(data.get("stop_reason") or "end_turn", "end"),  # type: ignore[arg-type]
            model=data.get("model") or req.model, provider=self.name,
        )

    async def _read_stream(self, r: httpx.Response, req: InferenceRequest,
                           on_delta: DeltaCallback | None) -> InferenceResponse:
        text: list[str] = []
        blocks: dict[int, dict[str, Any]] = {}
        usage = TokenUsage()
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
                usage = _usage(m.get("usage") or {}, usage)
            elif kind == "content_block_start":
                cb = ev["content_block"]
                blocks[ev["index"]] = {"type": cb["type"], "id": cb.get("id"), "name": cb.get("name"), "json": "",
                                       "input": cb.get("input") or None}
            elif kind == "content_block_delta":
                d = ev["delta"]
                if d["type"] == "text_delta":
                    text.append(d["text"])
                    await emit(on_delta, d["text"])
                elif d["type"] == "input_json_delta":
                    blocks[ev["index"]]["json"] += d["partial_json"]
            elif kind == "message_delta":
                stop = (ev.get("delta") or {}).get("stop_reason") or stop
                usage = _usage(ev.get("usage") or {}, usage)   # cumulative counts
            elif kind == "error":
                # an error after the 200 (overloaded, internal): retryable like the HTTP status it stands for
                err = ev.get("error") or {}
                status = _RETRYABLE_STREAM_ERRORS.get(err.get("type"))
                raise provider_error(self.name, f"error in stream: {err.get('type')}: {err.get('message')}",
                                     status=status or 400, retryable=status is not None)
        calls = tuple(ModelToolCall(b["id"], b["name"], parse_arguments(self.name, b["json"] or b["input"]))
                      for _, b in sorted(blocks.items()) if b["type"] == "tool_use")
        return InferenceResponse(
            text="".join(text), tool_calls=calls, usage=usage,
            stop_reason=_STOP.get(stop or "end_turn", "end"),  # type: ignore[arg-type]
            model=model, provider=self.name,
        )
