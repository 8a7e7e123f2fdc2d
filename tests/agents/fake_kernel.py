"""An in-process stand-in for the kernel's system-call interface — on its way out.

Still used by tests/agents/test_context_window.py (a provider whose token counts follow the
request, which the scripted provider cannot play) and tests/agents/test_orchestrator.py;
the loop's own tests run against the real kernel (tests/agents/loop_world.py) and these two
should follow. Its replies use the kernel's shapes and stop reasons (``tool_calls``, ``end``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from agentix.core.errors import AgentixError, NotFound


def reply(text: str | None = None, calls: list[tuple[str, dict | str]] | None = None,
          stop: str | None = None, usage: tuple[int, int] = (10, 5)) -> dict[str, Any]:
    tcs = [{"id": f"call_{i}_{name}", "name": name, "arguments": args} for i, (name, args) in enumerate(calls or [])]
    return {"text": text, "tool_calls": tcs, "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
            "stop_reason": stop or ("tool_calls" if tcs else "end"), "model": "fake", "provider": "fake",
            "scripted": True}


class FakeKernel:
    def __init__(self, think: Callable[[dict[str, Any]], dict[str, Any]] | list[dict[str, Any]],
                 tools: dict[str, Callable[[dict[str, Any]], Any]] | None = None) -> None:
        self._script = think
        self.tools = tools or {"echo": lambda a: {"echo": a.get("message")}}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.thinks: list[dict[str, Any]] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.children: dict[str, dict[str, Any]] = {}
        self.child_behaviour: Callable[[dict[str, Any], str, int], tuple[float, str, Any]] = (
            lambda manifest, message, attempt: (0.0, "completed", {"stop_reason": "complete", "text": "ok"}))
        self.live = 0
        self.max_live = 0
        self.spawned: list[tuple[str, str]] = []   # (name, message)
        self.mailbox: list[dict[str, Any]] = []
        self.events_fail = False
        self._lock = threading.Lock()
        self._n = 0

    def call(self, method: str, **params: Any) -> Any:
        with self._lock:
            self.calls.append((method, params))
        return getattr(self, "_" + method.replace(".", "_"))(params)

    # ------------------------------------------------------------------ sys.info
    def _sys_info(self, p: dict[str, Any]) -> dict[str, Any]:
        # what the loop asks before spawning an LLM child (its own model grants to pass on)
        return {"grants": ["model: scripted:*"]}

    # ------------------------------------------------------------------ think
    def _think(self, p: dict[str, Any]) -> dict[str, Any]:
        snapshot = {**p, "messages": [dict(m) for m in p["messages"]]}
        self.thinks.append(snapshot)
        if callable(self._script):
            out = self._script(snapshot)
        else:
            out = self._script.pop(0)
        if isinstance(out, AgentixError):
            raise out
        return out

    # ------------------------------------------------------------------ tools
    def _tool_call(self, p: dict[str, Any]) -> Any:
        fn = self.tools.get(p["name"])
        if fn is None:
            raise NotFound(f"no tool named {p['name']!r}", tool=p["name"])
        out = fn(p["args"])
        if isinstance(out, AgentixError):
            raise out
        return out

    def _loop_event(self, p: dict[str, Any]) -> dict[str, Any]:
        if self.events_fail:
            from agentix.core.errors import MethodNotFound
            raise MethodNotFound("loop.event is not wired")
        self.events.append((p["kind"], p["data"]))
        return {"ok": True}

    # ------------------------------------------------------------------ agents
    def _agent_spawn_child(self, p: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._n += 1
            aid = f"agent-{self._n}"
            name = p["manifest"]["name"]
            attempt = sum(1 for n, _ in self.spawned if n == name) + 1
            self.spawned.append((name, p["message"]))
            self.live += 1
            self.max_live = max(self.max_live, self.live)
        self.children[aid] = {"manifest": p["manifest"], "message": p["message"], "attempt": attempt}
        return {"agent_id": aid, "name": name, "pid": 0}

    def _agent_wait_child(self, p: dict[str, Any]) -> dict[str, Any]:
        ch = self.children[p["agent_id"]]
        delay, reason, result = self.child_behaviour(ch["manifest"], ch["message"], ch["attempt"])
        time.sleep(delay)
        with self._lock:
            self.live -= 1
        return {"agent_id": p["agent_id"], "name": ch["manifest"]["name"], "state": "exited",
                "exit": {"reason": reason, "code": 0 if reason == "completed" else 1}, "result": result}

    # ------------------------------------------------------------------ ipc
    def _ipc_send(self, p: dict[str, Any]) -> dict[str, Any]:
        if p["to"] != "peer":
            raise NotFound(f"no live agent {p['to']!r}")
        return {"delivered": True}

    def _ipc_recv(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"message": self.mailbox.pop(0) if self.mailbox else None}
