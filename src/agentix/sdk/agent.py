"""The SDK for agent programs: talk to the kernel over the channel the agent inherited.

    from agentix.sdk import agent

    k = agent.connect()
    text = k.tools.file_read(path="notes.txt")["content"]
    k.send("coordinator", {"done": True})
    msg = k.recv(timeout=5)
    child = k.spawn({"name": "helper", "program": "helper.py"}, message="go")
    reply = k.think([{"role": "user", "content": "hi"}], on_text=print)   # streamed text to print
    for piece in (stream := k.think_stream([{"role": "user", "content": "hi"}])):
        ...                                                               # or iterate over it
    stream.result                                                         # the whole reply
    k.exit({"ok": True})

Every method is a system call; refusals raise the typed errors of ``agentix.sdk.errors``.
"""

from __future__ import annotations

import os
import sys

from agentix.sdk._client import Connection

TYPE_CHECKING = False  # no typing, no dataclasses: every agent imports this module
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any, NoReturn

__all__ = ["AgentKernel", "ChildExit", "Message", "ThinkStream", "connect"]


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
    __slots__ = ("agent_id", "name")
    agent_id: str
    name: str


class _Tools:
    """``k.tools.NAME(**args)`` calls tool NAME; ``k.tools.call(name, args)`` too."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def call(self, name: str, args: dict[str, Any] | None = None) -> Any:
        return self._conn.call("tool.call", {"name": name, "args": args or {}})

    def list(self) -> list[dict[str, Any]]:
        return self._conn.call("tool.list")["tools"]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        def tool(**args: Any) -> Any:
            return self.call(name, args)

        tool.__name__ = name
        return tool


class ThinkStream:
    """Iterate over the text of one streamed ``think`` as it arrives; ``result`` is the whole
    reply (the ``think`` result) once iteration ended. A refusal or provider error is raised
    from the iteration. The call runs in a helper thread."""

    _END = object()

    def __init__(self, k: AgentKernel, params: dict[str, Any]) -> None:
        import queue  # only when streaming: every agent imports this module
        import threading

        self._q: queue.Queue[Any] = queue.Queue()
        self.result: dict[str, Any] | None = None
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
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.tools = _Tools(conn)
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

    def call(self, method: str, **params: Any) -> Any:
        return self.conn.call(method, params)

    def think(self, messages: list[dict[str, Any]], *, on_text: Callable[[str], Any] | None = None,
              **params: Any) -> dict[str, Any]:
        """The ``think`` system call. With ``on_text``, the reply is streamed: ``on_text`` gets
        each piece of text as the model produces it (in the thread reading the channel: it
        must not make system calls itself), and the whole reply is returned at the end."""
        params["messages"] = messages
        if on_text is None:
            return self.conn.call("think", params)
        self._last_stream += 1
        sid = self._last_stream
        self._streams[sid] = on_text
        try:
            return self.conn.call("think", {**params, "stream": True, "stream_id": sid})
        finally:
            del self._streams[sid]

    def think_stream(self, messages: list[dict[str, Any]], **params: Any) -> ThinkStream:
        """``think``, streamed: iterate over the result for the text as it arrives."""
        return ThinkStream(self, {"messages": messages, **params})

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
