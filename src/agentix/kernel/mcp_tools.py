"""MCP servers as agent tools: declared by the operator, run sandboxed, called as kernel tools.

The operator declares servers in ``$AGENTIX_HOME/config.toml``::

    [mcp.servers.notes]                       # a local stdio server (the name: a-z, 0-9, -)
    command = ["/usr/bin/python3", "/opt/notes/server.py"]
    read_only_paths = ["/opt/notes"]          # bound read-only into its sandbox
    env = { NOTES_DIR = "/workspace" }        # set inside the sandbox, after confinement
    network = false                           # true: the server's sandbox keeps the host network
    limits = { memory = "256M", pids = 32 }   # the agent limits' syntax; the kernel's defaults fill in
    approve = "first_use"                     # or "operator": every tool waits for `agentix mcp approve`
    call_timeout = 30                         # seconds one tool call may take
    max_message_bytes = 1048576               # the largest message the server may send
    max_notifications_per_s = 100             # more is a flood: the server is stopped
    max_concurrent = 8                        # calls in flight at once
    max_restarts = 5                          # crashes in a row before the server is left failed
    read_only_tools = ["search*"]             # the operator's word that these only read: their
                                              # audit records are committed asynchronously (no_effect)

    [mcp.servers.search]                      # a remote server (streamable HTTP), called by the kernel
    url = "https://mcp.example.com/mcp"

Rules:

- A stdio server runs as an agentix process: the kernel's sandbox substrate (the same as an
  agent's: namespaces, Landlock, seccomp, cgroups, rlimits, no network unless declared), its own
  workspace ``workspaces/mcp-NAME``, its stderr to ``logs/mcp-NAME.log``. Its stdin and stdout are
  the kernel's end of a socketpair; it never runs on the host unconfined (the plain backend only
  with ``isolation = "degraded"``, as for agents). Started on first use (a call, or ``mcp.tools``);
  a server that exits, or that breaks the protocol, is stopped and restarted on the next use
  after a backoff (0.5 s, doubling, at most 30 s); after ``max_restarts`` crashes in a row it is
  ``failed`` until ``agentix mcp restart NAME``.
- Agents call its tools as kernel tools named ``mcp__SERVER__TOOL`` through ``tool.call``: the one
  decision needs ``mcp: SERVER/TOOL`` (core/grants.py); each call is charged, audited
  (``tool.invoked``/``tool.result``) and its result (and any error carrying the server's text)
  taints the caller's context ``external_tool:mcp:SERVER/TOOL``.
- Pinning (core/mcp.py): a tool may be called only while its description and input schema hash
  to what was approved; a changed tool is disabled (``capability_denied``, reason
  ``mcp_tool_changed``) until ``agentix mcp approve SERVER/TOOL``. Pins live in the store
  (``mcp_pins``, schema v7). Descriptions are offered to models only wrapped as untrusted.
- Bad servers: a line that is not JSON-RPC, a message over ``max_message_bytes``, more than
  ``max_notifications_per_s`` notifications in a second, or an exit stop the server; calls in
  flight get ``tool_error`` naming what happened. A call not answered within ``call_timeout``
  gets ``timeout`` (the server keeps running; ``max_concurrent`` bounds what it can hold).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentix.core.errors import (
    AgentixError,
    CapabilityDenied,
    InvalidRequest,
    LimitExceeded,
    NotFound,
    Timeout,
    ToolError,
)
from agentix.core.grants import MCP_SERVER_RE, MCP_TOOL_PREFIX, MCP_TOOL_RE, mcp_tool_name
from agentix.core.manifest import Limits
from agentix.core.mcp import Pin, pin_state, tool_digest, untrusted_description
from agentix.sandbox.base import Handle, LaunchSpec
from agentix.tools.base import ToolContext, ToolSpec

if TYPE_CHECKING:
    from agentix.kernel.dispatch import Call
    from agentix.kernel.ports import KernelServices as Kernel

__all__ = ["McpServerConfig", "McpTools", "load_mcp_config", "register"]

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
#: a call waits out a restart backoff up to this long; a longer one is refused at once
BACKOFF_WAIT_MAX = 5.0
RESULT_TEXT_MAX = 64 * 1024   # what an audit/outcome summary keeps of a result (the result itself is whole)
#: a listing is bounded as a whole, not only page by page: every agent's ``tool.list`` carries
#: every approved tool, so a server listing without end would wedge them all
MAX_TOOLS = 512
#: the canonical JSON of one tool's description and input schema; a bigger tool is skipped
MAX_TOOL_BYTES = 64 * 1024


class McpServerConfig(BaseModel):
    """One ``[mcp.servers.NAME]`` table (validated when the kernel starts)."""

    model_config = ConfigDict(extra="forbid")

    command: list[str] | None = Field(default=None, min_length=1)
    url: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    read_only_paths: list[str] = Field(default_factory=list)
    network: bool = False
    limits: Limits = Field(default_factory=Limits)
    approve: Literal["first_use", "operator"] = "first_use"
    call_timeout: float = Field(default=30.0, gt=0, le=3600)
    start_timeout: float = Field(default=20.0, gt=0, le=600)
    max_message_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024**2)
    max_notifications_per_s: int = Field(default=100, ge=1, le=100_000)
    max_concurrent: int = Field(default=8, ge=1, le=1024)
    max_restarts: int = Field(default=5, ge=0, le=1000)
    #: tools the operator knows only read (names, a trailing ``*`` allowed): their audit records
    #: are committed asynchronously (``no_effect``); every other tool is an ``effect``, whose
    #: intent record is durable before the server gets the call (docs/audit.md)
    read_only_tools: list[str] = Field(default_factory=list)

    def durability(self, tool: str) -> Literal["effect", "no_effect"]:
        for p in self.read_only_tools:
            if tool == p or (p.endswith("*") and tool.startswith(p[:-1])):
                return "no_effect"
        return "effect"

    def model_post_init(self, _ctx: Any) -> None:
        if (self.command is None) == (self.url is None):
            raise ValueError("give exactly one of command (a local stdio server) or url (a remote one)")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError("url must be http:// or https://")
        for p in self.read_only_paths:
            if not os.path.isabs(p):
                raise ValueError(f"read_only_paths: {p!r} is not an absolute path")

    @property
    def kind(self) -> str:
        return "stdio" if self.command is not None else "http"


def load_mcp_config(home: Path) -> dict[str, McpServerConfig]:
    """The ``[mcp.servers.*]`` tables of config.toml; a bad one stops the kernel at start."""
    path = home / "config.toml"
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text()).get("mcp", {})
    except tomllib.TOMLDecodeError as err:
        raise InvalidRequest(f"{path}: not valid TOML: {err}", field="config.toml") from None
    servers = data.get("servers", {}) if isinstance(data, dict) else None
    if not isinstance(servers, dict) or set(data) - {"servers"}:
        raise InvalidRequest(f"{path}: [mcp] holds only [mcp.servers.NAME] tables", field="mcp")
    out: dict[str, McpServerConfig] = {}
    for name, raw in servers.items():
        if not MCP_SERVER_RE.match(name):
            raise InvalidRequest(f"{path}: [mcp.servers.{name}]: a server name is 1-63 lowercase letters, "
                                 "digits and '-' (it becomes part of tool names)", field=f"mcp.servers.{name}")
        if not isinstance(raw, dict):
            raise InvalidRequest(f"{path}: [mcp.servers.{name}] must be a table", field=f"mcp.servers.{name}")
        try:
            out[name] = McpServerConfig(**raw)
        except ValidationError as err:
            e = err.errors()[0]
            key = ".".join(str(x) for x in e["loc"])
            where = f"mcp.servers.{name}" + (f".{key}" if key else "")
            raise InvalidRequest(f"{path}: [{where}] {e['msg']}", field=where) from None
    return out


# ---------------------------------------------------------------------------- the transport
class _Fatal(Exception):
    """The server broke the protocol or its bounds; the session ends with this reason."""


class SocketTransport:
    """MCP's stdio framing (one JSON-RPC message per line) over the kernel's end of the
    socketpair that is the sandboxed server's stdin and stdout, with the bounds the server
    must keep. Parsing is the ``mcp`` package's; only the framing and the bounds are here."""

    def __init__(self, sock: socket.socket, cfg: McpServerConfig, on_fatal: Callable[[str], None],
                 on_eof: Callable[[], None]) -> None:
        self.sock = sock
        self.cfg = cfg
        self.on_fatal = on_fatal
        self.on_eof = on_eof
        self.notifications = 0

    @contextlib.asynccontextmanager
    async def _open(self) -> AsyncIterator[Any]:
        import anyio
        import mcp_types as types
        from mcp.shared.message import SessionMessage

        loop = asyncio.get_running_loop()
        self.sock.setblocking(False)
        r_send, r_recv = anyio.create_memory_object_stream[Any](32)
        w_send, w_recv = anyio.create_memory_object_stream[Any](32)
        cap = self.cfg.max_message_bytes
        flood = self.cfg.max_notifications_per_s

        async def reader() -> None:
            buf = bytearray()
            window, count = time.monotonic(), 0
            try:
                async with r_send:
                    while True:
                        chunk = await loop.sock_recv(self.sock, 65536)
                        if not chunk:
                            self.on_eof()
                            return
                        buf += chunk
                        while True:
                            nl = buf.find(b"\n")
                            if nl < 0:
                                if len(buf) > cap:
                                    raise _Fatal(f"sent a message of more than {cap} bytes "
                                                 "(max_message_bytes)")
                                break
                            line = bytes(buf[:nl])
                            del buf[:nl + 1]
                            if len(line) > cap:
                                raise _Fatal(f"sent a message of {len(line)} bytes, more than {cap} "
                                             "(max_message_bytes)")
                            if not line.strip():
                                continue
                            try:
                                msg = types.jsonrpc_message_adapter.validate_json(line, by_name=False)
                            except ValueError:
                                raise _Fatal("sent a line that is not a JSON-RPC message: "
                                             f"{line[:80]!r}") from None
                            if isinstance(msg, types.JSONRPCNotification):
                                now = time.monotonic()
                                if now - window >= 1.0:
                                    window, count = now, 0
                                count += 1
                                self.notifications += 1
                                if count > flood:
                                    raise _Fatal(f"sent more than {flood} notifications in a second "
                                                 "(max_notifications_per_s)")
                            await r_send.send(SessionMessage(msg))
            except _Fatal as err:
                self.on_fatal(str(err))
            except (OSError, anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass

        async def writer() -> None:
            try:
                async with w_recv:
                    async for m in w_recv:
                        data = m.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n"
                        await loop.sock_sendall(self.sock, data.encode())
            except (OSError, anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            tg.start_soon(writer)
            try:
                yield r_recv, w_send
            finally:
                tg.cancel_scope.cancel()
                for s in (r_send, r_recv, w_send, w_recv):
                    s.close()

    def __call__(self) -> Any:
        return self._open()


# ---------------------------------------------------------------------------- one server
@dataclass
class ListedTool:
    name: str
    description: str | None
    input_schema: dict[str, Any]
    digest: str


@dataclass
class McpServer:
    """One declared server: its process (when running), its session, its last listing."""

    name: str
    cfg: McpServerConfig
    k: Kernel
    state: Literal["stopped", "starting", "running", "backoff", "failed"] = "stopped"
    tools: dict[str, ListedTool] = field(default_factory=dict)
    last_error: str | None = None
    crashes: int = 0
    starts: int = 0
    next_start_at: float = 0.0
    pid: int | None = None
    client: Any = None
    handle: Handle | None = None
    in_flight: int = 0
    _dead: asyncio.Event = field(default_factory=asyncio.Event)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _runner: asyncio.Task[None] | None = None
    _reaper: asyncio.Task[None] | None = None
    _sock: socket.socket | None = None

    # -- lifecycle --------------------------------------------------------------------
    async def ensure(self) -> None:
        """Running, or started now (first use / after a crash's backoff); else a clear error."""
        if self.state == "running":
            return
        async with self._lock:
            if self.state == "running":
                return
            if self.state == "failed":
                raise ToolError(f"MCP server {self.name} failed {self.crashes} times in a row "
                                f"(last: {self.last_error}); fix it, then `agentix mcp restart {self.name}`",
                                reason="mcp_server_failed", server=self.name, last_error=self.last_error)
            wait = self.next_start_at - time.monotonic()
            if wait > BACKOFF_WAIT_MAX:
                raise ToolError(f"MCP server {self.name} stopped ({self.last_error}); it restarts in "
                                f"{wait:.1f} s: retry then", reason="mcp_server_restarting",
                                server=self.name, retry_after=round(wait, 3))
            if wait > 0:
                await asyncio.sleep(wait)
            await self._start()

    async def _start(self) -> None:
        self.state = "starting"
        self.starts += 1
        self._dead = asyncio.Event()
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            transport = await (self._spawn() if self.cfg.command is not None else self._remote())
            self._runner = asyncio.create_task(self._run(transport, ready, self._dead))
            died = asyncio.ensure_future(self._dead.wait())
            try:
                done, _ = await asyncio.wait({ready, died}, timeout=self.cfg.start_timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                died.cancel()
            if ready not in done:
                reason = self.last_error if self._dead.is_set() else (
                    f"did not complete the MCP handshake within {self.cfg.start_timeout:g} s")
                self._died(reason or "ended during the handshake")
                raise ToolError(f"MCP server {self.name} could not start: {reason}",
                                reason="mcp_server_start", server=self.name)
            ready.result()
            await self._list()
        except AgentixError:
            if self.state in ("starting", "running"):
                self._died(self.last_error or "could not start")
            raise
        except Exception as err:  # noqa: BLE001 - the server's fault, said plainly
            # a bound it broke ended the session first: that is the reason, not the closed stream
            why = self.last_error if self._dead.is_set() and self.last_error else f"handshake failed: {err}"
            self._died(why)
            raise ToolError(f"MCP server {self.name} could not start: {why}", reason="mcp_server_start",
                            server=self.name) from None
        self.state = "running"
        await self.k.events.record("mcp.server_started", None, {
            "server": self.name, "pid": self.pid, "tools": sorted(self.tools), "starts": self.starts,
            "isolation": ({"layers": self.handle.layers, "missing": self.handle.missing_layers}
                          if self.handle is not None else None)})

    async def _spawn(self) -> Any:
        k, cfg = self.k, self.cfg
        assert cfg.command is not None
        ws = k.home.workspaces / f"mcp-{self.name}"
        ws.mkdir(parents=True, exist_ok=True)
        ksock, ssock = socket.socketpair()
        os.set_inheritable(ssock.fileno(), True)
        fd = ssock.fileno()
        # the server's stdin and stdout become the socket once every layer holds (confine)
        argv = [sys.executable, "-I", "-B", "-m", "agentix.sandbox.confine", "--stdio", str(fd), "--",
                *cfg.command]
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/workspace",
               **cfg.env}
        # its stderr: a pipe the kernel reads into a log kept at log_max_bytes, never a kernel
        # file the server could grow without bound (an agent's output is read the same way)
        from agentix.kernel.process import LogSink

        sink = LogSink(k.home.logs / f"mcp-{self.name}.log", k.config.log_max_bytes)
        sink.start()
        spec = LaunchSpec(
            agent_id=f"mcp-{self.name}-{self.starts}", name=f"mcp-{self.name}", argv=argv, workspace=ws,
            env=env, channel_fd=fd, log_path=sink.path, output_fd=sink.write_fd,
            limits=k.config.effective_limits(cfg.limits), network=cfg.network,
            degraded_ok=k.config.isolation == "degraded",
            extra_ro_paths=tuple(Path(p) for p in cfg.read_only_paths))
        try:
            handle = await k.substrate.spawn(spec)
        except BaseException:
            ksock.close()
            sink.close()
            raise
        finally:
            ssock.close()
            sink.close_write_end()
        self.handle, self.pid, self._sock = handle, handle.pid, ksock
        dead = self._dead
        self._reaper = asyncio.create_task(self._reap(handle, dead, sink))

        def eof() -> None:  # give the reaper a moment to name the exit; else the close is the reason
            asyncio.get_running_loop().call_later(1.0, self._died, "closed its connection to the kernel", dead)

        return SocketTransport(ksock, cfg, lambda why: self._died(why, dead), eof)()

    async def _remote(self) -> Any:
        """The remote server under the same bound as a local one: a JSON response over
        ``max_message_bytes`` is cut off (the SDK reads one whole into memory), as is one SSE
        event (``max_sse_event_size``)."""
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        self.handle, self.pid = None, None
        client = create_mcp_http_client()
        client._transport = _BoundedHttp(client._transport, self.cfg.max_message_bytes,
                                         lambda why: self._died(why))
        return _owning(client, streamable_http_client(self.cfg.url, http_client=client,
                                                      max_sse_event_size=self.cfg.max_message_bytes))

    async def _run(self, transport: Any, ready: asyncio.Future[None], dead: asyncio.Event) -> None:
        from mcp import Client

        try:
            async with Client(transport, read_timeout_seconds=self.cfg.call_timeout) as client:
                self.client = client
                if not ready.done():
                    ready.set_result(None)
                await dead.wait()
        except BaseException as err:  # noqa: BLE001 - ends the session, reported to the callers
            if not isinstance(err, asyncio.CancelledError):
                self._died(f"session ended: {_describe(err)}", dead)
            if not ready.done():
                ready.set_exception(ToolError(f"MCP server {self.name}: {self.last_error}",
                                              reason="mcp_server_start", server=self.name))
        finally:
            if self._dead is dead:  # a later session's client is not this one's to clear
                self.client = None

    async def _reap(self, handle: Handle, dead: asyncio.Event, sink: Any = None) -> None:
        info = await handle.wait()
        if sink is not None:
            await sink.drained(timeout=2.0)
            sink.close()
        if not dead.is_set():
            what = ("was killed by its memory limit (oom)" if info.oom else
                    f"was killed by signal {info.signal}" if info.signal else f"exited with status {info.code}")
            self._died(what, dead)
        await handle.cleanup()
        await self.k.events.record("mcp.server_exited", None, {
            "server": self.name, "pid": handle.pid, "code": info.code, "signal": info.signal,
            "oom": info.oom, "reason": self.last_error})

    def _died(self, reason: str, dead: asyncio.Event | None = None) -> None:
        """End the session now: stop the process, fail the calls in flight, plan a restart.
        ``dead`` names the session the news is about: news of an older one changes nothing."""
        if self._dead.is_set() or (dead is not None and dead is not self._dead):
            return
        self.last_error = reason
        self._dead.set()
        log.warning("MCP server %s stopped: %s", self.name, reason)
        if self.handle is not None:
            self.handle.signal(signal.SIGKILL)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self.state == "stopped":  # an operator stop, not a crash
            return
        self.crashes += 1
        if self.crashes > self.cfg.max_restarts:
            self.state = "failed"
        else:
            self.state = "backoff"
            self.next_start_at = time.monotonic() + min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self.crashes - 1))

    async def stop(self) -> None:
        self.state = "stopped"
        self._died("stopped by the kernel")
        for task in (self._runner, self._reaper):  # the session, then the process's exit record
            if task is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(asyncio.shield(task), 5.0)

    # -- listing and calling ------------------------------------------------------------
    async def _list(self) -> None:
        """The server's tools, read under ONE deadline (``start_timeout``, the same as the
        handshake's) and bounded in count (``MAX_TOOLS``) and size (``MAX_TOOL_BYTES`` each):
        a server paging slowly or without end fails its start instead of holding the callers
        (and every agent's ``tool.list``) for 64 pages of ``call_timeout``."""
        assert self.client is not None
        tools: dict[str, ListedTool] = {}
        cursor: str | None = None
        try:
            async with asyncio.timeout(self.cfg.start_timeout):
                for _ in range(64):
                    page = await self.client.list_tools(cursor=cursor)
                    for t in page.tools:
                        if not MCP_TOOL_RE.fullmatch(t.name):
                            log.warning("MCP server %s lists a tool named %r; skipped (names are letters, "
                                        "digits, '_', '.', '-')", self.name, t.name[:80])
                            continue
                        digest, size = tool_digest(t.description, t.input_schema), _tool_size(t)
                        if size > MAX_TOOL_BYTES:
                            log.warning("MCP server %s lists tool %s with %d bytes of description and "
                                        "schema (more than %d); skipped", self.name, t.name, size, MAX_TOOL_BYTES)
                            continue
                        tools[t.name] = ListedTool(t.name, t.description, t.input_schema, digest)
                        if len(tools) > MAX_TOOLS:
                            raise ToolError(f"MCP server {self.name} lists more than {MAX_TOOLS} tools",
                                            reason="mcp_server_start", server=self.name)
                    cursor = page.next_cursor
                    if cursor is None:
                        break
                else:
                    raise ToolError(f"MCP server {self.name} listed 64 pages of tools without an end",
                                    reason="mcp_server_start", server=self.name)
        except TimeoutError:
            raise ToolError(f"MCP server {self.name} did not finish listing its tools (tools/list) within "
                            f"start_timeout = {self.cfg.start_timeout:g} s", reason="mcp_server_start",
                            server=self.name) from None
        self.tools = tools

    async def call(self, tool: str, args: dict[str, Any], timeout: float) -> Any:
        await self.ensure()
        if self.in_flight >= self.cfg.max_concurrent:
            raise LimitExceeded(f"MCP server {self.name} already has {self.in_flight} calls in flight "
                                f"(max_concurrent = {self.cfg.max_concurrent}); retry when one has finished",
                                limit="max_concurrent", max=self.cfg.max_concurrent, server=self.name)
        client, dead = self.client, self._dead
        assert client is not None
        self.in_flight += 1
        task = asyncio.ensure_future(client.call_tool(tool, args, read_timeout_seconds=timeout))
        waiter = asyncio.ensure_future(dead.wait())
        try:
            done, _ = await asyncio.wait({task, waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.in_flight -= 1
            waiter.cancel()
            if not task.done():
                task.cancel()
        if task in done and not task.cancelled():
            err = task.exception()
            if err is None:
                self.crashes = 0  # a server that answers has recovered
                return task.result()
            if _closed(err):  # the connection went: wait for its reason (the exit, the bound broken)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(dead.wait(), 2.0)
            if dead.is_set():
                raise ToolError(f"MCP server {self.name} {self.last_error} during the call of {tool}",
                                reason="mcp_server_died", server=self.name, tool=tool)
            if isinstance(err, TimeoutError):
                raise Timeout(f"MCP server {self.name} did not answer {tool} within {timeout:g} s",
                              reason="timeout", server=self.name, tool=tool, timeout=timeout)
            raise ToolError(f"MCP server {self.name} refused the call of {tool}: {_describe(err)}",
                            reason="mcp_error", server=self.name, tool=tool)
        if dead.is_set():
            raise ToolError(f"MCP server {self.name} {self.last_error} during the call of {tool}",
                            reason="mcp_server_died", server=self.name, tool=tool)
        raise Timeout(f"MCP server {self.name} did not answer {tool} within {timeout:g} s",
                      reason="timeout", server=self.name, tool=tool, timeout=timeout)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.cfg.kind, "state": self.state,
                "command": self.cfg.command, "url": self.cfg.url, "network": self.cfg.network,
                "approve": self.cfg.approve, "pid": self.pid if self.state == "running" else None,
                "starts": self.starts, "crashes": self.crashes, "last_error": self.last_error,
                "tools": len(self.tools), "in_flight": self.in_flight,
                "isolation": ({"layers": self.handle.layers, "missing": self.handle.missing_layers}
                              if self.handle is not None and self.state == "running" else None)}


@contextlib.asynccontextmanager
async def _owning(client: Any, inner: Any) -> AsyncIterator[Any]:
    async with client, inner as streams:
        yield streams


def _bounded_http_transport() -> type:
    import httpx2

    class Bounded(httpx2.AsyncBaseTransport):
        """A remote MCP server's responses: a non-SSE body over ``cap`` bytes ends the session."""

        def __init__(self, inner: Any, cap: int, on_fatal: Callable[[str], None]) -> None:
            self._inner, self._cap, self._on_fatal = inner, cap, on_fatal

        async def handle_async_request(self, request: Any) -> Any:
            resp = await self._inner.handle_async_request(request)
            if "text/event-stream" in resp.headers.get("content-type", ""):
                return resp  # bounded per event by max_sse_event_size
            return httpx2.Response(resp.status_code, headers=resp.headers, extensions=resp.extensions,
                                   stream=_Capped(resp.stream, self._cap, self._on_fatal))

        async def aclose(self) -> None:
            await self._inner.aclose()

    class _Capped(httpx2.AsyncByteStream):
        def __init__(self, inner: Any, cap: int, on_fatal: Callable[[str], None]) -> None:
            self._inner, self._cap, self._on_fatal = inner, cap, on_fatal

        async def __aiter__(self) -> Any:
            seen = 0
            async for chunk in self._inner:
                seen += len(chunk)
                if seen > self._cap:
                    why = f"sent a message of more than {self._cap} bytes (max_message_bytes)"
                    self._on_fatal(why)
                    raise httpx2.ReadError(why)
                yield chunk

        async def aclose(self) -> None:
            await self._inner.aclose()

    return Bounded


def _BoundedHttp(inner: Any, cap: int, on_fatal: Callable[[str], None]) -> Any:  # noqa: N802 - a class, built lazily
    return _bounded_http_transport()(inner, cap, on_fatal)


def _tool_size(t: Any) -> int:
    from agentix.core.canonical import canonical_json

    return len(canonical_json({"description": t.description or "", "input_schema": t.input_schema}))


def _closed(err: BaseException) -> bool:
    from mcp_types import CONNECTION_CLOSED

    return getattr(getattr(err, "error", None), "code", getattr(err, "code", None)) == CONNECTION_CLOSED


def _describe(err: BaseException) -> str:
    if isinstance(err, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in err.exceptions)
    text = str(err) or type(err).__name__
    return text[:500]


# ---------------------------------------------------------------------------- the service
class PinStore:
    """The approved digests, in memory and durable in the store (``mcp_pins``)."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self.db = k.db
        self.pins: dict[tuple[str, str], Pin] = {}
        #: what each pin approved (description, input schema): offered before the server starts
        self.approved: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        if self.db is not None:
            import orjson

            for r in self.db.reader().execute(
                    "SELECT server, tool, digest, approved_by, approved_at, description, input_schema "
                    "FROM mcp_pins").fetchall():
                self.pins[(r[0], r[1])] = Pin(r[0], r[1], r[2], r[3], r[4])
                try:
                    self.approved[(r[0], r[1])] = (r[5], orjson.loads(r[6]))
                except orjson.JSONDecodeError:
                    pass

    def get(self, server: str, tool: str) -> Pin | None:
        return self.pins.get((server, tool))

    async def put(self, pin: Pin, description: str | None, schema: Any) -> None:
        if self.db is not None:
            import orjson

            def op(txn: Any) -> None:
                txn.conn.execute(
                    "INSERT OR REPLACE INTO mcp_pins VALUES (?,?,?,?,?,?,?)",
                    (pin.server, pin.tool, pin.digest, description or "", orjson.dumps(schema).decode(),
                     pin.approved_by, pin.approved_at))

            await self.db.write(op)
        self.pins[(pin.server, pin.tool)] = pin
        self.approved[(pin.server, pin.tool)] = (description or "", schema)


class McpTools:
    """The declared servers, their pins, and the ``mcp__*`` tools they provide to the registry."""

    def __init__(self, k: Kernel, servers: dict[str, McpServerConfig]) -> None:
        self.k = k
        home = os.path.realpath(k.home.root)
        for name, cfg in servers.items():
            for p in cfg.read_only_paths:
                real = os.path.realpath(p)
                if os.path.commonpath([real, home]) in (real, home):
                    raise InvalidRequest(
                        f"[mcp.servers.{name}] read_only_paths: {p} would show the server the kernel's own "
                        f"state ({home}: keys, database, secrets, workspaces); name a directory outside it",
                        field=f"mcp.servers.{name}.read_only_paths")
        self.servers = {name: McpServer(name, cfg, k) for name, cfg in servers.items()}
        self.pins = PinStore(k)
        self._validators: dict[str, Callable[[dict[str, Any]], None]] = {}

    def server(self, name: str) -> McpServer:
        try:
            return self.servers[name]
        except KeyError:
            raise NotFound(f"no MCP server named {name!r} is declared; add [mcp.servers.{name}] to "
                           "config.toml (`agentix mcp servers` lists them)", server=name) from None

    # -- pins ------------------------------------------------------------------------
    async def state_of(self, srv: McpServer, t: ListedTool) -> str:
        """The tool's pin state, pinning it first if it is new and the server approves on first use."""
        pin = self.pins.get(srv.name, t.name)
        st = pin_state(pin, t.digest)
        if st == "new" and srv.cfg.approve == "first_use":
            await self._pin(srv, t, "first_use")
            return "approved"
        return st

    async def _pin(self, srv: McpServer, t: ListedTool, by: str) -> Pin:
        old = self.pins.get(srv.name, t.name)
        pin = Pin(srv.name, t.name, t.digest, by, time.time())
        await self.pins.put(pin, t.description, t.input_schema)
        await self.k.events.record("mcp.tool_pinned", None, {
            "server": srv.name, "tool": t.name, "digest": t.digest, "by": by,
            "previous": old.digest if old is not None else None})
        return pin

    async def approve(self, pattern: str, by: str) -> list[dict[str, Any]]:
        server, sep, tool = pattern.partition("/")
        if not sep or not tool:
            raise InvalidRequest(f"{pattern!r}: name SERVER/TOOL (or SERVER/* for all its tools)", field="tool")
        srv = self.server(server)
        await srv.ensure()
        names = sorted(srv.tools) if tool == "*" else [tool]
        out = []
        for n in names:
            t = srv.tools.get(n)
            if t is None:
                raise NotFound(f"MCP server {server} lists no tool {n!r} (`agentix mcp tools {server}`)",
                               server=server, tool=n)
            pin = self.pins.get(server, n)
            if pin is not None and pin.digest == t.digest:
                out.append({"tool": f"{server}/{n}", "digest": t.digest, "changed": False})
                continue
            await self._pin(srv, t, by)
            out.append({"tool": f"{server}/{n}", "digest": t.digest, "changed": True,
                        "previous": pin.digest if pin is not None else None})
        return out

    async def list_tools(self, server: str | None) -> list[dict[str, Any]]:
        out = []
        for srv in ([self.server(server)] if server else list(self.servers.values())):
            try:
                await srv.ensure()
            except AgentixError as err:
                out.append({"server": srv.name, "error": err.code, "message": err.message})
                continue
            for t in sorted(srv.tools.values(), key=lambda t: t.name):
                st = await self.state_of(srv, t)
                pin = self.pins.get(srv.name, t.name)
                out.append({"server": srv.name, "tool": t.name, "name": mcp_tool_name(srv.name, t.name),
                            "state": st, "digest": t.digest,
                            "pinned": pin.digest if pin is not None else None,
                            "approved_by": pin.approved_by if pin is not None and st == "approved" else None,
                            "description": t.description, "input_schema": t.input_schema})
        return out

    async def prepare_for(self, agent_id: str) -> None:
        """Start (first use) the servers an agent's ``mcp:`` grants name, so that its tool list
        shows their tools; a server that cannot start is left out (its calls say why)."""
        wanted: list[McpServer] = []
        toks = self.k.caps.tokens_of(agent_id) if self.servers else []
        for srv in self.servers.values():
            if srv.state in ("running", "failed") or srv.tools and srv.state == "backoff":
                continue
            if any(g.value == "*" or g.value.startswith(srv.name + "/")
                   for t in toks for g in t.grants.of_kind("mcp")):
                wanted.append(srv)
        if not wanted:
            return

        async def one(srv: McpServer) -> None:
            try:
                await srv.ensure()
                for t in list(srv.tools.values()):
                    await self.state_of(srv, t)  # first_use: pinned as it is first seen
            except AgentixError as err:
                log.warning("MCP server %s could not start for %s: %s", srv.name, agent_id, err.message)

        await asyncio.gather(*(one(s) for s in wanted))

    # -- the registry's view --------------------------------------------------------------
    def _split(self, name: str) -> tuple[McpServer, str] | None:
        server, sep, tool = name[len(MCP_TOOL_PREFIX):].partition("__")
        if not sep or server not in self.servers or not MCP_TOOL_RE.match(tool):
            return None
        return self.servers[server], tool

    def spec(self, name: str) -> ToolSpec | None:
        """The kernel tool ``mcp__SERVER__TOOL`` of a declared server (its arguments are checked
        against the approved schema when it runs: the server may not be started yet)."""
        got = self._split(name)
        if got is None:
            return None
        srv, tool = got
        # the description the operator approved (its pin), never what the server lists now: a
        # changed description reaches no model, whatever path asks for the spec
        approved = self.pins.approved.get((srv.name, tool))
        desc = untrusted_description(srv.name, tool, approved[0] if approved else None)
        return ToolSpec(name, desc, {"type": "object"}, self._handler(srv, tool),
                        durability=srv.cfg.durability(tool))

    def specs(self) -> list[ToolSpec]:
        """The approved tools: of a running server, those whose listing matches their pin; of a
        server not started yet, what its pins approved (a first_use server never started has
        none yet: ``agentix mcp tools`` starts and pins it)."""
        out = []
        for srv in self.servers.values():
            if srv.tools:
                shown = [(t.name, t.description, t.input_schema) for t in srv.tools.values()
                         if (pin := self.pins.get(srv.name, t.name)) is not None and pin.digest == t.digest]
            else:
                shown = [(tool, d, schema) for (server, tool), (d, schema) in self.pins.approved.items()
                         if server == srv.name]
            for name, desc, schema in shown:
                out.append(ToolSpec(mcp_tool_name(srv.name, name), untrusted_description(srv.name, name, desc),
                                    schema, self._handler(srv, name), durability=srv.cfg.durability(name)))
        return out

    def _handler(self, srv: McpServer, tool: str) -> Any:
        async def run(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
            return await self.call(ctx, srv, tool, args)
        return run

    async def call(self, ctx: ToolContext, srv: McpServer, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        """One call of the server's tool. Every error that leaves here once the server has been
        asked anything is labelled like a result: a start failure quotes the server's own line, a
        schema error the server's schema (``const``, ``enum``, ``pattern``), a call error its
        JSON-RPC message. Only the kernel's own pin refusals (no server text) are not."""
        label = f"external_tool:mcp:{srv.name}/{tool}"
        try:
            return await self._call(ctx, srv, tool, args, label)
        except CapabilityDenied as err:
            if err.data.get("reason") in ("mcp_tool_changed", "mcp_tool_unapproved"):
                raise
            raise err.tainted(label) from None
        except AgentixError as err:
            raise err.tainted(label) from None

    async def _call(self, ctx: ToolContext, srv: McpServer, tool: str, args: dict[str, Any],
                    label: str) -> dict[str, Any]:
        await srv.ensure()
        t = srv.tools.get(tool)
        if t is None:
            raise NotFound(f"MCP server {srv.name} lists no tool {tool!r} (`agentix mcp tools {srv.name}`)",
                           server=srv.name, tool=tool)
        st = await self.state_of(srv, t)
        if st != "approved":
            pin = self.pins.get(srv.name, tool)
            if st == "changed":
                assert pin is not None
                await self.k.events.record("mcp.tool_changed", ctx.agent_id, {
                    "server": srv.name, "tool": tool, "pinned": pin.digest, "now": t.digest})
                raise CapabilityDenied(
                    f"MCP tool {srv.name}/{tool} changed its description or input schema since it was "
                    f"approved ({pin.digest[:19]}... -> {t.digest[:19]}...); it is disabled until the operator "
                    f"re-approves it: `agentix mcp approve {srv.name}/{tool}`",
                    reason="mcp_tool_changed", server=srv.name, tool=tool, pinned=pin.digest, now=t.digest)
            raise CapabilityDenied(
                f"MCP tool {srv.name}/{tool} has not been approved (server {srv.name} has approve = "
                f"\"operator\"): `agentix mcp approve {srv.name}/{tool}`",
                reason="mcp_tool_unapproved", server=srv.name, tool=tool, digest=t.digest)
        self._validator(srv.name, t)(args)
        res = await srv.call(tool, args, srv.cfg.call_timeout)  # errors: labelled by call()
        self._taint(ctx, label)
        return _result(srv.name, tool, res)

    def _validator(self, server: str, t: ListedTool) -> Callable[[dict[str, Any]], None]:
        """The argument check for the listed (approved) schema, built once per digest."""
        v = self._validators.get(t.digest)
        if v is None:
            v = _schema_validator(server, t.name, t.input_schema)
            if len(self._validators) > 4096:
                self._validators.clear()
            self._validators[t.digest] = v
        return v

    def _taint(self, ctx: ToolContext, label: str) -> None:
        if ctx.agent_id is not None:
            self.k.table.get(ctx.agent_id).taint.add(label)
        ctx.call.taint.add(label)

    def statistics(self) -> list[dict[str, Any]]:
        return [s.describe() for s in self.servers.values()]

    async def close(self) -> None:
        await asyncio.gather(*(s.stop() for s in self.servers.values() if s.state != "stopped"),
                             return_exceptions=True)


def _schema_validator(server: str, tool: str, schema: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    import jsonschema

    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
    except jsonschema.SchemaError as err:
        msg = (f"MCP tool {server}/{tool} has an input schema that is not valid JSON Schema: "
               f"{err.message[:200]}")

        def broken(args: dict[str, Any]) -> None:
            raise ToolError(msg, reason="mcp_bad_schema", tool=f"{server}/{tool}")
        return broken
    validator = cls(schema)

    def check(args: dict[str, Any]) -> None:
        err = jsonschema.exceptions.best_match(validator.iter_errors(args))
        if err is not None:
            where = "/".join(str(p) for p in err.absolute_path) or "(arguments)"
            raise InvalidRequest(f"MCP tool {server}/{tool}: {where}: {err.message[:300]}",
                                 field=where, tool=f"{server}/{tool}")
    return check


def _result(server: str, tool: str, res: Any) -> dict[str, Any]:
    content = [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in res.content]
    text = "\n".join(c.get("text", "") for c in content if c.get("type") == "text")
    return {"server": server, "tool": tool, "is_error": bool(res.is_error), "text": text,
            "content": content, "structured_content": res.structured_content}


# ---------------------------------------------------------------------------- methods
def register(k: Kernel) -> McpTools:
    """Read the declarations, add the ``mcp__*`` tools to the registry and the ``mcp.*``
    operator methods to the pipeline (rows in kernel/methods.py)."""
    from agentix.kernel.methods import method

    svc = McpTools(k, load_mcp_config(k.home.root))
    k.tools.add_provider(MCP_TOOL_PREFIX, svc)

    async def servers(call: Call) -> dict[str, Any]:
        return {"servers": svc.statistics()}

    async def tools(call: Call) -> dict[str, Any]:
        server = call.params.get("server")
        if server is not None and not isinstance(server, str):
            raise InvalidRequest('"server" must be a server name', field="server")
        return {"tools": await svc.list_tools(server)}

    async def approve(call: Call) -> dict[str, Any]:
        tool = call.params.get("tool")
        if not isinstance(tool, str):
            raise InvalidRequest('"tool" must be SERVER/TOOL or SERVER/*', field="tool")
        return {"approved": await svc.approve(tool, call.caller.label())}

    async def restart(call: Call) -> dict[str, Any]:
        name = call.params.get("server")
        if not isinstance(name, str):
            raise InvalidRequest('"server" must be a server name', field="server")
        srv = svc.server(name)
        await srv.stop()
        srv.crashes, srv.next_start_at, srv.last_error = 0, 0.0, None
        await srv.ensure()
        return {"server": srv.describe()}

    for name, fn in (("mcp.servers", servers), ("mcp.tools", tools), ("mcp.approve", approve),
                     ("mcp.restart", restart)):
        k.pipeline.register(method(name, fn, operator=True))
    return svc
