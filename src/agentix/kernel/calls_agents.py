"""System calls about agents: spawn, list, status, wait, stop, kill, pause, resume, logs
(operator); ``sys.info``, ``sys.exit``, ``agent.spawn_child``, ``agent.wait_child``,
``agent.children``, ``agent.stop_child``, ``agent.kill_child`` (agents)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Protocol

from agentix.core.errors import CapabilityDenied, InvalidRequest
from agentix.core.manifest import parse_manifest
from agentix.kernel.cap_service import CapabilityService
from agentix.kernel.control import MAX_GRACE, Control
from agentix.kernel.dispatch import Call, Pipeline
from agentix.kernel.inference import InferenceService
from agentix.kernel.methods import method
from agentix.kernel.param_checks import caller_record, optional, required, timeout_param
from agentix.kernel.process import AgentRecord, ProcessTable, read_log
from agentix.kernel.program import parse_spawn_manifest
from agentix.kernel.spawn import Spawner
from agentix.llm.inference_config import describe_model
from agentix.tools.thread_work import in_thread

__all__ = ["LOG_CHUNK", "ForgetsAgents", "register"]

LOG_CHUNK = 256 * 1024


class ForgetsAgents(Protocol):
    """Where a persistent agent the operator stopped is forgotten (not started again)."""

    def forget_agent(self, name: str) -> bool: ...


def register(pipeline: Pipeline, *, table: ProcessTable, spawner: Spawner, control: Control,
             caps: CapabilityService, inference: InferenceService, persistent: ForgetsAgents | None,
             prepare_tools: Callable[[str], Awaitable[None]]) -> None:
    """``prepare_tools(agent_id)``: what ``sys.info`` starts first so the tools it lists are
    ready (the MCP servers the agent's grants name: ``mcp_tools.McpTools.prepare_for``)."""
    def op(name: str, fn: Any) -> None:
        pipeline.register(method(name, fn, operator=True))

    def sc(name: str, fn: Any) -> None:
        pipeline.register(method(name, fn, agent=True))

    caller_rec = partial(caller_record, table)

    def agent_param(call: Call, key: str = "agent_id") -> AgentRecord:
        return table.find(required(call.params, key, str, "an agent id or live name"))

    async def agent_spawn(call: Call) -> dict[str, Any]:
        manifest, base = parse_spawn_manifest(call.params)
        if call.params.get("name") is not None and not isinstance(call.params["name"], str):
            raise InvalidRequest('parameter "name" must be a string (the agent\'s name)', field="name")
        if isinstance(call.params.get("name"), str):
            manifest = manifest.model_copy(update={"name": parse_manifest(
                {**manifest.to_data(), "name": call.params["name"]}).name})
        rec = await spawner.spawn(manifest, message=call.params.get("message"), program_base=base)
        return {"agent_id": rec.agent_id, "name": rec.name, "pid": rec.pid, "isolation": rec.isolation}

    async def agent_list(call: Call) -> dict[str, Any]:
        show_all = bool(call.params.get("all", True))
        recs = [r for r in table if show_all or r.state != "exited"]  # until its exit is accounted for
        recs.sort(key=lambda r: r.created_at)
        return {"agents": [r.summary() for r in recs]}

    async def agent_status(call: Call) -> dict[str, Any]:
        return control.status(agent_param(call))

    async def agent_wait(call: Call) -> dict[str, Any]:
        rec = await control.wait(agent_param(call), timeout_param(call.params, None))
        return control.status(rec)

    async def forget_persistent(rec: AgentRecord) -> None:
        # the operator stopped it: a persistent root is not started again at the next start
        # (only a live one: stopping an exited record, e.g. one of an earlier kernel run, must
        # not forget the live agent that now has its name)
        if (rec.live and rec.parent is None and rec.manifest.lifecycle == "persistent"
                and persistent is not None):
            await in_thread(lambda: persistent.forget_agent(rec.name))

    async def agent_stop(call: Call) -> dict[str, Any]:
        grace = optional(call.params, "grace", (int, float), "a number of seconds", None)
        rec = agent_param(call)
        await forget_persistent(rec)
        rec = await control.stop(rec, reason="killed", detail="stopped by the operator", grace=grace)
        return rec.summary()

    async def agent_kill(call: Call) -> dict[str, Any]:
        rec = agent_param(call)
        await forget_persistent(rec)
        rec = await control.kill(rec)
        return rec.summary()

    async def agent_pause(call: Call) -> dict[str, Any]:
        rec = agent_param(call)
        await control.pause(rec)
        return rec.summary()

    async def agent_resume(call: Call) -> dict[str, Any]:
        rec = agent_param(call)
        await control.resume(rec)
        return rec.summary()

    async def agent_logs(call: Call) -> dict[str, Any]:
        rec = agent_param(call)
        tail = optional(call.params, "tail", int, "a number of lines", None)
        head = optional(call.params, "head", int, "a number of lines", None)
        offset = optional(call.params, "offset", int, "a byte offset", None)
        wait = optional(call.params, "wait", (int, float), "seconds to wait for more output", 0)
        max_bytes = min(optional(call.params, "max_bytes", int, "a byte count", LOG_CHUNK), LOG_CHUNK)
        chosen = [k_ for k_, v in (("tail", tail), ("head", head), ("offset", offset)) if v is not None]
        if len(chosen) > 1:
            raise InvalidRequest(f"agent.logs takes one of tail, head, offset; got {', '.join(chosen)}",
                                 field=chosen[1])
        for key, val in (("tail", tail), ("head", head), ("offset", offset), ("max_bytes", max_bytes)):
            if val is not None and val < 0:
                raise InvalidRequest(f'"{key}" must be >= 0', field=key)

        def read() -> dict[str, Any]:
            return read_log(rec.log_path, offset=offset, tail=tail, head=head, max_bytes=max_bytes)

        out = await asyncio.to_thread(read)
        if not out["data"] and wait and rec.live and tail is None and head is None:
            loop = asyncio.get_running_loop()
            end = loop.time() + min(float(wait), 60.0)
            while not out["data"] and rec.live and loop.time() < end:
                try:
                    await asyncio.wait_for(asyncio.shield(rec.exited.wait()), timeout=0.1)
                except asyncio.TimeoutError:
                    pass
                out = await asyncio.to_thread(read)
        return {**out, "data": out["data"].decode("utf-8", errors="replace"), "live": rec.live}

    async def sys_info(call: Call) -> dict[str, Any]:
        rec = caller_rec(call)
        await prepare_tools(rec.agent_id)  # its tools list the MCP tools its grants allow
        return {"agent_id": rec.agent_id, "name": rec.name, "parent": rec.parent,
                "depth": rec.depth, "workspace": "/workspace", "limits": rec.limits.model_dump(),
                "taint": sorted(rec.taint), "capabilities": rec.manifest.to_data()["capabilities"],
                "manifest": rec.manifest.to_data(),
                **caps.info(rec.agent_id), **context_window(rec)}  # tokens, grants and the tools they allow

    def context_window(rec: AgentRecord) -> dict[str, Any]:
        # a local engine's slot is small (4096 tokens by default): the loop summarises before it fills;
        # "model" says which model the agent's think calls reach (and a notice for a tiny one)
        try:
            pcfg, _ = inference.config.resolve(rec.manifest.model)
            # no base_url for an agent: the operator's endpoints (which may carry credentials) stay in the kernel
            model = {k_: v for k_, v in describe_model(inference.config, rec.manifest.model).items()
                     if k_ != "base_url"}
        except Exception:
            return {}
        return {"model": model, **({"context_window": pcfg.context} if pcfg.kind == "local" else {})}

    async def sys_exit(call: Call) -> dict[str, Any]:
        rec = caller_rec(call)
        rec.result = call.params.get("result")
        return {"ok": True}

    async def spawn_child(call: Call) -> dict[str, Any]:
        rec = caller_rec(call)
        manifest = parse_manifest(required(call.params, "manifest", dict, "a manifest object"))
        child = await spawner.spawn(manifest, parent=rec, message=call.params.get("message"))
        return {"agent_id": child.agent_id, "name": child.name, "pid": child.pid}

    def told_by(call: Call, rec: AgentRecord, kids: list[AgentRecord]) -> None:
        """What a child tells its parent — its result, and in every summary values it chose (its
        exit status, its system call count) — is as tainted as the child: a label survives being
        passed up (a child that read a web page cannot hand it, or 8 bits of it in its exit
        status, to its parent clean), whichever call passes it (wait, list, stop, kill)."""
        for kid in kids:
            rec.taint |= kid.taint
            call.taint |= kid.taint

    async def wait_child(call: Call) -> dict[str, Any]:
        rec = caller_rec(call)
        child = table.get(required(call.params, "agent_id", str, "a child's agent id"))
        if child.parent != rec.agent_id:
            raise CapabilityDenied(f"{child.agent_id} is not a child of {rec.agent_id}",
                                   reason="not_a_child", agent_id=child.agent_id)
        child = await control.wait(child, timeout_param(call.params, None))
        told = child.result is not None or child.exit is not None
        if told:
            told_by(call, rec, [child])
        return {"agent_id": child.agent_id, "name": child.name, "state": child.state,
                "exit": child.exit.to_data() if child.exit else None, "result": child.result,
                "taint": sorted(child.taint) if told else []}

    async def list_children(call: Call) -> dict[str, Any]:
        rec = caller_rec(call)
        kids = [table.get(c) for c in rec.children]
        told_by(call, rec, kids)
        return {"children": [k.summary() for k in kids]}

    async def stop_child(call: Call) -> dict[str, Any]:
        target = table.find(call.params["agent_id"])
        grace = optional(call.params, "grace", (int, float), "a number of seconds", None)
        if grace is not None and not 0 <= grace <= MAX_GRACE:
            raise InvalidRequest(f'"grace" must be between 0 and {MAX_GRACE:g} seconds', field="grace")
        rec = await control.stop(target, reason="killed", detail=f"stopped by {call.caller.agent_id}",
                                 grace=None if grace is None else float(grace))
        told_by(call, caller_rec(call), [rec])
        return rec.summary()

    async def kill_child(call: Call) -> dict[str, Any]:
        target = table.find(call.params["agent_id"])
        rec = await control.kill(target)
        told_by(call, caller_rec(call), [rec])
        return rec.summary()

    for name, fn in [
        ("agent.spawn", agent_spawn), ("agent.list", agent_list), ("agent.status", agent_status),
        ("agent.wait", agent_wait), ("agent.stop", agent_stop), ("agent.kill", agent_kill),
        ("agent.pause", agent_pause), ("agent.resume", agent_resume), ("agent.logs", agent_logs),
    ]:
        op(name, fn)
    sc("sys.info", sys_info)
    sc("sys.exit", sys_exit)
    sc("agent.spawn_child", spawn_child)
    sc("agent.wait_child", wait_child)
    sc("agent.children", list_children)
    sc("agent.stop_child", stop_child)
    sc("agent.kill_child", kill_child)
