"""A scripted wrapper around the fake OpenAI server: answers chosen per request.

Many agents talk to one model at once, so a single FIFO of answers cannot say who gets
what. ``RoutedOpenAIServer(route)`` asks ``route(body) -> Scripted`` for each request (the
real OpenAI wire format in and out, over real HTTP on 127.0.0.1). ``AgentScripts`` is a
route: an agent is recognised by a marker ``[agent:NAME]`` in its system prompt, and its
turn is the number of requests it made before (so a summarised history does not change it); the plan, synthesis and summary
calls of the orchestrator and the loop are recognised by their system prompts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from tests.fakes.openai_server import FakeOpenAIServer, Scripted

__all__ = ["AgentScripts", "RoutedOpenAIServer", "call", "config_toml", "system_text", "text", "tool_results"]

Route = Callable[[dict[str, Any]], Scripted]


class RoutedOpenAIServer(FakeOpenAIServer):
    def __init__(self, route: Route, **kw: Any) -> None:
        super().__init__(**kw)
        self.route = route

    async def _handle(self, data: dict[str, Any], headers: dict[str, str], writer: Any) -> None:
        try:
            item = self.route(data)
        except Exception as err:  # a broken script shows up as a 500 the test can read
            item = Scripted(status=500, error_message=f"route failed: {err!r}")
        # FakeOpenAIServer._handle pops this before its first await: no other request interleaves
        self.queue.appendleft(item)
        await super()._handle(data, headers, writer)


def text(s: str) -> Scripted:
    return Scripted(text=s)


def call(name: str, **arguments: Any) -> Scripted:
    return Scripted(tool_calls=[{"name": name, "arguments": arguments}])


def system_text(data: dict[str, Any]) -> str:
    return "\n".join(str(m.get("content") or "") for m in data.get("messages", []) if m.get("role") == "system")


def tool_results(data: dict[str, Any]) -> list[str]:
    return [str(m.get("content") or "") for m in data.get("messages", []) if m.get("role") == "tool"]


Turn = Scripted | Callable[[dict[str, Any]], Scripted]


class AgentScripts:
    """``route`` for RoutedOpenAIServer: scripted turns per agent marker."""

    MARK = re.compile(r"\[agent:([a-z0-9_-]+)\]")

    def __init__(self, scripts: dict[str, list[Turn]], *, plan: dict[str, Any] | list[str] | None = None,
                 synthesis: str = "final synthesis", summary: str = "summary of the earlier conversation") -> None:
        self.scripts = scripts
        self.plan = plan
        self.synthesis = synthesis
        self.summary = summary
        self.plan_calls = 0
        self.summary_calls = 0
        self.seen: list[tuple[str, int]] = []
        self.turns: dict[str, int] = {}

    def __call__(self, data: dict[str, Any]) -> Scripted:
        system = system_text(data)
        if "Decompose the goal into a plan" in system:
            self.plan_calls += 1
            p = self.plan
            if isinstance(p, list):  # one raw reply per attempt
                return text(p[min(self.plan_calls, len(p)) - 1])
            return text(json.dumps(p))
        if "Combine the subtask results" in system:
            return text(self.synthesis)
        if "<transcript>" in str(data["messages"][-1].get("content")):
            self.summary_calls += 1
            return text(self.summary)
        m = self.MARK.search(system)
        if m is None:
            raise LookupError(f"no [agent:NAME] marker in the system prompt: {system[:200]!r}")
        name = m.group(1)
        turn = self.turns.get(name, 0)
        self.turns[name] = turn + 1
        self.seen.append((name, turn))
        turns = self.scripts[name]
        t = turns[min(turn, len(turns) - 1)]
        return t(data) if callable(t) else t


def config_toml(base_url: str, *, kernel: bool = True) -> str:
    """A config.toml pointing the default model at the fake server (plain backend, degraded)."""
    out = (f'default_model = "fake:fake-model"\n\n[providers.fake]\nkind = "openai"\n'
           f'base_url = "{base_url}"\napi_key = "test-key"\nconcurrency = 16\n')
    if kernel:
        out += '\n[kernel]\nbackend = "plain"\nisolation = "degraded"\n'
    return out
