"""Scripted provider: replays a file of responses, in order, for tests and deterministic demos.

The file is JSON or YAML: a list of turns (or ``{"turns": [...]}``), each
``{text?, tool_calls?: [{name, arguments}], stop_reason?, usage?: {input_tokens, output_tokens},
error?: {message, status?, retryable?}, delay?: seconds}`` (a turn with ``text`` and ``error``
streams the text, then fails: a stream that breaks; ``arguments``: an object, or the raw
text a model sent, which reaches the caller as text when it is not a JSON object). Every response it returns has
``scripted=True`` and ``provider="scripted"``, and wherever it is shown it must be labelled
as scripted. When the turns run out it raises a non-retryable ``ProviderError``; with
``loop=True`` it starts again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml

from agentix.core.errors import InvalidRequest
from agentix.llm.base import (DeltaCallback, InferenceRequest, InferenceResponse, ModelToolCall, Provider,
                              TokenUsage, emit, estimate_tokens, parse_arguments, provider_error)

__all__ = ["ScriptedProvider", "load_script"]


def load_script(path: str | Path) -> list[dict[str, Any]]:
    """Turns from a JSON/YAML file; raise InvalidRequest naming the file and the bad turn."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise InvalidRequest(f"scripted provider: cannot read {p}: {e}", field="script") from None
    turns = data.get("turns") if isinstance(data, dict) else data
    if not isinstance(turns, list):
        raise InvalidRequest(f"scripted provider: {p} must hold a list of turns", field="script")
    for i, t in enumerate(turns):
        if not isinstance(t, dict) or not ({"text", "tool_calls", "error"} & t.keys()):
            raise InvalidRequest(f"scripted provider: {p}: turn {i} needs text, tool_calls or error",
                                 field=f"script[{i}]")
    return turns


class ScriptedProvider(Provider):
    scripted = True

    def __init__(self, turns: list[dict[str, Any]], name: str = "scripted", loop: bool = False) -> None:
        self.name = name
        self._turns = list(turns)
        self._i = 0
        self._loop = loop

    @classmethod
    def from_file(cls, path: str | Path, loop: bool = False) -> ScriptedProvider:
        return cls(load_script(path), loop=loop)

    async def _complete(self, req: InferenceRequest, on_delta: DeltaCallback | None = None) -> InferenceResponse:
        if self._i >= len(self._turns):
            if not self._loop or not self._turns:
                raise provider_error(self.name, f"script exhausted after {len(self._turns)} turns", retryable=False)
            self._i = 0
        t = self._turns[self._i]
        self._i += 1
        if t.get("delay"):
            await asyncio.sleep(float(t["delay"]))
        if "error" in t:
            e = t["error"] or {}
            # a turn with text and an error streams the text, then fails (a stream that breaks)
            await emit(on_delta, t.get("text") or "")
            raise provider_error(self.name, e.get("message", "scripted error"), status=e.get("status"),
                                 retry_after=e.get("retry_after"), retryable=e.get("retryable"))
        text = t.get("text") or ""
        # arguments as a real model sends them: an object, or raw text (broken JSON stays text)
        calls = tuple(ModelToolCall(c.get("id", f"call_{self._i}_{j}"), c["name"],
                               parse_arguments(self.name, c.get("arguments")))
                      for j, c in enumerate(t.get("tool_calls") or []))
        u = t.get("usage") or {}
        await emit(on_delta, text)
        return InferenceResponse(
            text=text, tool_calls=calls,
            usage=TokenUsage(int(u.get("input_tokens", estimate_tokens(req))),
                             int(u.get("output_tokens", max(1, len(text) // 4)))),
            stop_reason=t.get("stop_reason") or ("tool_calls" if calls else "end"),
            model=req.model or "script", provider=self.name, scripted=True,
        )
