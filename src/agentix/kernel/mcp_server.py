"""MCP servers as agent tools, part 5: one declared server — its process, its session, its tools.
(Over 400 lines: one state machine (one server's start, listing, calls, crash and backoff) that
reads best as a whole.)

``McpServer`` is a small state machine (``stopped -> starting -> running``; a crash goes to
``backoff`` and, after ``max_restarts`` crashes in a row, ``failed``):

- a stdio server runs as an agentix process: the kernel's sandbox substrate (the same as an
  agent's: namespaces, Landlock, seccomp, cgroups, rlimits, no network unless declared), its own
  workspace ``workspaces/mcp-NAME``, its stderr to ``logs/mcp-NAME.log``. Its stdin and stdout are
  the kernel's end of a socketpair (``mcp_stdio.py``); it never runs on the host unconfined (the
  plain backend only with ``isolation = "degraded"``, as for agents). A remote one is reached over
  Streamable HTTP (``mcp_remote.py``).
- Started on first use (a call, or ``mcp.tools``); a server that exits, or that breaks the
  protocol or a bound, is stopped and restarted on the next use after a backoff (0.5 s,
  doubling, at most 30 s); after ``max_restarts`` crashes in a row it is ``failed`` until
  ``agentix mcp restart NAME``. Calls in flight get ``tool_error`` naming what happened; a call
  not answered within ``call_timeout`` gets ``timeout`` (the server keeps running;
  ``max_concurrent`` bounds what it can hold).
- Its tool listing is read under one deadline and bounded in count and size (``_list``), at
  start and again while it runs (``relist``): when the server says its tools changed
  (``notifications/tools/list_changed``, at most one re-listing a second) and when the
  operator looks (``mcp.tools``, ``mcp.approve``).

What a listed tool may do (pins, approval) is not decided here: ``mcp_tools.McpTools`` asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from agentix.core.errors import AgentixError, LimitExceeded, Timeout, ToolError
from agentix.core.grants import MCP_TOOL_RE
from agentix.core.mcp_pinning import tool_digest
from agentix.kernel.mcp_config import McpServerConfig
from agentix.kernel.mcp_remote import remote_transport
from agentix.kernel.mcp_stdio import SocketTransport
from agentix.sandbox.base import Handle, LaunchSpec

if TYPE_CHECKING:
    import mcp_types
    from mcp import Client
    from mcp.client import IncomingMessage, Transport
    from mcp.client.session import MessageHandlerFnT

    from agentix.kernel.mcp_host import McpHost
    from agentix.kernel.process import LogSink

__all__ = ["ListedTool", "McpServer"]

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
#: a call waits out a restart backoff up to this long; a longer one is refused at once
BACKOFF_WAIT_MAX = 5.0
#: a listing is bounded as a whole, not only page by page: every agent's ``tool.list`` carries
#: every approved tool, so a server listing without end would wedge them all
MAX_TOOLS = 512
#: the canonical JSON of one tool's description and input schema; a bigger tool is skipped
MAX_TOOL_BYTES = 64 * 1024
#: re-listings on the server's word (list_changed) are at least this far apart (seconds)
RELIST_MIN_INTERVAL = 1.0


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
    k: McpHost                       # what it uses of the kernel (kernel/mcp_host.py)
    state: Literal["stopped", "starting", "running", "backoff", "failed"] = "stopped"
    tools: dict[str, ListedTool] = field(default_factory=dict)
    last_error: str | None = None
    crashes: int = 0
    starts: int = 0
    next_start_at: float = 0.0
    pid: int | None = None
    client: Client | None = None
    handle: Handle | None = None
    in_flight: int = 0
    _dead: asyncio.Event = field(default_factory=asyncio.Event)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: told of every listing: ``(server, previous listing, why)``, why ``start`` (the listing of
    #: a start), ``list_changed`` (the server said its tools changed) or ``operator`` (an
    #: operator asked: ``mcp.tools``, ``mcp.approve``); ``mcp_tools.McpTools`` sets it
    on_listed: Callable[[McpServer, dict[str, ListedTool], str], Awaitable[None]] | None = None
    relists: int = 0
    _runner: asyncio.Task[None] | None = None
    _reaper: asyncio.Task[None] | None = None
    _sock: socket.socket | None = None
    _relister: asyncio.Task[None] | None = None
    #: the start in progress (shared by every caller waiting for it)
    _starting: asyncio.Future[None] | None = None
    _relist_wanted: bool = False
    _last_relist: float = float("-inf")

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
            wait = self.next_start_at - self.k.clock.monotonic()
            if wait > BACKOFF_WAIT_MAX:
                raise ToolError(f"MCP server {self.name} stopped ({self.last_error}); it restarts in "
                                f"{wait:.1f} s: retry then", reason="mcp_server_restarting",
                                server=self.name, retry_after=round(wait, 3))
            if self._starting is None or self._starting.done():
                self._starting = asyncio.ensure_future(self._start_after(wait))
                self._starting.add_done_callback(_retrieved)
            # the start is the server's, not this caller's: a caller that goes away (its token
            # revoked, its agent stopped) leaves it running for the next, never half-done
            await asyncio.shield(self._starting)

    async def _start_after(self, wait: float) -> None:
        if wait > 0:
            await self.k.clock.sleep(wait)
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
            # the kernel's deadline, on the kernel's clock (a test's VirtualClock steps it)
            timer = asyncio.ensure_future(self.k.clock.sleep(self.cfg.start_timeout))
            try:
                done, _ = await asyncio.wait({ready, died, timer}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                died.cancel()
                timer.cancel()
            if ready not in done:
                reason = self.last_error if self._dead.is_set() else (
                    f"did not complete the MCP handshake within {self.cfg.start_timeout:g} s")
                self._died(reason or "ended during the handshake")
                raise ToolError(f"MCP server {self.name} could not start: {reason}",
                                reason="mcp_server_start", server=self.name)
            ready.result()
            old = self.tools
            await self._list()
            if self.on_listed is not None:
                await self.on_listed(self, old, "start")
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
        try:
            await self.k.events.record("mcp.server_started", None, {
                "server": self.name, "pid": self.pid, "tools": sorted(self.tools), "starts": self.starts,
                "isolation": ({"layers": self.handle.layers, "missing": self.handle.missing_layers}
                              if self.handle is not None else None)})
        finally:
            # "running" once its start is recorded: a caller that finds it running (ensure's fast
            # path) uses it only then; one arriving meanwhile waits for this start
            if self.state == "starting" and not self._dead.is_set():
                self.state = "running"

    async def _spawn(self) -> Transport:
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

        return SocketTransport(ksock, cfg, lambda why: self._died(why, dead), eof, self.k.clock)()

    async def _remote(self) -> Transport:
        self.handle, self.pid = None, None
        return remote_transport(self.cfg, lambda why: self._died(why), self.k.clock)

    async def _run(self, transport: Transport, ready: asyncio.Future[None], dead: asyncio.Event) -> None:
        from mcp import Client

        listener: asyncio.Task[None] | None = None
        try:
            async with Client(transport, read_timeout_seconds=self.cfg.call_timeout,
                              message_handler=self._on_message(dead)) as client:
                self.client = client
                if not ready.done():
                    ready.set_result(None)
                listener = asyncio.create_task(self._listen(client, dead))
                try:
                    await dead.wait()
                finally:
                    listener.cancel()
                    with contextlib.suppress(BaseException):
                        await listener
        except BaseException as err:  # noqa: BLE001 - ends the session, reported to the callers
            if not isinstance(err, asyncio.CancelledError):
                self._died(f"session ended: {_describe(err)}", dead)
            if not ready.done():
                ready.set_exception(ToolError(f"MCP server {self.name}: {self.last_error}",
                                              reason="mcp_server_start", server=self.name))
        finally:
            if self._dead is dead:  # a later session's client is not this one's to clear
                self.client = None

    # -- tools that change while the server runs --------------------------------------------
    def _on_message(self, dead: asyncio.Event) -> MessageHandlerFnT:
        """The session's handler of what the server sends unasked: ``notifications/tools/
        list_changed`` (a handshake-era server sends it on the wire; a 2026-07-28 one on the
        listen stream, which the SDK hands here too) asks for a re-listing. It only asks: the
        session's reader must not wait on a request of its own."""
        import mcp_types as types

        async def on_message(message: IncomingMessage) -> None:
            if isinstance(message, types.ToolListChangedNotification):
                self._list_changed(dead)
        return on_message

    async def _listen(self, client: Client, dead: asyncio.Event) -> None:
        """On a 2026-07-28 session, change notifications come only on a ``subscriptions/listen``
        stream the client opens; a handshake-era server (no listen) sends them unasked."""
        try:
            async with client.listen(tools_list_changed=True) as sub:
                async for _event in sub:
                    self._list_changed(dead)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - no listen stream: list_changed on the wire, if at all
            log.debug("MCP server %s: no tools listen stream (%s)", self.name, _describe(err))

    def _list_changed(self, dead: asyncio.Event) -> None:
        """Re-list soon: at most one re-listing runs, at most one more is owed, and re-listings
        are ``RELIST_MIN_INTERVAL`` apart (a server sending list_changed without end costs the
        kernel one listing a second, each bounded like the first)."""
        if dead is not self._dead or dead.is_set():
            return
        self._relist_wanted = True
        if self._relister is None or self._relister.done():
            self._relister = asyncio.create_task(self._relist_loop(dead))

    async def _relist_loop(self, dead: asyncio.Event) -> None:
        while self._relist_wanted and not dead.is_set():
            self._relist_wanted = False
            wait = self._last_relist + RELIST_MIN_INTERVAL - self.k.clock.monotonic()
            if wait > 0:
                await self.k.clock.sleep(wait)
            if dead.is_set():
                return
            try:
                await self.relist("list_changed")
            except AgentixError as err:
                log.warning("MCP server %s: re-listing its tools failed: %s", self.name, err.message)

    async def relist(self, why: str) -> None:
        """Read the running server's tools again (the same bounds as at start) and tell
        ``on_listed``; a server that fails its listing has broken the protocol: it is stopped."""
        # one listing at a time, and after a start in progress (both under ``_lock``): a change
        # said during the handshake is listed once the start's own listing is in, not dropped
        async with self._lock:
            if self.state != "running" or self.client is None:
                return
            dead = self._dead
            old = self.tools
            self._last_relist = self.k.clock.monotonic()
            try:
                # a task of its own: the SDK's cancel scopes must be entered and left in one
                # task, and an operator's handler may start out driven outside any (rpc/server.py)
                await asyncio.ensure_future(self._list())
            except AgentixError as err:
                self._died(f"failed to re-list its tools: {err.message}", dead)
                raise
            self.relists += 1
            if self.on_listed is not None:
                await self.on_listed(self, old, why)

    async def _reap(self, handle: Handle, dead: asyncio.Event, sink: LogSink | None = None) -> None:
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
            self.next_start_at = self.k.clock.monotonic() + min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self.crashes - 1))

    async def stop(self) -> None:
        self.state = "stopped"
        self._died("stopped by the kernel")
        if self._relister is not None:
            self._relister.cancel()
        for task in (self._runner, self._reaper):  # the session, then the process's exit record
            if task is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(asyncio.shield(task), 5.0)

    # -- listing and calling ------------------------------------------------------------
    async def _list(self) -> None:
        """The server's tools, read under ONE deadline (``start_timeout``, the same as the
        handshake's, on the kernel's clock) and bounded in count (``MAX_TOOLS``) and size
        (``MAX_TOOL_BYTES`` each): a server paging slowly or without end fails its start
        instead of holding the callers (and every agent's ``tool.list``) for 64 pages of
        ``call_timeout``."""
        listing = asyncio.ensure_future(self._pages())
        timer = asyncio.ensure_future(self.k.clock.sleep(self.cfg.start_timeout))
        try:
            await asyncio.wait({listing, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            if not listing.done():
                listing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listing
        if listing.cancelled():
            raise ToolError(f"MCP server {self.name} did not finish listing its tools (tools/list) within "
                            f"start_timeout = {self.cfg.start_timeout:g} s", reason="mcp_server_start",
                            server=self.name)
        self.tools = listing.result()

    async def _pages(self) -> dict[str, ListedTool]:
        assert self.client is not None
        tools: dict[str, ListedTool] = {}
        cursor: str | None = None
        for _ in range(64):
            # never the SDK's response cache: a listing is what the server says now
            page = await self.client.list_tools(cursor=cursor, cache_mode="bypass")
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
                return tools
        raise ToolError(f"MCP server {self.name} listed 64 pages of tools without an end",
                        reason="mcp_server_start", server=self.name)

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
                "tools": len(self.tools), "in_flight": self.in_flight, "relists": self.relists,
                "isolation": ({"layers": self.handle.layers, "missing": self.handle.missing_layers}
                              if self.handle is not None and self.state == "running" else None)}

def _tool_size(t: mcp_types.Tool) -> int:
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


def _retrieved(fut: asyncio.Future[Any]) -> None:
    """A start whose every waiter went away: its outcome is taken (said by ``_died``/the log)."""
    if not fut.cancelled():
        fut.exception()
