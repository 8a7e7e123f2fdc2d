"""agentixd: the kernel daemon's entry point.

``agentixd [--home DIR]`` runs the kernel in the foreground until SIGTERM/SIGINT or a
``kernel.shutdown`` call; ``agentix up`` starts it in the background. Exit codes: 0 after a
clean shutdown, 2 for bad configuration, 3 if another kernel already owns the home.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from agentix.core.errors import AgentixError
from agentix.kernel.config import load_config
from agentix.kernel.dispatch import OperatorSession
from agentix.kernel.home import Home, default_home
from agentix.kernel.kernel import KernelRoot
from agentix.rpc.server import PeerCredentials, start_unix_server

__all__ = ["main", "run_kernel"]

log = logging.getLogger("agentix.kernel")

EXIT_CONFIG = 2
EXIT_RUNNING = 3


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_pidfile(home: Home) -> None:
    """Write our pid, refusing if a live kernel already holds the file."""
    path = home.pidfile
    try:
        old = int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        old = None
    if old is not None and old != os.getpid() and _pid_alive(old):
        raise RuntimeError(f"a kernel (pid {old}) is already running for {home.root}")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{os.getpid()}\n")
    os.replace(tmp, path)


async def run_kernel(home: Home, overrides: dict[str, Any] | None = None,
                     ready: asyncio.Event | None = None, http: tuple[str, int] | None = None) -> None:
    home.create()
    config = load_config(home.root, overrides)
    if (hasattr(asyncio, "PidfdChildWatcher") and sys.version_info < (3, 12)
            and isinstance(asyncio.get_running_loop(), asyncio.BaseEventLoop)):  # uvloop reaps itself
        try:  # one pidfd per child instead of one thread per child (3.11's default)
            watcher = asyncio.PidfdChildWatcher()
            watcher.attach_loop(asyncio.get_running_loop())
            asyncio.set_child_watcher(watcher)
        except OSError:
            pass
    claim_pidfile(home)
    kernel = KernelRoot(home, config)
    from agentix.kernel import telemetry

    # metrics with the HTTP API (GET /metrics), traces with AGENTIX_TRACES; off: zero cost
    sources = telemetry.MetricSources(kernel.table, kernel.inference, kernel.audit, kernel.record_gate)
    tel = telemetry.install(kernel.pipeline, metrics=sources if http is not None else None)
    await kernel.start()
    await kernel.respawn_persistent()   # persistent agents come back with the kernel
    me = os.getuid()

    def handler_for(creds: PeerCredentials) -> Any:
        if creds.uid not in (me, 0):
            return None

        session = OperatorSession()  # this connection's caller (session.bind narrows it)

        async def handle(method: str, params: dict[str, Any]) -> Any:
            return await session.run(kernel.pipeline, method, params)

        return handle

    # the HTTP API first (docs/http.md: a task of this loop, same pipeline): the operator's socket
    # is what `agentix up` (and every client) takes as "the kernel is up", so it appears only
    # once everything the kernel was started with answers — a failed HTTP start leaves no socket
    http_server = None
    if http is not None:
        from agentix.kernel.http_api import start_http
        from agentix.rpc.slow_clients import SlowClientLimits

        limits = SlowClientLimits(config.http_head_timeout, config.http_body_timeout, config.http_max_pending)
        try:
            http_server = await start_http(kernel.http, *http, limits=limits,
                                           metrics=tel.metrics if tel is not None else None)
        except BaseException:
            await kernel.shutdown()
            raise
    # operators get their own in-flight counter: an agent flood never locks the operator out
    from agentix.rpc.server import InFlight, InFlightLimits

    operators = InFlight(InFlightLimits(per_connection=config.in_flight_per_agent, batch=config.batch_limit,
                                       total=config.in_flight_total))
    try:
        server = await start_unix_server(home.socket, handler_for, frame_limit=config.frame_limit,
                                         in_flight_total=operators)
    except BaseException:
        if http_server is not None:
            await http_server.close()
        await kernel.shutdown()  # as for a failed HTTP start: no agent outlives a kernel that never came up
        raise
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, kernel.shutdown_requested.set)
    log.info("agentixd %d listening on %s (backend %s)", os.getpid(), home.socket, kernel.substrate.name)
    if ready is not None:
        ready.set()
    try:
        await kernel.shutdown_requested.wait()
    finally:
        log.info("shutting down")
        if http_server is not None:
            await http_server.close()
        server.close()
        await kernel.shutdown()
        await telemetry.shutdown(tel)
        await server.wait_closed()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        try:
            home.socket.unlink()
        except FileNotFoundError:
            pass
        try:
            if home.pidfile.read_text().strip() == str(os.getpid()):
                home.pidfile.unlink()
        except (FileNotFoundError, OSError):
            pass
        log.info("stopped")


def _loop_factory() -> Any:
    """asyncio's loop; uvloop only when AGENTIX_UVLOOP=1 and it is installed (not a dependency).

    bench/syscall.py measured uvloop at ~15% lower per-call latency (docs/benchmarks.md);
    it stays opt-in until the sandbox backends are checked against its subprocess support.
    """
    if os.environ.get("AGENTIX_UVLOOP") == "1":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agentixd", description="the agentix kernel daemon")
    parser.add_argument("--home", type=Path, default=None, help="state directory (default $AGENTIX_HOME or ~/.agentix)")
    parser.add_argument("--log-level", default=os.environ.get("AGENTIX_LOG_LEVEL", "INFO"))
    parser.add_argument("--isolation", choices=["strict", "degraded"], default=None,
                        help="override [kernel] isolation from config.toml")
    parser.add_argument("--http", metavar="HOST:PORT", default=None,
                        help="also serve the operator API over HTTP (docs/http.md); loopback only "
                             "unless --http-allow-remote")
    parser.add_argument("--http-allow-remote", action="store_true",
                        help="allow --http on an address other than loopback")
    args = parser.parse_args(argv)
    home = Home((args.home or default_home()).expanduser().resolve())
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {"isolation": args.isolation} if args.isolation else None
    try:
        http = None
        if args.http:
            from agentix.core.hosts import parse_listen_address

            http = parse_listen_address(args.http, allow_remote=args.http_allow_remote,
                                        option="--http", remote_option="--http-allow-remote")
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(run_kernel(home, overrides, http=http))
    except AgentixError as err:
        print(f"agentixd: {err.message}", file=sys.stderr)
        return EXIT_CONFIG
    except RuntimeError as err:
        print(f"agentixd: {err}", file=sys.stderr)
        return EXIT_RUNNING
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            print(f"agentixd: socket in use: {err}", file=sys.stderr)
            return EXIT_RUNNING
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
