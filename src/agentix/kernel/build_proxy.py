"""The kernel's egress proxy for one build step that declares hosts.

Rules (the same host rules as an agent's ``network:`` grant, core/hosts.py):

- The step's declared hosts are host patterns: ``*``, ``*.suffix`` or an exact name or IP
  literal. A request is allowed only if its host matches one, and the address it resolves to
  is permitted by that pattern: a private, loopback or link-local address only when a
  pattern names that host or address *exactly* (``*`` never reaches 127.0.0.1).
- The name is resolved here, once, and the connection goes to the address that was checked
  (no second lookup between check and connect). The sandbox has no resolver of its own.
- Two request forms, as any HTTP proxy: ``CONNECT host:port`` (a tunnel: HTTPS, whose TLS
  runs end to end between the command and the host) and an absolute-form plain-HTTP request
  (``GET http://host:port/path``), forwarded in origin form with the checked host as its
  ``Host`` (a ``Host`` header naming another site is dropped: a CDN or virtual-hosting server
  would serve that site instead — domain fronting; inside a CONNECT tunnel the TLS name is the
  command's and cannot be checked here). After the first request the
  connection is a byte pipe to the host that was checked: a second request on it goes to
  the same host, never elsewhere.
- A refused host gets ``403`` with a line naming it and the declared hosts, and is counted;
  a malformed request gets ``400``; a host that cannot be reached ``502``; more than
  ``MAX_CONNECTIONS`` at once ``503``.

The proxy listens on a unix socket in a directory of its own that the step's sandbox sees
read-only (sandbox/netbridge.py carries the command's loopback connections to it). The socket
must be connectable by the sandbox's uid, so anyone on the machine could reach it: the proxy
therefore serves only processes of its step — the peer's pid (``SO_PEERCRED``, read by the
kernel, not claimed by the client) must descend from the step's sandbox process; anyone else
gets ``403`` before a request is read, and is counted (``strangers``).
``decisions`` lists what it allowed and refused (the kernel records them with the build).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path

from agentix.core.errors import CapabilityDenied, InvalidRequest, ToolError
from agentix.core.hosts import HostPattern, normalize_host, parse_host_pattern
from agentix.net.pinned import Resolver, pick_address, system_resolver

__all__ = ["BuildProxy"]

log = logging.getLogger(__name__)

MAX_HEAD = 32 * 1024
HEAD_TIMEOUT = 30.0
CONNECT_TIMEOUT = 30.0
CHUNK = 64 * 1024
#: connections served at once for one step; more get 503 at once (the kernel's fds are shared)
MAX_CONNECTIONS = 64


@dataclass
class BuildProxy:
    """Serve ``hosts`` (pattern strings) on a unix socket at ``path`` while in use."""

    hosts: tuple[str, ...]
    path: Path
    decisions: list[dict[str, object]] = field(default_factory=list)
    #: connections refused because the peer was not a process of the step
    strangers: int = 0
    #: the one lookup of a requested host (a test's resolver replaces it)
    resolve: Resolver = system_resolver

    def __post_init__(self) -> None:
        self.patterns: tuple[HostPattern, ...] = tuple(parse_host_pattern(h) for h in self.hosts)
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._step: int | None = None
        self._step_known = asyncio.Event()

    def serve_only(self, pid: int) -> None:
        """Serve only processes descending from ``pid`` (the step's sandbox process)."""
        self._step = pid
        self._step_known.set()

    async def _from_the_step(self, writer: asyncio.StreamWriter) -> bool:
        sock = writer.get_extra_info("socket")
        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except (OSError, AttributeError):
            return False
        pid = struct.unpack("3i", creds)[0]
        try:  # a connection can come before the spawn has told us the step's pid
            await asyncio.wait_for(self._step_known.wait(), HEAD_TIMEOUT)
        except asyncio.TimeoutError:
            return False
        return self._step is not None and pid > 0 and _descends_from(pid, self._step)

    async def __aenter__(self) -> BuildProxy:
        self._server = await asyncio.start_unix_server(self._handle, path=str(self.path), limit=MAX_HEAD)
        os.chmod(self.path, 0o666)  # the sandbox's unprivileged uid connects to it
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for t in list(self._tasks):
            t.cancel()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    # ------------------------------------------------------------ the decision
    async def _address(self, host: str, port: int) -> str | None:
        """The address to connect to (one lookup, net/pinned.py), or None when the declared
        hosts do not allow it."""
        try:
            return await pick_address(host, port, lambda h, a: any(p.permits(h, a) for p in self.patterns),
                                      self.resolve)
        except (CapabilityDenied, ToolError):  # not declared, not resolvable, or a refused address
            return None

    # ------------------------------------------------------------ one connection
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if len(self._tasks) > MAX_CONNECTIONS:
                return await self._answer(writer, 503, f"more than {MAX_CONNECTIONS} connections at once")
            if not await self._from_the_step(writer):
                self.strangers += 1
                return await self._answer(writer, 403, "this proxy serves only the processes of its build step")
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, asyncio.CancelledError):
            pass  # the client went away, took too long, or the step ended
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except asyncio.LimitOverrunError:
            return await self._answer(writer, 431, f"request head larger than {MAX_HEAD} bytes")
        line, _, rest = head.partition(b"\r\n")
        try:
            method, target, version = line.decode("ascii").split(" ")
        except (UnicodeDecodeError, ValueError):
            return await self._answer(writer, 400, "malformed request line")
        try:
            host, port, path = _target(method, target)
            host = normalize_host(host)
        except (ValueError, InvalidRequest) as err:
            return await self._answer(writer, 400, str(err))
        addr = await self._address(host, port)
        self.decisions.append({"host": host, "port": port, "allowed": addr is not None})
        if addr is None:
            return await self._answer(
                writer, 403, f"{host} is not among the hosts this build step declares "
                f"(network: {', '.join(self.hosts)}); declare it in the Agentfile's run step")
        try:
            up_r, up_w = await asyncio.wait_for(asyncio.open_connection(addr, port), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as err:
            return await self._answer(writer, 502, f"cannot reach {host}:{port} ({err})")
        try:
            if method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
            else:
                # the Host is the checked host's: a Host header naming another site would have
                # the upstream (a CDN, a virtual-hosting server) serve that one instead
                headers = [h for h in rest.split(b"\r\n")
                           if h and not h.lower().startswith((b"proxy-", b"connection:", b"host:"))]
                name = f"[{host}]" if ":" in host else host
                up_w.write(f"{method} {path} {version}\r\nHost: {name if port == 80 else f'{name}:{port}'}\r\n"
                           .encode("ascii")
                           + b"".join(h + b"\r\n" for h in headers) + b"Connection: close\r\n\r\n")
                await up_w.drain()
            await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))
        finally:
            up_w.close()

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, status: int, text: str) -> None:
        reason = {400: "Bad Request", 403: "Forbidden", 431: "Request Header Fields Too Large",
                  502: "Bad Gateway", 503: "Service Unavailable"}[status]
        body = f"agentix build proxy: {text}\n".encode()
        writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        with contextlib.suppress(OSError):
            await writer.drain()


def _descends_from(pid: int, root: int) -> bool:
    """True if ``pid`` is ``root`` or one of its descendants (parents read from /proc)."""
    for _ in range(256):
        if pid == root:
            return True
        if pid <= 1:
            return False
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            pid = int(stat[stat.rindex(b")") + 2:].split()[1])  # after "(comm) S ": the ppid
        except (OSError, ValueError, IndexError):
            return False
    return False


def _target(method: str, target: str) -> tuple[str, int, str]:
    """(host, port, origin-form path) of a proxy request; ValueError for anything else."""
    if method == "CONNECT":
        host, port = _authority(target, None)
        return host, port, ""
    if not target.lower().startswith("http://"):
        raise ValueError("only CONNECT (for https) and absolute http:// requests go through the build proxy")
    rest = target[7:]
    auth, slash, path = rest.partition("/")
    if "@" in auth:
        raise ValueError("credentials in the URL are not allowed")
    host, port = _authority(auth, 80)
    return host, port, "/" + path if slash else "/"


def _authority(text: str, default: int | None) -> tuple[str, int]:
    if text.startswith("["):
        host, _, after = text[1:].partition("]")
        port_text = after[1:] if after.startswith(":") else ""
    else:
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not port_text:
        if default is None:
            raise ValueError("CONNECT needs host:port")
        return host, default
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port {port_text!r}")
    return host, int(port_text)


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(CHUNK):
            dst.write(data)
            await dst.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if dst.can_write_eof():
                dst.write_eof()
