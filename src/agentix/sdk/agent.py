"""The SDK for agent programs: talk to the kernel over the channel the agent inherited.

    from agentix.sdk import agent

    k = agent.connect()
    text = k.tools.file_read("notes.txt")["content"]      # one typed method per kernel tool
    k.send("coordinator", {"done": True})
    msg = k.recv(timeout=5)                               # a Message, or None
    child = k.spawn({"name": "helper", "program": "helper.py"}, message="go")   # a Child
    done = k.wait_child(child.agent_id)                   # a ChildExit
    reply = k.think([{"role": "user", "content": "hi"}], on_text=print)   # a Reply; text streamed
    for piece in (stream := k.think_stream([{"role": "user", "content": "hi"}])):
        ...                                                               # or iterate over it
    stream.result.text                                                    # the whole Reply
    k.save_state("notes", {"seen": 3}); k.load_state("notes").value       # saved state
    k.loop_event("progress", {"stage": "reading"})                       # for the audit log
    k.exit({"ok": True})

Every method is a system call; refusals raise the typed errors of ``agentix.sdk.errors``.
Results are immutable records built from the kernel's replies (``raw`` keeps the reply
where it has more than the record names).
"""

from __future__ import annotations

import os
import sys

from agentix.sdk._client import Connection

TYPE_CHECKING = False  # no typing, no dataclasses: every agent imports this module
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any, NoReturn

    from agentix.sdk._tools import Tools

__all__ = ["LOOP_EVENTS", "AgentKernel", "Child", "ChildExit", "Message", "Reply", "StateValue",
           "ThinkStream", "ToolCall", "connect"]

#: the kinds of ``loop_event`` the kernel records (kernel/loop_events.py ``KINDS``)
LOOP_EVENTS = ("context_cut", "context_summarised", "context_summary_failed", "progress",
               "repeat_call", "skill_applied")


class _Record:
    """A small immutable record (what ``@dataclass(frozen=True)`` gives, without its
    import cost): keyword or positional fields, equality, repr, no assignment."""

    __slots__ = ()
    _defaults: dict[str, Any] = {}

    def __init__(self, *args: Any, **kw: Any) -> None:
        names = self.__slots__
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes {len(names)} fields")
        vals = dict(zip(names, args))
        for k, v in kw.items():
            if k not in names or k in vals:
                raise TypeError(f"{type(self).__name__}: bad or repeated field {k!r}")
            vals[k] = v
        for k in names:
            if k not in vals:
                if k not in self._defaults:
                    raise TypeError(f"{type(self).__name__}: missing field {k!r}")
                vals[k] = self._defaults[k]
            object.__setattr__(self, k, vals[k])

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, k) for k in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._fields() == other._fields()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__)
        return f"{type(self).__name__}({inner})"


class Message(_Record):
    """A message received with ``recv``: ``sender`` is an agent id, or None for the operator."""

    __slots__ = ("sender", "sender_name", "body", "sent_at", "taint")
    _defaults = {"taint": ()}
    sender: str | None
    sender_name: str
    body: Any
    sent_at: float
    taint: tuple[str, ...]


class ChildExit(_Record):
    """How a child ended (``wait_child``): ``ok`` when it completed."""

    __slots__ = ("agent_id", "name", "state", "reason", "code", "result")
    agent_id: str
    name: str
    state: str
    reason: str | None
    code: int | None
    result: Any

    @property
    def ok(self) -> bool:
        return self.reason == "completed"


class Child(_Record):
    """A child agent this agent spawned (``spawn``)."""

    __slots__ = ("agent_id", "name")
    agent_id: str
    name: str


class ToolCall(_Record):
    """A tool call the model asked for in a ``think`` reply. ``arguments`` is a dict, or the
    model's raw text when that was not a JSON object."""

    __slots__ = ("id", "name", "arguments")
    id: str
    name: str
    arguments: dict[str, Any] | str


class Reply(_Record):
    """The result of ``think``: the model's text and tool calls, why it stopped, the tokens
    it used (``usage``: ``input_tokens``, ``output_tokens``, ...) and what it cost."""

    __slots__ = ("text", "tool_calls", "stop_reason", "usage", "model", "provider", "cost_usd", "raw")
    text: str
    tool_calls: tuple[ToolCall, ...]
    stop_reason: str
    usage: dict[str, int]
    model: str
    provider: str
    cost_usd: float | None
    raw: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        """The reply as the kernel sent it reads as a mapping too (``reply["usage"]``), for
        code written against the raw ``think`` result."""
        return self.raw[key]

    def get(self, key: str, default: Any = None) -> Any:
        """``raw.get``: see ``__getitem__``."""
        return self.raw.get(key, default)

    @classmethod
    def _of(cls, r: dict[str, Any]) -> Reply:
        calls = tuple(ToolCall(c["id"], c["name"], c["arguments"]) for c in r.get("tool_calls") or ())
        return cls(r.get("text") or "", calls, r.get("stop_reason", "end"), dict(r.get("usage") or {}),
                   r.get("model", ""), r.get("provider", ""), r.get("cost_usd"), r)


class StateValue(_Record):
    """A value saved with ``save_state`` (None if nothing was saved under the key), with the
    taint labels it was saved with (loading it labels this agent's context with them)."""

    __slots__ = ("value", "taint")
    value: Any
    taint: tuple[str, ...]


class ThinkStream:
    """Iterate over the text of one streamed ``think`` as it arrives; ``result`` is the whole
    reply (the ``think`` result) once iteration ended. A refusal or provider error is raised
    from the iteration. The call runs in a helper thread."""

    _END = object()

    def __init__(self, k: AgentKernel, params: dict[str, Any]) -> None:
        import queue  # only when streaming: every agent imports this module
        import threading

        self._q: queue.Queue[Any] = queue.Queue()
        self.result: Reply | None = None
        self._error: BaseException | None = None

        def run() -> None:
            try:
                self.result = k.think(on_text=self._q.put, **params)
            except BaseException as err:  # noqa: BLE001 - handed to the iterating thread
                self._error = err
            finally:
                self._q.put(self._END)

        self._thread = threading.Thread(target=run, name="think-stream", daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[str]:
        while (item := self._q.get()) is not self._END:
            yield item
        self._thread.join()
        if self._error is not None:
            raise self._error


class AgentKernel:
    """This agent's system calls (``connect`` returns the one for this process)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._tools: Tools | None = None
        self.agent_id = os.environ.get("AGENTIX_AGENT_ID", "")
        self.name = os.environ.get("AGENTIX_AGENT_NAME", "")
        self._streams: dict[int, Callable[[str], Any]] = {}
        self._last_stream = 0
        conn.on_notification = self._notification

    def _notification(self, method: str, params: dict[str, Any]) -> None:
        if method == "think.delta":
            cb = self._streams.get(params.get("stream_id"))  # type: ignore[arg-type]
            if cb is not None and isinstance(params.get("text"), str):
                cb(params["text"])

    @property
    def tools(self) -> Tools:
        """The kernel's tools as typed methods (``k.tools.file_read("a.txt")``), made from
        the kernel's tool schemas on first use (one ``tool.list`` call)."""
        if self._tools is None:
            from agentix.sdk._tools import build_tools

            self._tools = build_tools(self.conn)
        return self._tools

    def call(self, method: str, **params: Any) -> Any:
        """Any system call by name, with its raw reply (the typed methods cover the common ones)."""
        return self.conn.call(method, params)

    def think(self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None,
              model: str | None = None, max_tokens: int | None = None,
              temperature: float | None = None, stop: list[str] | str | None = None,
              tool_choice: Any = None, purpose: str | None = None,
              on_text: Callable[[str], Any] | None = None) -> Reply:
        """The ``think`` system call: one inference on ``model`` (``provider:model``; default
        the manifest's). ``tools`` in the OpenAI function shape. With ``on_text``, the reply
        is streamed: ``on_text`` gets each piece of text as the model produces it (in the
        thread reading the channel: it must not make system calls itself), and the whole
        ``Reply`` is returned at the end."""
        params: dict[str, Any] = {"messages": messages}
        for key, val in (("tools", tools), ("model", model), ("max_tokens", max_tokens),
                         ("temperature", temperature), ("stop", stop),
                         ("tool_choice", tool_choice), ("purpose", purpose)):
            if val is not None:
                params[key] = val
        if on_text is None:
            return Reply._of(self.conn.call("think", params))
        self._last_stream += 1
        sid = self._last_stream
        self._streams[sid] = on_text
        try:
            return Reply._of(self.conn.call("think", {**params, "stream": True, "stream_id": sid}))
        finally:
            del self._streams[sid]

    def think_stream(self, messages: list[dict[str, Any]], **params: Any) -> ThinkStream:
        """``think``, streamed: iterate over the result for the text as it arrives (the
        keyword arguments are ``think``'s)."""
        return ThinkStream(self, {"messages": messages, **params})

    # -- saved state, replies, loop events
    def save_state(self, key: str, value: Any) -> int:
        """Save ``value`` (JSON) under ``key`` for this agent's later runs; it keeps the taint
        labels of this agent's context. Returns the bytes stored."""
        return int(self.conn.call("agent.state_save", {"key": key, "value": value})["bytes"])

    def load_state(self, key: str) -> StateValue:
        """The value saved under ``key`` (``value`` None if none), with its taint labels."""
        r = self.conn.call("agent.state_load", {"key": key})
        return StateValue(r.get("value"), tuple(r.get("taint", ())))

    def reply(self, request_id: str, result: Any) -> bool:
        """Answer the operator's ``agent.run`` request ``request_id``; False if nobody waits."""
        return bool(self.conn.call("agent.reply", {"request_id": request_id, "result": result})["delivered"])

    def loop_event(self, kind: str, data: dict[str, Any] | None = None) -> None:
        """Record ``loop.<kind>`` in the audit log (``kind`` one of ``LOOP_EVENTS``; a kind the
        kernel does not record is refused here, before anything is sent)."""
        if kind not in LOOP_EVENTS:
            from agentix.core.errors import InvalidRequest

            raise InvalidRequest(f"loop_event kind must be one of {', '.join(LOOP_EVENTS)}, not {kind!r}",
                                 field="kind")
        self.conn.call("loop.event", {"kind": kind, "data": data or {}})

    def info(self) -> dict[str, Any]:
        return self.conn.call("sys.info")

    def send(self, to: str, message: Any) -> dict[str, Any]:
        return self.conn.call("ipc.send", {"to": to, "message": message})

    def broadcast(self, message: Any) -> dict[str, Any]:
        return self.conn.call("ipc.broadcast", {"message": message})

    def recv(self, timeout: float = 0.0) -> Message | None:
        env = self.conn.call("ipc.recv", {"timeout": timeout})["message"]
        if env is None:
            return None
        return Message(env["from"], env["from_name"], env["message"], env["sent_at"], tuple(env.get("taint", ())))

    def spawn(self, manifest: dict[str, Any], message: Any = None) -> Child:
        r = self.conn.call("agent.spawn_child", {"manifest": manifest, "message": message})
        return Child(r["agent_id"], r["name"])

    def wait_child(self, agent_id: str, timeout: float | None = None) -> ChildExit:
        r = self.conn.call("agent.wait_child", {"agent_id": agent_id, "timeout": timeout})
        ex = r.get("exit") or {}
        return ChildExit(r["agent_id"], r["name"], r["state"], ex.get("reason"), ex.get("code"), r.get("result"))

    def exit(self, result: Any = None, code: int = 0) -> NoReturn:
        """Report ``result`` to the kernel and end the process.

        Mapping keys become strings as JSON has them (``{1: "a"}`` is reported as ``{"1": "a"}``)."""
        self.conn.call("sys.exit", {"result": _json_keys(result)})
        self.conn.close()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _json_keys(value: Any) -> Any:
    """``value`` with every mapping key a string, as ``json.dumps`` makes them."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                if k is None or isinstance(k, (bool, int, float)):
                    k = {None: "null", True: "true", False: "false"}.get(k, repr(k)) \
                        if k is None or isinstance(k, bool) else repr(k)
                else:
                    raise TypeError(f"result keys must be str, int, float, bool or None, "
                                    f"not {type(k).__name__}")
            out[k] = _json_keys(v)
        return out
    if isinstance(value, (list, tuple)):
        return [_json_keys(v) for v in value]
    return value


_default: AgentKernel | None = None


def connect() -> AgentKernel:
    """The connection to the kernel this process inherited (one per process)."""
    global _default
    if _default is None:
        fd = os.environ.get("AGENTIX_FD")
        if fd is None:
            raise RuntimeError("not running as an agentix agent (AGENTIX_FD is not set)")
        _default = AgentKernel(Connection.from_fd(int(fd)))
    return _default
