"""The kernel's JSON-RPC methods: operator methods and agent system calls.

Operator (Unix socket ``$AGENTIX_HOME/agentixd.sock``)::

    kernel.info  kernel.shutdown  session.bind  agent.spawn  agent.list  agent.status  agent.wait
    agent.stop  agent.kill  agent.pause  agent.resume  agent.logs  agent.send
    tool.list  tool.invoke  events.tail

Agent system calls (the agent's inherited channel)::

    sys.info  sys.exit  tool.call  tool.list  ipc.send  ipc.recv  ipc.broadcast
    agent.spawn_child  agent.wait_child

Capability methods (``cap.*``, ``approval.*``, ``sys.untaint``, ``agent.stop_child``,
``agent.kill_child``) live in ``kernel/capabilities.py``.

Each handler validates its parameters and raises ``InvalidRequest`` naming the field.
"""

from __future__ import annotations

import asyncio
import os
import re
from functools import partial
from typing import TYPE_CHECKING, Any

from agentix.core.errors import CapabilityDenied, InvalidRequest, NotFound
from agentix.core.manifest import parse_manifest
from agentix.kernel.dispatch import Call
from agentix.kernel.methods import method, model_of
from agentix.kernel.process import read_log
from agentix.tools.base import ToolContext

if TYPE_CHECKING:
    from agentix.kernel.kernel import Kernel
    from agentix.kernel.process import AgentRecord

__all__ = ["register"]

MAX_WAIT = 24 * 3600.0
FACE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")

LOG_CHUNK = 256 * 1024


# ---------------------------------------------------------------- parameter helpers
def _req(params: dict[str, Any], key: str, typ: type | tuple[type, ...], what: str) -> Any:
    if key not in params:
        raise InvalidRequest(f'missing parameter "{key}" ({what})', field=key)
    val = params[key]
    if not isinstance(val, typ) or isinstance(val, bool) and typ is not bool:
        raise InvalidRequest(f'parameter "{key}" must be {what}', field=key)
    return val


def _opt(params: dict[str, Any], key: str, typ: type | tuple[type, ...], what: str, default: Any) -> Any:
    if params.get(key) is None:
        return default
    return _req(params, key, typ, what)


def _timeout(params: dict[str, Any], default: float | None) -> float | None:
    t = _opt(params, "timeout", (int, float), "a number of seconds", default)
    if t is not None and (t < 0 or t > MAX_WAIT):
        raise InvalidRequest(f'"timeout" must be between 0 and {MAX_WAIT:g} seconds', field="timeout")
    return None if t is None else float(t)


def register(k: Kernel) -> None:
    p = k.pipeline

    def op(name: str, fn: Any) -> None:
        p.register(method(name, fn, operator=True))

    def sc(name: str, fn: Any) -> None:
        p.register(method(name, fn, agent=True))

    def caller_rec(call: Call) -> AgentRecord:
        assert call.caller.agent_id is not None
        return k.table.get(call.caller.agent_id)

    def agent_param(call: Call, key: str = "agent_id") -> AgentRecord:
        return k.table.find(_req(call.params, key, str, "an agent id or live name"))

    # ------------------------------------------------------------ operator: kernel
    async def kernel_info(call: Call) -> dict[str, Any]:
        return k.info()

    async def kernel_shutdown(call: Call) -> dict[str, Any]:
        k.shutdown_requested.set()
        return {"stopping": True, "pid": os.getpid()}

    # ------------------------------------------------------------ operator: agents
    async def agent_spawn(call: Call) -> dict[str, Any]:
        from agentix.kernel.kernel import parse_spawn_manifest

        manifest, base = parse_spawn_manifest(call.params)
        if call.params.get("name") is not None and not isinstance(call.params["name"], str):
            raise InvalidRequest('parameter "name" must be a string (the agent\'s name)', field="name")
        if isinstance(call.params.get("name"), str):
            manifest = manifest.model_copy(update={"name": parse_manifest(
                {**manifest.to_data(), "name": call.params["name"]}).name})
        rec = await k.spawn(manifest, message=call.params.get("message"), program_base=base)
        return {"agent_id": rec.agent_id, "name": rec.name, "pid": rec.pid, "isolation": rec.isolation}

    async def agent_list(call: Call) -> dict[str, Any]:
        show_all = bool(call.params.get("all", True))
        recs = [r for r in k.table if show_all or r.live]
        recs.sort(key=lambda r: r.created_at)
        return {"agents": [r.summary() for r in recs]}

    async def agent_status(call: Call) -> dict[str, Any]:
        return k.status(agent_param(call))

    async def agent_wait(call: Call) -> dict[str, Any]:
        rec = await k.wait(agent_param(call), _timeout(call.params, None))
        return k.status(rec)

    async def forget_persistent(rec: AgentRecord) -> None:
        # the operator stopped it: a persistent root is not started again at the next start
        # (only a live one: stopping an exited record, e.g. one of an earlier kernel run, must
        # not forget the live agent that now has its name)
        if (rec.live and rec.parent is None and rec.manifest.lifecycle == "persistent"
                and getattr(k, "state_store", None)):
            await asyncio.to_thread(k.state_store.forget_agent, rec.name)

    async def agent_stop(call: Call) -> dict[str, Any]:
        grace = _opt(call.params, "grace", (int, float), "a number of seconds", None)
        rec = agent_param(call)
        await forget_persistent(rec)
        rec = await k.stop(rec, reason="killed", detail="stopped by the operator", grace=grace)
        return rec.summary()

    async def agent_kill(call: Call) -> dict[str, Any]:
        rec = agent_param(call)
        await forget_persistent(rec)
        rec = await k.kill(rec)
        return rec.summary()

    async def agent_pause(call: Call) -> dict[str, Any]:
        rec = agent_param(call)
        await k.pause(rec)
        return rec.summary()

    async def agent_resume(call: Call) -> dict[str, Any]:
        rec = agent_param(call)
        await k.resume(rec)
        return rec.summary()

    async def agent_logs(call: Call) -> dict[str, Any]:
        rec = agent_param(call)
        tail = _opt(call.params, "tail", int, "a number of lines", None)
        head = _opt(call.params, "head", int, "a number of lines", None)
        offset = _opt(call.params, "offset", int, "a byte offset", None)
        wait = _opt(call.params, "wait", (int, float), "seconds to wait for more output", 0)
        max_bytes = min(_opt(call.params, "max_bytes", int, "a byte count", LOG_CHUNK), LOG_CHUNK)
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

    async def agent_send(call: Call) -> dict[str, Any]:
        target = k.table.find_live(_req(call.params, "to", str, "an agent id or live name"))
        if "message" not in call.params:
            raise InvalidRequest('missing parameter "message"', field="message")
        return await k.deliver(None, target, call.params["message"])

    async def events_tail(call: Call) -> dict[str, Any]:
        tail = getattr(k.events, "tail", None)
        if tail is None:
            raise NotFound("this kernel's event sink has no tail; use audit.tail")
        after = _opt(call.params, "after", int, "a sequence number", 0)
        wait = _opt(call.params, "wait", (int, float), "seconds", 0)
        kw = dict(after=after, agent=call.params.get("agent"), kind=call.params.get("kind"),
                  limit=_opt(call.params, "limit", int, "a count", 1000))
        if hasattr(k.events, "sync"):  # see the caller's own no-effect records
            await k.events.sync()
        events = tail(**kw)
        if not events and wait:
            await k.events.wait_for_new(min(float(wait), 60.0))  # type: ignore[attr-defined]
            events = tail(**kw)
        return {"events": events}

    # ------------------------------------------------------------ tools
    async def tool_list(call: Call) -> dict[str, Any]:
        if call.caller.agent_id is not None:  # an agent's list: the MCP servers its grants name, started
            await k.mcp.prepare_for(call.caller.agent_id)
        return {"tools": k.tools.describe()}

    async def run_tool(call: Call, subject: AgentRecord | None) -> dict[str, Any]:
        assert call.tool is not None
        spec = k.tools.get(call.tool)
        ctx = ToolContext(services=k, call=call, agent_id=subject.agent_id if subject else None,
                          workspace=subject.workspace if subject else None,
                          authorization=call.authorization, reauthorize=k.caps.reauthorizer(call),
                          make_fence=partial(k.caps.fence, subject.workspace if subject else None))
        return await spec.run(ctx, call.args)  # checks the arguments; only the family leaves

    async def tool_call(call: Call) -> dict[str, Any]:
        if call.dry_run is not None:  # a pure check: nothing charged, nothing run
            return call.dry_run
        return await run_tool(call, caller_rec(call))

    async def tool_invoke(call: Call) -> dict[str, Any]:
        if call.dry_run is not None:
            return call.dry_run
        # the capability stage bound call.subject to the named agent (and decided as it)
        subject = k.table.get(call.subject) if call.subject is not None else None
        return await run_tool(call, subject)

    # ------------------------------------------------------------ agent system calls
    async def sys_info(call: Call) -> dict[str, Any]:
        rec = caller_rec(call)
        await k.mcp.prepare_for(rec.agent_id)  # its tools list the MCP tools its grants allow
        return {"agent_id": rec.agent_id, "name": rec.name, "parent": rec.parent,
                "depth": rec.depth, "workspace": "/workspace", "limits": rec.limits.model_dump(),
                "taint": sorted(rec.taint), "capabilities": rec.manifest.to_data()["capabilities"],
                "manifest": rec.manifest.to_data(),
                **k.caps.info(rec.agent_id), **context_window(rec)}  # tokens, grants and the tools they allow

    def context_window(rec: AgentRecord) -> dict[str, Any]:
        # a local engine's slot is small (4096 tokens by default): the loop summarises before it fills;
        # "model" says which model the agent's think calls reach (and a notice for a tiny one)
        from agentix.llm.config import describe_model

        try:
            pcfg, _ = k.inference.config.resolve(rec.manifest.model)
            # no base_url for an agent: the operator's endpoints (which may carry credentials) stay in the kernel
            model = {k_: v for k_, v in describe_model(k.inference.config, rec.manifest.model).items()
                     if k_ != "base_url"}
        except Exception:
            return {}
        return {"model": model, **({"context_window": pcfg.context} if pcfg.kind == "local" else {})}

    async def sys_exit(call: Call) -> dict[str, Any]:
        rec = caller_rec(call)
        rec.result = call.params.get("result")
        return {"ok": True}

    async def ipc_send(call: Call) -> dict[str, Any]:
        rec = caller_rec(call)
        target = k.table.find_live(_req(call.params, "to", str, "an agent id or live name"))
        if "message" not in call.params:
            raise InvalidRequest('missing parameter "message"', field="message")
        # the capability stage checked (and charged) a message_send grant naming the target
        return await k.deliver(rec, target, call.params["message"])

    async def ipc_recv(call: Call) -> dict[str, Any]:
        rec = caller_rec(call)
        env = await k.receive(rec, _timeout(call.params, 0.0) or 0.0)
        return {"message": env}

    async def ipc_broadcast(call: Call) -> dict[str, Any]:
        rec = caller_rec(call)
        if "message" not in call.params:
            raise InvalidRequest('missing parameter "message"', field="message")
        delivered, failed = [], []
        auth = call.authorization
        assert auth is not None  # decided by the capability stage (one invocation per recipient)
        # exactly the agents the decision was made over (bound by the method table), never
        # worked out again: an agent spawned since with a granted name was not decided on
        for aid, res in call.recipients:
            if not auth.allows(res):
                continue  # only the agents its live message_send grants name
            try:
                await k.deliver(rec, k.table.get(aid), call.params["message"])
                delivered.append(aid)
            except Exception as err:  # a full mailbox (or an exit since) must not stop the others
                failed.append({"agent_id": aid, "error": getattr(err, "code", "error")})
        return {"delivered": delivered, "failed": failed}

    async def spawn_child(call: Call) -> dict[str, Any]:
        rec = caller_rec(call)
        manifest = parse_manifest(_req(call.params, "manifest", dict, "a manifest object"))
        child = await k.spawn(manifest, parent=rec, message=call.params.get("message"))
        return {"agent_id": child.agent_id, "name": child.name, "pid": child.pid}

    async def wait_child(call: Call) -> dict[str, Any]:
        rec = caller_rec(call)
        child = k.table.get(_req(call.params, "agent_id", str, "a child's agent id"))
        if child.parent != rec.agent_id:
            raise CapabilityDenied(f"{child.agent_id} is not a child of {rec.agent_id}",
                                   reason="not_a_child", agent_id=child.agent_id)
        child = await k.wait(child, _timeout(call.params, None))
        return {"agent_id": child.agent_id, "name": child.name, "state": child.state,
                "exit": child.exit.to_data() if child.exit else None, "result": child.result}

    async def list_children(call: Call) -> dict[str, Any]:
        rec = caller_rec(call)
        return {"children": [k.table.get(c).summary() for c in rec.children]}

    # ------------------------------------------------------------ inference
    async def think(call: Call) -> dict[str, Any]:
        if asyncio.current_task() is None:
            # the RPC layer starts calls eagerly, outside any task (rpc/server.py); an HTTP
            # provider (httpx/anyio) and cancel_agent need one
            return await asyncio.ensure_future(run_think(call))
        return await run_think(call)

    async def run_think(call: Call) -> dict[str, Any]:
        rec = caller_rec(call)
        params = {k_: v for k_, v in call.params.items() if k_ not in ("purpose", "stream_id")}
        # the capability stage authorised exactly this model (model: provider:model grant)
        resp = await k.inference.think(rec.agent_id, rec.manifest.priority, params, rec.budget,
                                       model=model_of(k, rec, params), on_delta=stream_deltas(rec, call.params))
        return resp.to_data()

    def stream_deltas(rec: AgentRecord, params: dict[str, Any]) -> Any:
        """With ``stream: true`` and a ``stream_id``, partial text goes to the caller as
        ``think.delta {stream_id, text}`` notifications on its channel, before the reply."""
        sid = params.get("stream_id")
        if not params.get("stream") or sid is None:
            return None
        if not isinstance(sid, (str, int)) or isinstance(sid, bool) or len(str(sid)) > 64:
            raise InvalidRequest('"stream_id" must be a string or integer of at most 64 characters',
                                 field="stream_id")
        if rec.notify is None:
            return None

        def on_delta(text: str) -> None:
            rec.notify("think.delta", {"stream_id": sid, "text": text})

        return on_delta

    async def inference_stats(call: Call) -> dict[str, Any]:
        return k.inference.stats()

    # ------------------------------------------------------------ operator faces
    async def session_bind(call: Call) -> dict[str, Any]:
        """Name this operator connection's face for the audit log, optionally read-only
        (``dispatch.OperatorSession`` holds the result; it only narrows)."""
        if call.caller.is_face:
            raise InvalidRequest(f"this connection is already bound as {call.caller.label()!r}; a "
                                 "connection binds once (open a new one)", field="face")
        face = _req(call.params, "face", str, "the face's name, e.g. mcp")
        if not FACE_NAME.fullmatch(face) or face == "operator":
            raise InvalidRequest(f'"face" must be a short lowercase name such as mcp (1-32 of a-z, 0-9, '
                                 f'- and _, not "operator"), got {face!r}', field="face")
        read_only = _opt(call.params, "read_only", bool, "true or false", False)
        call.event_data = {"face": face, "read_only": read_only}
        # what this connection may call from now on, derived from the method table's policies
        allowed = {spec.name: spec.policy.durability for spec in p.specs() if spec.operator
                   and not (read_only and spec.policy.durability == "effect")}
        return {"caller": face, "read_only": read_only, "methods": allowed}

    for name, fn in [
        ("inference.stats", inference_stats),
        ("kernel.info", kernel_info), ("kernel.shutdown", kernel_shutdown),
        ("agent.spawn", agent_spawn), ("agent.list", agent_list), ("agent.status", agent_status),
        ("agent.wait", agent_wait), ("agent.stop", agent_stop), ("agent.kill", agent_kill),
        ("agent.pause", agent_pause), ("agent.resume", agent_resume), ("agent.logs", agent_logs),
        ("agent.send", agent_send), ("events.tail", events_tail), ("session.bind", session_bind),
    ]:
        op(name, fn)
    p.register(method("tool.list", tool_list, operator=True, agent=True))
    op("tool.invoke", tool_invoke)
    sc("sys.info", sys_info)
    sc("sys.exit", sys_exit)
    sc("tool.call", tool_call)
    sc("ipc.send", ipc_send)
    sc("ipc.recv", ipc_recv)
    sc("ipc.broadcast", ipc_broadcast)
    sc("agent.spawn_child", spawn_child)
    sc("agent.wait_child", wait_child)
    sc("agent.children", list_children)
    sc("think", think)
    if getattr(k, "audit", None) is not None:
        from agentix.kernel import audit as audit_api

        audit_api.register(k, k.audit)
