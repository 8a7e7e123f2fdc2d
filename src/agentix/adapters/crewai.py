"""CrewAI on agentix: an LLM backed by ``think``, kernel tools as CrewAI tools, and crew
members that are agentix agents of their own.

    from crewai import Agent, Crew, Task
    from agentix.adapters.crewai import AgentixLLM, agentix_crewai_tools, member

    researcher = member("researcher", ["model: sim:engine", "tool: echo"])     # a child agentix agent
    writer = member("writer", ["model: sim:engine", "file_write: /workspace/*"])
    crew = Crew(agents=[
        Agent(role="researcher", goal=..., backstory=..., llm=AgentixLLM(kernel=researcher),
              tools=agentix_crewai_tools(kernel=researcher)),
        Agent(role="writer", goal=..., backstory=..., llm=AgentixLLM(kernel=writer),
              tools=agentix_crewai_tools(kernel=writer))], tasks=[...])

- ``AgentixLLM`` is a CrewAI ``BaseLLM`` whose every call is one ``think`` (scheduled,
  budgeted, audited). It does not claim native function calling: CrewAI drives tools with
  its ReAct text format, which every model can follow.
- ``agentix_crewai_tools()`` gives kernel tools as CrewAI ``BaseTool``s whose call is
  ``tool.call``; a refusal is the tool's answer (``"error: CODE: message"``).
- ``member(name, grants)`` spawns a child agentix agent running the built-in member program
  (``agentix.agents.member``) and returns a kernel handle that performs ``think`` and tool
  calls AS that child: a crew agent given it (as the ``kernel`` of its LLM and tools) has the
  child's identity, grants and budget, so two crew agents of one crew hold different
  capabilities, each checked by the kernel. The parent needs ``spawn_child`` and
  ``message_send`` naming each member, and grants covering each member's; the member gets
  ``message_send`` naming the parent to answer. Requests reach a member as messages, so its
  context is tainted ``agent_message``: the taint policy keeps it from ``exec``,
  ``a2a_call``, sending tools and writes outside its workspace.

CrewAI is not an agentix extra: crewai 1.15 pins ``mcp<2``, ``openai<3`` and
``pydantic<2.13``, which the ``mcp`` and ``openai-agents`` extras cannot meet. It has an
environment of its own, ``.venv-crewai`` from ``requirements-crewai.lock`` (``make
crewai-venv``; docs/integrations.md).
"""

from __future__ import annotations

import itertools
import os
from typing import Any

from crewai import BaseLLM
from crewai.tools import BaseTool
from pydantic import BaseModel, ConfigDict, Field, create_model

from agentix.adapters._tools import as_text, kernel_of, selected_tools
from agentix.sdk.errors import AgentixError

__all__ = ["AgentixCrewTool", "AgentixLLM", "MemberKernel", "agentix_crewai_tools", "member"]

# CrewAI's telemetry and trace upload would only fail in a sandbox (no network)
for _var, _val in (("CREWAI_DISABLE_TELEMETRY", "true"), ("OTEL_SDK_DISABLED", "true"),
                   ("CREWAI_TRACING_ENABLED", "false")):
    os.environ.setdefault(_var, _val)


_kernel = kernel_of


class MemberError(AgentixError):
    """A member agent's call was refused or failed; ``code`` is the kernel's code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # type: ignore[misc]


class _MemberTools:
    def __init__(self, m: MemberKernel) -> None:
        self._m = m

    def call(self, name: str, args: dict[str, Any] | None = None) -> Any:
        return self._m._ask({"op": "tool", "name": name, "args": args or {}})

    def list(self) -> list[dict[str, Any]]:
        return self._m._ask({"op": "tools"})


class MemberKernel:
    """The kernel as seen by a member agent: ``think``, ``tools.call``, ``tools.list`` and
    ``info`` run in the member's process, as the member."""

    def __init__(self, parent: Any, agent_id: str, name: str, timeout: float) -> None:
        self._parent, self.agent_id, self.name, self._timeout = parent, agent_id, name, timeout
        self._seq = itertools.count(1)
        self.tools = _MemberTools(self)

    def _ask(self, req: dict[str, Any]) -> Any:
        seq = next(self._seq)
        self._parent.send(self.agent_id, {"member": seq, **req})
        while True:
            m = self._parent.recv(timeout=self._timeout)
            if m is None:
                raise MemberError("timeout", f"member {self.name} did not answer within {self._timeout:g} s")
            body = m.body
            if m.sender == self.agent_id and isinstance(body, dict) and body.get("member_reply") == seq:
                if "error" in body:
                    raise MemberError(str(body["error"]), str(body.get("message", "")))
                return body.get("ok")

    def think(self, messages: list[dict[str, Any]], **params: Any) -> dict[str, Any]:
        return self._ask({"op": "think", "params": {"messages": messages, **params}})

    def info(self) -> dict[str, Any]:
        return self._ask({"op": "info"})

    def close(self) -> None:
        """End the member agent (it exits; its record stays)."""
        self._parent.send(self.agent_id, {"member": 0, "op": "exit"})


def member(name: str, grants: list[str], *, timeout: float = 600.0, kernel: Any = None,
           **manifest: Any) -> MemberKernel:
    """Spawn ``name`` as a child agentix agent holding ``grants`` (plus ``message_send`` naming
    this agent, to answer) that serves ``think`` and tool calls for a crew agent."""
    k = _kernel(kernel)
    me = k.info()["name"]
    child = k.spawn({"name": name, "program": "module:agentix.agents.member",
                     "capabilities": [*grants, f"message_send: {me}"], **manifest})
    return MemberKernel(k, child.agent_id, child.name, timeout)


class AgentixLLM(BaseLLM):
    """A CrewAI LLM whose every call is the ``think`` system call (of ``kernel``: this agent,
    or a ``member``). ``model`` is ``provider:model`` or ``"agentix"`` (the manifest's)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: str = "agentix"
    kernel: Any = Field(default=None, exclude=True)

    def __init__(self, **data: Any) -> None:
        data.setdefault("model", "agentix")  # BaseLLM validates the input for a model name
        super().__init__(**data)

    def call(self, messages: Any, tools: Any = None, callbacks: Any = None, available_functions: Any = None,
             from_task: Any = None, from_agent: Any = None, response_model: Any = None) -> str:
        msgs = [{"role": "user", "content": messages}] if isinstance(messages, str) else [
            {"role": m.get("role", "user"), "content": m.get("content")} for m in messages]
        params: dict[str, Any] = {}
        if ":" in self.model:
            params["model"] = self.model
        if self.stop:
            params["stop"] = list(self.stop)
        if self.max_tokens:
            params["max_tokens"] = int(self.max_tokens)
        if self.temperature is not None:
            params["temperature"] = self.temperature
        reply = _kernel(self.kernel).think(msgs, **params)
        raw = getattr(reply, "raw", reply)  # the SDK's Reply, or a member's JSON answer
        return (raw.get("text") if isinstance(raw, dict) else None) or ""

    def supports_function_calling(self) -> bool:
        return False

    def supports_stop_words(self) -> bool:
        return True

    def get_context_window_size(self) -> int:
        return 8192


_JSON_TYPES = {"string": str, "integer": int, "number": float, "boolean": bool, "object": dict, "array": list}


def _args_model(name: str, schema: dict[str, Any]) -> type[BaseModel]:
    props = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    fields: dict[str, Any] = {}
    for key, spec in props.items():
        want = spec.get("type") if isinstance(spec, dict) else None
        typ = _JSON_TYPES.get(want, Any) if isinstance(want, str) else Any  # a list of types: Any
        fields[key] = (typ, ...) if key in required else (typ | None, None)
    return create_model(f"{name}_args", **fields)


class AgentixCrewTool(BaseTool):
    """A kernel tool as a CrewAI tool: each call is ``tool.call`` as ``kernel``'s agent."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    kernel: Any = Field(default=None, exclude=True)

    def _run(self, **args: Any) -> str:
        args = {k: v for k, v in args.items() if v is not None}
        try:
            out = _kernel(self.kernel).tools.call(self.name, args)
        except AgentixError as err:
            return f"error: {err.code}: {err.message}"
        return as_text(out)


def agentix_crewai_tools(names: list[str] | None = None, *, kernel: Any = None) -> list[BaseTool]:
    """Kernel tools as CrewAI tools: ``names``, or every tool ``kernel``'s agent may call."""
    k = kernel_of(kernel)
    return [AgentixCrewTool(name=t["name"], description=t.get("description") or t["name"],
                            args_schema=_args_model(t["name"], t.get("input_schema") or {}), kernel=k)
            for t in selected_tools(k, names)]
