"""LangChain / LangGraph on agentix: a chat model backed by ``think``, agentix tools as LangChain tools.

    from langgraph.prebuilt import create_react_agent
    from agentix.adapters.langchain import AgentixChatModel, agentix_tools

    model = AgentixChatModel()                       # the manifest's model (or model="provider:model")
    graph = create_react_agent(model, agentix_tools())
    graph.invoke({"messages": [("user", "summarise notes.txt")]})

- ``AgentixChatModel`` is a ``BaseChatModel``: each generation is one ``think`` system call
  (scheduled, budgeted, audited by the kernel; the agent never sees a provider key). Tool
  calling works through ``bind_tools`` (the tools go to the model in OpenAI function format and
  its tool calls come back as ``AIMessage.tool_calls``); ``stream``/``astream`` stream the text
  as the provider produces it (``think`` with ``on_text``).
- ``agentix_tools()`` turns the kernel tools the agent's grants allow (``sys.info``) into
  LangChain tools (``AgentixTool``) whose call is ``tool.call``: every call is checked against the agent's
  capabilities, charged and audited by the kernel. A refusal (``capability_denied``,
  ``taint_violation``, ...) reaches the model as the tool's answer (``"error: CODE: message"``)
  rather than ending the run, so a ReAct agent can recover from it; the kernel has already
  refused and audited it.

Nothing here decides anything: the kernel does. This module only translates.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, Callable

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.utils import convert_to_openai_messages
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool, ToolException
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field

from agentix.adapters._tools import as_text, kernel_of, selected_tools
from agentix.sdk.errors import AgentixError

__all__ = ["AgentixChatModel", "AgentixTool", "agentix_tool", "agentix_tools", "to_think_messages"]


_kernel = kernel_of


def to_think_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages as ``think`` messages (OpenAI chat format: system/user/assistant with
    ``tool_calls``/tool with ``tool_call_id``)."""
    out = convert_to_openai_messages(list(messages))
    return [out] if isinstance(out, dict) else list(out)


def _data(reply: Any) -> dict[str, Any]:
    """The ``think`` result as its JSON (the SDK's ``Reply`` keeps it in ``raw``)."""
    raw = getattr(reply, "raw", reply)
    return raw if isinstance(raw, dict) else {}


def _usage(reply: dict[str, Any]) -> UsageMetadata:
    u = reply.get("usage") or {}
    i, o = int(u.get("input_tokens") or 0), int(u.get("output_tokens") or 0)
    return UsageMetadata(input_tokens=i, output_tokens=o, total_tokens=i + o)


def _tool_calls(reply: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": c["name"], "args": dict(c.get("arguments") or {}), "id": c.get("id") or f"call_{i}",
             "type": "tool_call"} for i, c in enumerate(reply.get("tool_calls") or [])]


def _metadata(reply: dict[str, Any]) -> dict[str, Any]:
    return {"model_name": reply.get("model"), "provider": reply.get("provider"),
            "stop_reason": reply.get("stop_reason"), "scripted": reply.get("scripted", False),
            "cost_usd": reply.get("cost_usd")}


class AgentixChatModel(BaseChatModel):
    """A LangChain chat model whose every generation is the agent's ``think`` system call.

    ``model`` is ``provider:model`` (None: the manifest's model, else the kernel's default);
    the agent needs a ``model:`` grant covering it. ``kernel`` is the agent's connection
    (default: ``agentix.sdk.agent.connect()``)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    kernel: Any = Field(default=None, exclude=True)

    @property
    def _llm_type(self) -> str:
        return "agentix"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "max_tokens": self.max_tokens, "temperature": self.temperature}

    def _params(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        p: dict[str, Any] = {}
        if self.model:
            p["model"] = self.model
        if self.max_tokens is not None:
            p["max_tokens"] = self.max_tokens
        if self.temperature is not None:
            p["temperature"] = self.temperature
        if stop:
            p["stop"] = list(stop)
        if kwargs.get("tools"):
            p["tools"] = list(kwargs["tools"])
        if kwargs.get("tool_choice") is not None:
            p["tool_choice"] = kwargs["tool_choice"]
        return p

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        reply = _data(_kernel(self.kernel).think(to_think_messages(messages), **self._params(stop, kwargs)))
        msg = AIMessage(content=reply.get("text") or "", tool_calls=_tool_calls(reply),
                        usage_metadata=_usage(reply), response_metadata=_metadata(reply))
        return ChatResult(generations=[ChatGeneration(message=msg)])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        stream = _kernel(self.kernel).think_stream(to_think_messages(messages), **self._params(stop, kwargs))
        for piece in stream:
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager is not None:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        reply = _data(stream.result)
        # the tool calls and the usage arrive with the whole reply: one last chunk carries them
        calls = [{"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"], "index": i,
                  "type": "tool_call_chunk"} for i, c in enumerate(_tool_calls(reply))]
        yield ChatGenerationChunk(message=AIMessageChunk(
            content="", tool_call_chunks=calls, usage_metadata=_usage(reply),
            response_metadata=_metadata(reply), chunk_position="last"))

    def bind_tools(self, tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool], *,
                   tool_choice: str | None = None, **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """The model with ``tools`` offered on every ``think`` (OpenAI function format)."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        if isinstance(tool_choice, dict):  # {"type": "function", "function": {"name": N}} -> N
            tool_choice = (tool_choice.get("function") or {}).get("name")
        if tool_choice is not None:
            kwargs["tool_choice"] = {"any": "required", True: "required"}.get(tool_choice, tool_choice)
        return super().bind(tools=formatted, **kwargs)


_answer = as_text


class AgentixTool(BaseTool):
    """A kernel tool as a LangChain tool: each call is ``tool.call`` (checked, charged,
    audited). A refusal comes back to the model as ``"error: CODE: message"``.

    A ``BaseTool`` subclass rather than a ``StructuredTool`` around a function: LangChain
    inspects a wrapped function's annotations on every call, which costs more than the
    kernel's own round trip (bench/adapters.py)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    kernel: Any = Field(default=None, exclude=True)
    handle_tool_error: bool = True

    def _run(self, **args):  # noqa: ANN003,ANN202 - unannotated on purpose (see above)
        try:
            return _answer(_kernel(self.kernel).tools.call(self.name, args))
        except AgentixError as err:
            raise ToolException(f"error: {err.code}: {err.message}") from None


def agentix_tool(name: str, description: str = "", schema: dict[str, Any] | None = None, *,
                 kernel: Any = None) -> BaseTool:
    """The kernel tool ``name`` as a LangChain tool (``AgentixTool``); ``schema`` is its JSON
    Schema (from ``tool.list``)."""
    return AgentixTool(name=name, description=description or f"the agentix tool {name}",
                       args_schema=schema or {"type": "object", "properties": {}}, kernel=kernel)


def agentix_tools(names: Sequence[str] | None = None, *, kernel: Any = None) -> list[BaseTool]:
    """Kernel tools as LangChain tools: ``names`` (each must exist in the kernel's catalogue),
    or every tool the agent's grants allow (``sys.info``)."""
    k = kernel_of(kernel)
    return [agentix_tool(t["name"], t.get("description", ""), t.get("input_schema"), kernel=k)
            for t in selected_tools(k, names)]
