"""The provider seam: one typed request, one typed response, one method, one error family.

A ``Provider`` implements ``complete(request, on_delta=None)``. Whatever goes wrong inside
(HTTP status, malformed body, connection refused, engine crash) leaves it as a
``ProviderError`` whose ``data`` is ``{provider, status, retry_after, retryable}``: the
scheduler reads ``retryable`` and ``retry_after`` and nothing else. ``on_delta`` receives
partial text as the provider streams it (providers that cannot stream call it once).

Messages use the OpenAI chat shape (``{"role", "content", "tool_calls"?, "tool_call_id"?}``)
and tools the OpenAI function-calling shape
(``{"type": "function", "function": {"name", "description", "parameters"}}``); each
provider translates to its own wire format.
"""

from __future__ import annotations

import abc
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from agentix.core.errors import AgentixError, InvalidRequest, ProviderError

__all__ = ["DeltaCallback", "InferenceRequest", "InferenceResponse", "Provider", "ModelToolCall", "TokenUsage",
           "estimate_tokens", "emit", "parse_arguments", "provider_error"]

log = logging.getLogger(__name__)

# "refusal": the model declined (Anthropic); "pause_turn": a long turn paused, send the reply
# back to continue it; "context_window_exceeded": the prompt plus reply hit the model's window
StopReason = Literal["end", "max_tokens", "tool_calls", "stop_sequence", "content_filter", "error",
                     "refusal", "pause_turn", "context_window_exceeded"]
DeltaCallback = Callable[[str], Awaitable[None] | None]
_ROLES = {"system", "user", "assistant", "tool"}


@dataclass(frozen=True)
class ModelToolCall:
    """One tool call. ``arguments`` is a dict, or the model's raw text when that was not a
    JSON object (the caller reports it to the model as invalid)."""

    id: str
    name: str
    arguments: dict[str, Any] | str

    def to_data(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}


@dataclass(frozen=True)
class TokenUsage:
    """Tokens of one reply. ``input_tokens`` counts the whole prompt, cached parts included;
    ``cache_read_tokens`` and ``cache_write_tokens`` say how many of them were read from or
    written to the provider's prompt cache (priced differently: see ``Price.cost``)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def to_data(self) -> dict[str, int]:
        d = {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}
        if self.cache_read_tokens or self.cache_write_tokens:
            d.update(cache_read_tokens=self.cache_read_tokens, cache_write_tokens=self.cache_write_tokens)
        return d


@dataclass(frozen=True)
class InferenceRequest:
    """What an agent asks for. ``model`` is the provider's model name (no prefix)."""

    messages: tuple[dict[str, Any], ...]
    model: str = ""
    tools: tuple[dict[str, Any], ...] = ()
    max_tokens: int = 512
    temperature: float | None = None
    stream: bool = False
    stop: tuple[str, ...] = ()
    tool_choice: str | None = None  # "auto" | "none" | "required" | a tool name

    @classmethod
    def from_params(cls, params: dict[str, Any], default_max_tokens: int = 512) -> InferenceRequest:
        """Validate ``think`` parameters from an agent; raise InvalidRequest naming the field."""
        msgs = params.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise InvalidRequest("think: 'messages' must be a non-empty list", field="messages")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in _ROLES:
                raise InvalidRequest(
                    f"think: messages[{i}] must be an object with role one of {sorted(_ROLES)}",
                    field=f"messages[{i}]",
                )
            c = m.get("content")
            if c is not None and not isinstance(c, (str, list)):
                raise InvalidRequest(f"think: messages[{i}].content must be text", field=f"messages[{i}].content")
        tools = params.get("tools") or []
        if not isinstance(tools, list):
            raise InvalidRequest("think: 'tools' must be a list", field="tools")
        for i, t in enumerate(tools):
            fn = t.get("function") if isinstance(t, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise InvalidRequest(
                    f"think: tools[{i}] must be {{'type': 'function', 'function': {{'name', 'parameters'}}}}",
                    field=f"tools[{i}]",
                )
        mt = params.get("max_tokens", default_max_tokens)
        if not isinstance(mt, int) or isinstance(mt, bool) or not 1 <= mt <= 1_000_000:
            raise InvalidRequest("think: 'max_tokens' must be an integer from 1 to 1000000", field="max_tokens")
        temp = params.get("temperature")
        if temp is not None and (not isinstance(temp, (int, float)) or not 0 <= temp <= 2):
            raise InvalidRequest("think: 'temperature' must be a number from 0 to 2", field="temperature")
        stop = params.get("stop") or ()
        if isinstance(stop, str):
            stop = (stop,)
        return cls(
            messages=tuple(msgs),
            tools=tuple(tools),
            max_tokens=mt,
            temperature=None if temp is None else float(temp),
            stream=bool(params.get("stream", False)),
            stop=tuple(stop),
            tool_choice=params.get("tool_choice"),
        )


@dataclass(frozen=True)
class InferenceResponse:
    text: str
    tool_calls: tuple[ModelToolCall, ...] = ()
    usage: TokenUsage = field(default_factory=TokenUsage)
    stop_reason: StopReason = "end"
    model: str = ""
    provider: str = ""
    scripted: bool = False
    cost_usd: float | None = None   # set by the kernel from its price table (None: no price known)

    def to_data(self) -> dict[str, Any]:
        """The ``think`` result as JSON."""
        return {
            "text": self.text,
            "tool_calls": [t.to_data() for t in self.tool_calls],
            "usage": self.usage.to_data(),
            "stop_reason": self.stop_reason,
            "model": self.model,
            "provider": self.provider,
            "scripted": self.scripted,
            "cost_usd": self.cost_usd,
        }


def provider_error(
    provider: str, message: str, status: int | None = None, retry_after: float | None = None,
    retryable: bool | None = None,
) -> ProviderError:
    """The one error a provider raises. Retryable by default for 429, 5xx and no status."""
    if retryable is None:
        retryable = status is None or status == 429 or status >= 500
    return ProviderError(
        f"{provider}: {message}", provider=provider, status=status, retry_after=retry_after, retryable=retryable
    )


def estimate_tokens(req: InferenceRequest) -> int:
    """A cheap upper-ish estimate of the prompt's tokens (about 4 characters a token)."""
    chars = 0
    for m in req.messages:
        c = m.get("content")
        chars += len(c) if isinstance(c, str) else len(json.dumps(c)) if c is not None else 0
        if m.get("tool_calls"):
            chars += len(json.dumps(m["tool_calls"]))
        chars += 16
    if req.tools:
        chars += len(json.dumps(list(req.tools)))
    return max(1, chars // 4 + 1)


async def emit(on_delta: DeltaCallback | None, text: str) -> None:
    """Call ``on_delta`` with ``text`` (sync or async callback)."""
    if on_delta is None or not text:
        return
    r = on_delta(text)
    if r is not None:
        await r


def parse_arguments(provider: str, raw: Any) -> dict[str, Any] | str:
    """Tool-call arguments as a dict. Arguments that are not a JSON object (broken JSON, a
    list, a number) come back as the model's raw text, unchanged, so the loop can tell the
    model "your arguments are not valid JSON: ..." instead of "fields missing"."""
    if isinstance(raw, dict):
        return raw
    if raw in (None, ""):
        return {}
    if not isinstance(raw, str):
        return json.dumps(raw)
    try:
        v = json.loads(raw)
    except ValueError:
        return raw
    return v if isinstance(v, dict) else raw


class Provider(abc.ABC):
    """One inference backend. ``name`` is the configured provider name (``openai``, ...)."""

    name: str = "provider"
    scripted: bool = False

    async def complete(self, req: InferenceRequest, on_delta: DeltaCallback | None = None) -> InferenceResponse:
        """Run one request; only the family leaves (``ProviderError`` for what went wrong
        in the backend). A provider implements ``_complete``; whatever else escapes it (a
        transport's exception, a parser's ``KeyError`` on a malformed body) leaves here as
        a ``provider_error`` (retryable when it was the network: ``OSError``, timeouts)."""
        try:
            return await self._complete(req, on_delta)
        except AgentixError:
            raise
        except Exception as err:  # noqa: BLE001 - the seam: one family leaves
            log.warning("provider %s failed", self.name, exc_info=err)
            text = str(err)
            text = text if len(text) <= 200 else text[:200] + "..."
            raise provider_error(self.name, f"{type(err).__name__}: {text}" if text else type(err).__name__,
                                 retryable=isinstance(err, OSError)) from None

    @abc.abstractmethod
    async def _complete(self, req: InferenceRequest, on_delta: DeltaCallback | None) -> InferenceResponse:
        """Run one request (the backend's part of ``complete``); raise ``ProviderError``."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections or engines."""
