"""The OpenAI Agents SDK on agentix: a model provider backed by ``think``, kernel tools as
function tools, handoffs to child agentix agents.

    from agents import Agent, RunConfig, Runner
    from agentix.adapters.openai_agents import AgentixModelProvider, agentix_function_tools, spawn_handoff

    specialist = spawn_handoff("specialist", {"name": "specialist", "program": "specialist.py",
                                              "capabilities": ["model: sim:engine", "tool: echo"]})
    triage = Agent(name="triage", instructions="...", tools=agentix_function_tools(), handoffs=[specialist])
    result = Runner.run_sync(triage, "hello", run_config=RunConfig(model_provider=AgentixModelProvider()))

- ``AgentixModelProvider`` gives ``AgentixModel``s: the SDK's own Chat Completions model
  (its message, tool and streaming conversions) whose client is ``think`` instead of an HTTP
  API: every model call is one ``think`` system call (scheduled, budgeted, audited; the
  agent holds no API key). A model name of ``provider:model`` is passed on; none (the
  SDK's default) means the manifest's model. ``Runner.run_streamed`` streams through
  ``think``'s stream.
- ``agentix_function_tools()`` gives the kernel tools the agent's grants allow as
  ``FunctionTool``s whose call is ``tool.call`` (checked, charged, audited); a refusal is the
  tool's answer (``"error: CODE: message"``), as the SDK does for a failing tool.
- ``spawn_handoff(name, manifest)`` is a handoff whose target runs as a CHILD agentix agent
  (``agent.spawn_child``): its own process and sandbox, with the grants its manifest names,
  which the kernel only allows when the parent's own grants cover them (a handoff can only
  narrow). The child receives the handoff's ``task`` as its first message; the conversation
  continues with an agent named after the child that answers with the child's result.

Structured outputs (``output_type``) are not supported through ``think`` yet: a run that
asks for one fails with a clear ``UserError``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from agents import Agent, FunctionTool, Handoff, ModelProvider, RunContextWrapper
from agents.exceptions import UserError
from agents.items import ModelResponse
from agents.models.chatcmpl_converter import Converter
from agents.models.interface import Model
from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
from agents.usage import Usage
from openai import Omit
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage

from agentix.adapters._tools import as_text, kernel_of, selected_tools
from agentix.sdk import agent as _agent
from agentix.sdk.errors import AgentixError
from agentix.sdk._results import answer_text

__all__ = ["AgentixModel", "AgentixModelProvider", "agentix_function_tool", "agentix_function_tools",
           "spawn_handoff"]

#: the ``create`` arguments passed on to ``think``; others the SDK sends only when set
_PASSED = ("messages", "tools", "tool_choice", "temperature", "max_tokens", "stop")
_FINISH = {"end": "stop", "tool_calls": "tool_calls", "max_tokens": "length"}


_kernel = kernel_of


def _set(v: Any) -> bool:
    return v is not None and not isinstance(v, Omit)


class _Completions:
    """``chat.completions.create`` whose completion is a ``think`` system call."""

    def __init__(self, kernel: Any, model: str | None) -> None:
        self._kernel, self._model = kernel, model

    def _params(self, kw: dict[str, Any]) -> dict[str, Any]:
        if _set(kw.get("response_format")):
            raise UserError("structured outputs (output_type) are not supported through agentix's think "
                            "yet: return text, or parse it yourself")
        p = {k: kw[k] for k in _PASSED if _set(kw.get(k))}
        if self._model:
            p["model"] = self._model
        tc = p.get("tool_choice")
        if isinstance(tc, dict):  # {"type": "function", "function": {"name": N}} -> N
            p["tool_choice"] = (tc.get("function") or {}).get("name")
        return p

    async def create(self, **kw: Any) -> Any:
        params = self._params(kw)
        k = _kernel(self._kernel)
        if kw.get("stream") is True:
            return self._stream(k, params)
        reply = _data(await asyncio.to_thread(lambda: k.think(**params)))
        return ChatCompletion.model_validate({
            "id": "agentix-think", "object": "chat.completion", "created": int(time.time()),
            "model": reply.get("model") or "", "usage": _usage(reply),
            "choices": [{"index": 0, "finish_reason": _FINISH.get(reply.get("stop_reason"), "stop"),
                         "message": {"role": "assistant", "content": reply.get("text") or None,
                                     "tool_calls": _tool_calls(reply) or None}}]})

    async def _stream(self, k: _agent.AgentKernel, params: dict[str, Any]) -> AsyncIterator[ChatCompletionChunk]:
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[Any] = asyncio.Queue()
        end = object()
        out: dict[str, Any] = {}

        def run() -> None:  # think streams in this thread; each piece is handed to the loop
            try:
                out["reply"] = k.think(on_text=lambda t: loop.call_soon_threadsafe(q.put_nowait, t), **params)
            except BaseException as err:  # noqa: BLE001 - raised in the iterating task
                out["error"] = err
            loop.call_soon_threadsafe(q.put_nowait, end)

        threading.Thread(target=run, name="think-stream", daemon=True).start()

        def chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> ChatCompletionChunk:
            return ChatCompletionChunk.model_validate({
                "id": "agentix-think", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": self._model or "", "usage": usage,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

        while (piece := await q.get()) is not end:
            yield chunk({"role": "assistant", "content": piece})
        if "error" in out:
            raise out["error"]
        reply = _data(out["reply"])
        calls = [{**c, "index": i} for i, c in enumerate(_tool_calls(reply))]
        if calls:
            yield chunk({"role": "assistant", "tool_calls": calls})
        yield chunk({}, _FINISH.get(reply.get("stop_reason"), "stop"), _usage(reply))


class _ThinkClient:
    """What ``OpenAIChatCompletionsModel`` needs of an OpenAI client, backed by ``think``."""

    base_url = "agentix://think"

    def __init__(self, kernel: Any, model: str | None) -> None:
        self.chat = type("Chat", (), {})()
        self.chat.completions = _Completions(kernel, model)


def _data(reply: Any) -> dict[str, Any]:
    """The ``think`` result as its JSON (the SDK's ``Reply`` keeps it in ``raw``)."""
    raw = getattr(reply, "raw", reply)
    return raw if isinstance(raw, dict) else {}


def _usage(reply: dict[str, Any]) -> dict[str, int]:
    u = reply.get("usage") or {}
    i, o = int(u.get("input_tokens") or 0), int(u.get("output_tokens") or 0)
    return {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o}


def _tool_calls(reply: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"id": c.get("id") or f"call_{i}", "type": "function",
             "function": {"name": c["name"], "arguments": json.dumps(c.get("arguments") or {})}}
            for i, c in enumerate(reply.get("tool_calls") or [])]


class AgentixModel(OpenAIChatCompletionsModel):
    """The SDK's Chat Completions model over ``think``. ``model`` is ``provider:model`` or None
    (the manifest's model)."""

    def __init__(self, model: str | None = None, *, kernel: Any = None) -> None:
        super().__init__(model=model or "agentix", openai_client=_ThinkClient(kernel, model))  # type: ignore[arg-type]


class AgentixModelProvider(ModelProvider):
    """Every agent of a run gets an ``AgentixModel``: ``RunConfig(model_provider=AgentixModelProvider())``."""

    def __init__(self, *, kernel: Any = None, tracing: bool = False) -> None:
        self._kernel = kernel
        if not tracing:
            # an agent has no network (and no OpenAI key): the SDK's trace export would only
            # fail; the kernel's audit log is the record of the run
            from agents import set_tracing_disabled

            set_tracing_disabled(True)

    def get_model(self, model_name: str | None) -> Model:
        # a name without a provider prefix (the SDK's default, e.g. gpt-4.1) is not a
        # provider:model: the manifest's model is used instead
        return AgentixModel(model_name if model_name and ":" in model_name else None, kernel=self._kernel)


# ---------------------------------------------------------------------------- tools
def agentix_function_tool(name: str, description: str = "", schema: dict[str, Any] | None = None, *,
                          kernel: Any = None) -> FunctionTool:
    """The kernel tool ``name`` as a ``FunctionTool``: each call is ``tool.call``."""

    async def invoke(ctx: RunContextWrapper[Any], args_json: str) -> str:
        try:
            args = json.loads(args_json or "{}")
        except ValueError as err:
            return f"error: invalid_request: the arguments are not JSON ({err})"
        try:
            result = await asyncio.to_thread(_kernel(kernel).tools.call, name, args)
        except AgentixError as err:
            return f"error: {err.code}: {err.message}"
        return as_text(result)

    return FunctionTool(name=name, description=description or f"the agentix tool {name}",
                        params_json_schema=schema or {"type": "object", "properties": {}},
                        on_invoke_tool=invoke, strict_json_schema=False)


def agentix_function_tools(names: Sequence[str] | None = None, *, kernel: Any = None) -> list[FunctionTool]:
    """Kernel tools as function tools: ``names``, or every tool the agent's grants allow."""
    k = kernel_of(kernel)
    return [agentix_function_tool(t["name"], t.get("description", ""), t.get("input_schema"), kernel=k)
            for t in selected_tools(k, names)]


# ---------------------------------------------------------------------------- handoffs
class _Reported(Model):
    """The model of the agent a ``spawn_handoff`` hands to: it answers with what the child
    agentix agent reported (no ``think``: the child already thought)."""

    def __init__(self, text: str) -> None:
        self._text = text

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        items = Converter.message_to_output_items(ChatCompletionMessage(role="assistant", content=self._text))
        return ModelResponse(output=items, usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise UserError("a spawn_handoff target answers once, with its child's result: use Runner.run")


def spawn_handoff(name: str, manifest: dict[str, Any], *, description: str | None = None,
                  timeout: float | None = None, kernel: Any = None) -> Handoff[Any, Agent[Any]]:
    """A handoff to a child agentix agent spawned from ``manifest`` (``agent.spawn_child``).

    The kernel refuses the spawn unless the caller holds ``spawn_child: NAME`` and its grants
    cover every grant of ``manifest``: a handoff never widens what runs. The child gets the
    model's ``task`` as its first message; its result (``k.exit(...)``: a string, or a dict
    whose ``answer`` is used) is the answer of the agent handed to. A refused spawn or a
    failed child raises ``UserError`` naming the kernel's reason."""
    child_name = manifest.get("name", name)

    async def invoke(ctx: RunContextWrapper[Any], input_json: str) -> Agent[Any]:
        try:
            task = json.loads(input_json or "{}").get("task", "")
        except (ValueError, AttributeError):
            task = ""
        k = _kernel(kernel)
        try:
            child = await asyncio.to_thread(k.spawn, manifest, task)
            done = await asyncio.to_thread(k.wait_child, child.agent_id, timeout)
        except AgentixError as err:
            raise UserError(f"handoff to {child_name} refused by the kernel: {err.code}: {err.message}") from None
        if not done.ok:
            raise UserError(f"handoff to {child_name}: the child agent ended {done.reason} (code {done.code})")
        return Agent(name=child_name, model=_Reported(answer_text(done.result)))

    return Handoff(
        tool_name=f"transfer_to_{name}",
        tool_description=description or f"Hand the task to {child_name}, a separate agent with its own grants.",
        input_json_schema={"type": "object", "properties": {"task": {"type": "string", "description":
                                                                    "what the other agent should do"}},
                           "required": ["task"], "additionalProperties": False},
        on_invoke_handoff=invoke, agent_name=child_name, strict_json_schema=False)
