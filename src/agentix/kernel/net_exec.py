"""Kernel tools with outside effects: ``web_fetch`` and ``exec``.

Rules:

- ``web_fetch``: the host (and, after resolution, the address) must be permitted by one of
  the caller's tokens, re-checked on every redirect; private/loopback addresses only when a
  grant names them explicitly. A ``secret`` named in the call must be granted (``secret:
  NAME``); the kernel injects it (bearer, header or query) and the agent never sees it: the
  result, the event log and the audit are redacted. The fetched content taints the caller's
  context with ``fetched_url:<url>`` — and so does any error of the fetch (a status line, a
  redirect target or a resolver's answer is text from the world).
  The timeout is capped (``[kernel] fetch_max_timeout``, default 120 s): a larger one is
  ``invalid_request`` naming the field.
- ``exec``: argv only (never a shell string); ``argv[0]`` must be named by an ``exec:`` grant
  (checked by the capability stage). The program runs in a sandbox like an agent's (same
  substrate, the caller's workspace as /workspace, no network) whose cgroup is nested in the
  caller's own, so the caller's memory, pids and cpu limits bound the agent and all its execs
  together. At most ``exec_per_agent`` (default 4) runs per agent and ``exec_total``
  (default 32) in the kernel at once; one more is ``limit_exceeded`` at once (nothing runs).
  The timeout is capped (``exec_max_timeout``, default 600 s; over it is ``invalid_request``);
  a run past it is killed and reported as ``timeout``. stdout and stderr are one pipe the
  kernel reads: the first ``EXEC_OUTPUT_CAP`` bytes are kept, the rest read and dropped
  (``truncated``); the program never holds a kernel file.
"""

from __future__ import annotations

import asyncio
import logging
import secrets as _secrets
import sys
from collections.abc import Callable
from typing import Any

from agentix.core.errors import AgentixError, CapabilityDenied, InvalidRequest, LimitExceeded
from agentix.core.grants import Request
from agentix.kernel.cap_service import CapabilityService
from agentix.kernel.config import KernelConfig
from agentix.kernel.dispatch import Call
from agentix.kernel.home import Home
from agentix.kernel.one_shot import run_once
from agentix.kernel.process import AgentRecord, ProcessTable
from agentix.sandbox.base import LaunchSpec, Substrate
from agentix.tools.base import ToolContext, ToolSpec
from agentix.tools.files import DiskTally

log = logging.getLogger(__name__)

__all__ = ["make_specs", "network_permits"]

EXEC_OUTPUT_CAP = 256 * 1024


def _capped_timeout(args: dict[str, Any], default: float, ceiling: float, tool: str) -> float:
    raw = args.get("timeout", default)
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise InvalidRequest(f"{tool}: timeout must be a number of seconds", field="timeout")
    timeout = float(raw)
    if not 0 < timeout <= ceiling:  # NaN fails this too
        raise InvalidRequest(f"{tool}: timeout must be in (0, {ceiling:g}] s (the kernel's ceiling)",
                             field="timeout", max=ceiling)
    return timeout


def network_permits(again: Callable[[list[Request]], Any],
                    on_hop: Callable[[str], None] | None = None) -> Callable[[str, str | None], bool]:
    """The ``permits(host, address)`` a network tool asks before each hop (``address`` None)
    and each address a hop resolves to: every one is a new decision through ``again`` (the
    call's ``reauthorize``), so a token revoked, expired or exhausted since the call began
    covers nothing. Not granted is ``False`` (the tool refuses that hop); any other refusal
    propagates. ``on_hop(host)`` runs first on each hop and may raise."""

    def permits(host: str, address: str | None) -> bool:
        if on_hop is not None and address is None:
            on_hop(host)
        try:
            again([Request.make("network", host, address)])
        except CapabilityDenied as err:
            if err.data.get("reason") in ("not_granted", "kernel_state"):
                return False
            raise
        return True

    return permits


def make_specs(config: KernelConfig, home: Home, table: ProcessTable, caps: CapabilityService,
               substrate: Substrate, tally: DiskTally) -> list[ToolSpec]:
    running: dict[str, int] = {}  # agent id -> exec runs going
    async def web_fetch_tool(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        from urllib.parse import urlsplit

        from agentix.core.grants import check_secret_host
        from agentix.tools.secrets import inject
        from agentix.tools.web_fetch import web_fetch

        auth = ctx.require_authorization()
        again = ctx.reauthorize
        assert again is not None

        name = args.get("secret")
        secret_hosts = caps.secret_hosts.get(name) if name is not None else None

        def secret_hop(host: str) -> None:
            # a secret goes only to the hosts it is bound to: a redirect hop elsewhere is refused
            check_secret_host(name, secret_hosts, host)

        permits = network_permits(again, secret_hop if name is not None else None)

        url = args["url"]
        secret_headers: dict[str, str] = {}
        used: dict[str, str] = {}
        if name is not None:
            auth.token_for(Request("secret", name))  # in the call's decision, with the host
            value = caps.secrets.get(name)
            if value is None:
                raise InvalidRequest(f"the vault holds no secret {name!r}", field="secret")
            check_secret_host(name, secret_hosts, urlsplit(url).hostname or "")  # before anything is built
            inj = inject(url, value, args.get("secret_as", "bearer"), args.get("secret_name"))
            url, secret_headers = inj.url, dict(inj.headers)
            used[name] = value
        # in a task of its own: web_fetch uses asyncio.timeout, and the channel may run a
        # request eagerly outside any task until it first blocks
        label = f"fetched_url:{args['url']}"
        # checked before the fetch: a refused argument is not text from the world (no taint)
        timeout = _capped_timeout(args, 30.0, config.fetch_max_timeout, "web_fetch")
        try:
            res = await asyncio.create_task(web_fetch(
                url, permits=permits, method=args.get("method", "GET"), headers=args.get("headers"),
                body=args.get("body"), secret_headers=secret_headers, timeout=timeout,
                settle=caps.ledger.flush,
            ))
        except AgentixError as err:
            # a status line, a redirect target, a resolver's answer: world text in the error
            # labels the context like a result would (the pipeline's state stage applies it)
            raise err.tainted(label) from None
        if ctx.agent_id is not None:
            rec = table.get(ctx.agent_id)
            rec.taint.add(label)
        ctx.call.taint.add(label)
        from agentix.tools.secrets import redact

        return redact(res, {**caps.secrets, **used})

    async def exec_tool(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        argv = args["argv"]
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise InvalidRequest("exec: argv must be a non-empty list of strings", field="argv")
        if "/" in argv[0]:
            raise InvalidRequest("exec: argv[0] is a program name, not a path", field="argv")
        timeout = _capped_timeout(args, 30.0, config.exec_max_timeout, "exec")
        if ctx.agent_id is None or ctx.workspace is None:
            raise InvalidRequest('exec runs in an agent\'s workspace; name it with "agent_id"', field="agent_id")
        rec = table.get(ctx.agent_id)
        mine = running.get(rec.agent_id, 0)
        if mine >= config.exec_per_agent:
            raise LimitExceeded(
                f"agent {rec.name} already has {mine} exec runs going; the limit is "
                f"{config.exec_per_agent} at once ([kernel] exec_per_agent)",
                limit="exec_per_agent", max=config.exec_per_agent)
        if sum(running.values()) >= config.exec_total:
            raise LimitExceeded(
                f"the kernel already runs {config.exec_total} exec runs; retry when one has finished "
                "([kernel] exec_total)", limit="exec_total", max=config.exec_total)
        running[rec.agent_id] = mine + 1
        try:
            return await run_exec(ctx, rec, argv, timeout)
        finally:
            running[rec.agent_id] -= 1
            if not running[rec.agent_id]:
                del running[rec.agent_id]

    async def run_exec(ctx: ToolContext, rec: AgentRecord, argv: list[str], timeout: float) -> dict[str, Any]:
        assert ctx.workspace is not None
        run_id = "ex-" + _secrets.token_hex(4)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/workspace",
               "AGENTIX_AGENT_ID": rec.agent_id}
        workspace = ctx.workspace
        limits = rec.limits
        if limits.disk is not None:  # each file the run writes: at most what the workspace has left
            left = await asyncio.to_thread(tally.room, str(workspace), limits.disk)
            limits = limits.model_copy(update={"disk": left})

        def launch(channel_fd: int, output_fd: int) -> LaunchSpec:
            return LaunchSpec(
                agent_id=f"{rec.agent_id}-{run_id}", name=f"{rec.name}-exec",
                argv=[sys.executable, "-I", "-B", "-m", "agentix.sandbox.confine", "--", *argv],
                workspace=workspace, env=env, channel_fd=channel_fd,
                log_path=home.logs / f"{rec.agent_id}-{run_id}.out",  # unused: output is a pipe
                limits=limits, network=False,
                degraded_ok=bool(rec.isolation.get("degraded")) or config.isolation == "degraded",
                output_fd=output_fd, within=rec.handle,
            )

        try:
            done = await run_once(substrate, launch, timeout=timeout, cap=EXEC_OUTPUT_CAP, what="exec",
                                  program=argv[0])
        finally:
            # the run wrote what the kernel did not count: count again (RLIMIT_FSIZE bounds each
            # file, not the total, so the run may have taken the workspace over its limit)
            used = None if rec.limits.disk is None else await asyncio.to_thread(
                tally.recount, str(workspace), rec.limits.disk)
        out = {"exit_code": done.info.code, "signal": done.info.signal, "output": done.output,
               "truncated": done.truncated, "duration_s": done.duration_s}
        if used is not None and rec.limits.disk is not None and used > rec.limits.disk:
            # nothing is deleted: the agent is told (and the record says) that the workspace is
            # over; its writes that grow it and its next exec are refused until it is under
            over = {"used": used, "limit": rec.limits.disk}
            out["disk_over_limit"] = over
            if isinstance(ctx.call, Call):
                ctx.call.event_data = {**(ctx.call.event_data or {}), "disk_over_limit": over}
            log.warning("exec %s of %s took its workspace to %d bytes, over its disk limit of %d",
                        run_id, rec.agent_id, used, rec.limits.disk)
        return caps.redact(out)

    return [
        ToolSpec("web_fetch", "Fetch a URL (http/https) the grants allow; optional vault secret.", {
            "type": "object", "additionalProperties": False, "required": ["url"],
            "properties": {
                "url": {"type": "string"}, "method": {"type": "string"},
                "headers": {"type": "object"}, "body": {"type": "string"},
                "secret": {"type": "string"}, "secret_as": {"type": "string"},
                "secret_name": {"type": "string"}, "timeout": {"type": "number"}}}, web_fetch_tool),
        ToolSpec("exec", "Run a program (argv list, never a shell) sandboxed in the workspace.", {
            "type": "object", "additionalProperties": False, "required": ["argv"],
            "properties": {"argv": {"type": "array", "items": {"type": "string"}},
                           "timeout": {"type": "number"}}}, exec_tool),
    ]
