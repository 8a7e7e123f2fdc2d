"""The operator SDK: drive a running kernel over its Unix socket.

    from agentix.sdk import Kernel

    k = Kernel()                                # $AGENTIX_HOME/agentixd.sock
    a = k.spawn(program="worker.py", name="w")   # or manifest=..., manifest_path=...
    print(k.wait(a.agent_id).exit)
"""

from __future__ import annotations

import os

from agentix.sdk._client import Connection
from agentix.core.errors import KernelNotRunning

TYPE_CHECKING = False  # no typing, dataclasses or pathlib at import: `agentix info` starts fast
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

__all__ = ["AgentInfo", "Kernel", "SpawnResult", "default_home"]


def default_home() -> Path:
    from pathlib import Path

    env = os.environ.get("AGENTIX_HOME")
    return Path(env).expanduser() if env else Path.home() / ".agentix"


class _Record:
    """An immutable record with positional fields (a frozen dataclass without the import)."""

    __slots__: tuple[str, ...] = ()

    def __init__(self, *values: Any) -> None:
        if len(values) != len(self.__slots__):
            raise TypeError(f"{type(self).__name__} takes {len(self.__slots__)} fields")
        for k, v in zip(self.__slots__, values):
            object.__setattr__(self, k, v)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.to_dict() == other.to_dict()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, k) for k in self.__slots__ if k != "raw"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(
            f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


class SpawnResult(_Record):
    __slots__ = ("agent_id", "name", "pid", "isolation")
    agent_id: str
    name: str
    pid: int | None
    isolation: dict[str, Any]


class AgentInfo(_Record):
    """A snapshot of an agent's record (``raw`` holds every field the kernel returned)."""

    __slots__ = ("agent_id", "name", "state", "parent", "pid", "exit", "result", "raw")
    agent_id: str
    name: str
    state: str
    parent: str | None
    pid: int | None
    exit: dict[str, Any] | None
    result: Any
    raw: dict[str, Any]

    @classmethod
    def of(cls, d: dict[str, Any]) -> AgentInfo:
        return cls(d["agent_id"], d["name"], d["state"], d.get("parent"), d.get("pid"),
                   d.get("exit"), d.get("result"), d)

    @property
    def reason(self) -> str | None:
        return self.exit["reason"] if self.exit else None


class Kernel:
    def __init__(self, home: str | Path | None = None, *, socket_path: str | Path | None = None,
                 connect_timeout: float = 5.0) -> None:
        env = os.environ.get("AGENTIX_HOME")
        self._home = os.path.expanduser(str(home) if home else env or "~/.agentix")
        self._socket = str(socket_path) if socket_path else os.path.join(self._home, "agentixd.sock")
        try:
            self.conn = Connection.unix(self._socket, timeout=connect_timeout)
        except (FileNotFoundError, ConnectionRefusedError) as err:
            raise KernelNotRunning(
                f"no kernel is running at {self.socket_path} ({err.strerror}); start one with `agentix up`",
                socket=str(self.socket_path)) from None

    @property
    def home(self) -> Path:
        from pathlib import Path

        return Path(self._home)

    @property
    def socket_path(self) -> Path:
        from pathlib import Path

        return Path(self._socket)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, **params: Any) -> Any:
        return self.conn.call(method, params)

    def bind(self, face: str, *, read_only: bool = False) -> dict[str, Any]:
        """Name this connection's face (its state-changing calls are audited ``by: FACE``) and,
        with ``read_only``, refuse it every state-changing method. Once per connection; the
        reply's ``methods`` maps each method it may still call to ``effect``/``no_effect``."""
        return self.conn.call("session.bind", {"face": face, "read_only": read_only})

    # -- capabilities and approvals (operator)
    def caps(self, agent_id: str | None = None) -> list[dict[str, Any]]:
        """Tokens held (by one agent, or by every agent)."""
        return self.conn.call("cap.list", {"agent_id": agent_id} if agent_id else {})["tokens"]

    def grant(self, agent_id: str, grants: list[str], *, max_invocations: int | None = None,
              expires: str | float | None = None) -> dict[str, Any]:
        """Mint a new root token for a live agent (the operator may grant anything)."""
        return self.conn.call("cap.grant", {"agent_id": agent_id, "grants": grants,
                                            "max_invocations": max_invocations, "expires": expires})

    def revoke(self, token_id: str) -> dict[str, Any]:
        """Revoke a token and every token derived from it."""
        return self.conn.call("cap.revoke", {"token_id": token_id})

    def check(self, agent_id: str, name: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """Would this tool call be allowed for that agent? (charges nothing)"""
        return self.conn.call("cap.check", {"agent_id": agent_id, "name": name, "args": args or {}})

    def approvals(self, *, all: bool = False) -> list[dict[str, Any]]:
        return self.conn.call("approval.list", {"all": all})["approvals"]

    def approve(self, approval_id: str, reason: str | None = None) -> dict[str, Any]:
        return self.conn.call("approval.respond", {"id": approval_id, "approve": True, "reason": reason})

    def deny(self, approval_id: str, reason: str | None = None) -> dict[str, Any]:
        return self.conn.call("approval.respond", {"id": approval_id, "approve": False, "reason": reason})

    # -- kernel
    def info(self) -> dict[str, Any]:
        return self.conn.call("kernel.info")

    def shutdown(self) -> dict[str, Any]:
        return self.conn.call("kernel.shutdown")

    # -- agents
    def spawn(self, manifest: dict[str, Any] | None = None, *, manifest_path: str | Path | None = None,
              program: str | Path | None = None, name: str | None = None, message: Any = None,
              base_dir: str | Path | None = None, **fields: Any) -> SpawnResult:
        """Spawn from a manifest dict, a manifest file, or just a program file.

        Relative ``program`` paths are resolved against ``base_dir`` (default: the
        manifest file's directory, or the current directory).
        """
        from pathlib import Path

        params: dict[str, Any] = {"message": message}
        from_file = manifest_path is not None
        if manifest_path is not None:
            # read here, with the caller's own permissions; the kernel never reads it for us
            mp = Path(manifest_path).expanduser().resolve()
            data = _read_manifest_file(mp)
            if not isinstance(data, dict):
                from agentix.core.manifest import parse_manifest

                parse_manifest(data)  # raises the usual "must be a mapping" error
            manifest, base_dir = data, base_dir or mp.parent
        m = dict(manifest or {})
        m.update(fields)
        if program is not None:
            m["program"] = str(program)
            m.setdefault("name", _name_from(Path(str(program))))
        if not from_file:
            m.setdefault("name", name or "agent")
        prog = m.get("program")
        if isinstance(prog, str) and not prog.startswith("module:") and not os.path.isabs(prog):
            m["program"] = str((Path(base_dir) if base_dir else Path.cwd()).resolve() / prog)
        params["manifest"] = m
        if name is not None:
            params["name"] = name
        r = self.conn.call("agent.spawn", params)
        return SpawnResult(r["agent_id"], r["name"], r.get("pid"), r.get("isolation", {}))

    def list(self, *, all: bool = True) -> list[AgentInfo]:
        return [AgentInfo.of(a) for a in self.conn.call("agent.list", {"all": all})["agents"]]

    def status(self, agent: str) -> AgentInfo:
        return AgentInfo.of(self.conn.call("agent.status", {"agent_id": agent}))

    def wait(self, agent: str, timeout: float | None = None) -> AgentInfo:
        return AgentInfo.of(self.conn.call("agent.wait", {"agent_id": agent, "timeout": timeout}))

    def stop(self, agent: str, grace: float | None = None) -> AgentInfo:
        return AgentInfo.of(self.conn.call("agent.stop", {"agent_id": agent, "grace": grace}))

    def kill(self, agent: str) -> AgentInfo:
        return AgentInfo.of(self.conn.call("agent.kill", {"agent_id": agent}))

    def pause(self, agent: str) -> AgentInfo:
        return AgentInfo.of(self.conn.call("agent.pause", {"agent_id": agent}))

    def resume(self, agent: str) -> AgentInfo:
        return AgentInfo.of(self.conn.call("agent.resume", {"agent_id": agent}))

    def logs(self, agent: str, offset: int = 0, wait: float = 0) -> tuple[str, int, bool]:
        r = self.conn.call("agent.logs", {"agent_id": agent, "offset": offset, "wait": wait})
        return r["data"], r["offset"], r["live"]

    def send(self, to: str, message: Any) -> dict[str, Any]:
        return self.conn.call("agent.send", {"to": to, "message": message})

    def run_agent(self, agent: str, message: Any, timeout: float | None = None) -> dict[str, Any]:
        """Deliver work to a persistent agent and wait for its answer (``agent.run``)."""
        params: dict[str, Any] = {"agent_id": agent, "message": message}
        if timeout is not None:
            params["timeout"] = timeout
        return self.conn.call("agent.run", params)

    # -- goals and inference
    def submit_goal(self, goal: str, *, output: str | Path | None = None,
                    manifest: dict[str, Any] | None = None) -> dict[str, Any]:
        """Start the goal orchestrator (``agent.submit_goal``); ``output`` gets its ``output/``."""
        from pathlib import Path

        params: dict[str, Any] = {"goal": goal}
        if output is not None:
            params["output"] = str(Path(output).expanduser().resolve())
        if manifest is not None:
            params["manifest"] = manifest
        return self.conn.call("agent.submit_goal", params)

    def inference_stats(self) -> dict[str, Any]:
        """The scheduler's snapshot per provider: queue, shares, waits, tokens/s."""
        return self.conn.call("inference.stats")

    # -- tools and events
    def tools(self) -> list[dict[str, Any]]:
        return self.conn.call("tool.list")["tools"]

    def invoke(self, tool: str, args: dict[str, Any] | None = None, *, agent: str | None = None) -> Any:
        return self.conn.call("tool.invoke", {"name": tool, "args": args or {}, "agent_id": agent})

    def events(self, after: int = 0, *, agent: str | None = None, kind: str | None = None,
               limit: int = 1000, wait: float = 0) -> list[dict[str, Any]]:
        return self.conn.call("events.tail", {"after": after, "agent": agent, "kind": kind,
                                              "limit": limit, "wait": wait})["events"]

    # -- the audit log (docs/audit.md)
    def audit_tail(self, after: int = 0, *, agent: str | None = None, kind: str | None = None,
                   limit: int = 100, wait: float = 0) -> list[dict[str, Any]]:
        return self.conn.call("audit.tail", {"after": after, "agent": agent, "kind": kind,
                                             "limit": limit, "wait": wait})["entries"]

    def audit_verify(self) -> dict[str, Any]:
        return self.conn.call("audit.verify")

    def audit_prove(self, seq: int) -> dict[str, Any]:
        return self.conn.call("audit.prove", {"seq": seq})

    def audit_head(self, sign: bool = True) -> dict[str, Any]:
        return self.conn.call("audit.head", {"sign": sign})


def _name_from(path: Path) -> str:
    import re

    stem = path.stem if path.suffix == ".py" else path.name
    name = re.sub(r"[^a-z0-9_.-]+", "-", stem.lower()).strip("-._") or "agent"
    return name[:63]


def _read_manifest_file(path: Path) -> Any:
    """Decoded YAML/JSON of a manifest file: a regular file, opened without blocking, bounded."""
    import stat

    from agentix.core.errors import InvalidRequest
    from agentix.core.manifest import MAX_MANIFEST_TEXT, decode_manifest_text

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise InvalidRequest(f"cannot read manifest {path}: {err.strerror}", field="manifest_path") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidRequest(f"cannot read manifest {path}: not a regular file", field="manifest_path")
        data = os.read(fd, MAX_MANIFEST_TEXT + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_MANIFEST_TEXT:
        raise InvalidRequest(f"manifest {path} is larger than {MAX_MANIFEST_TEXT} bytes", field="manifest_path")
    return decode_manifest_text(data.decode("utf-8", errors="replace"))
