"""System calls between agents: ``ipc.send``, ``ipc.recv``, ``ipc.broadcast`` (agents) and
``agent.send`` (operator)."""

from __future__ import annotations

from functools import partial
from typing import Any

from agentix.core.errors import InvalidRequest
from agentix.kernel.dispatch import Call, Pipeline
from agentix.kernel.messaging import Messaging
from agentix.kernel.methods import method
from agentix.kernel.param_checks import caller_record, required, timeout_param
from agentix.kernel.process import AgentRecord, ProcessTable

__all__ = ["register"]


def register(pipeline: Pipeline, *, table: ProcessTable, mail: Messaging) -> None:
    caller_rec = partial(caller_record, table)

    async def send(sender: AgentRecord | None, call: Call) -> dict[str, Any]:
        target = table.find_live(required(call.params, "to", str, "an agent id or live name"))
        if "message" not in call.params:
            raise InvalidRequest('missing parameter "message"', field="message")
        return await mail.deliver(sender, target, call.params["message"])

    async def agent_send(call: Call) -> dict[str, Any]:
        return await send(None, call)  # the operator

    async def ipc_send(call: Call) -> dict[str, Any]:
        # the capability stage checked (and charged) a message_send grant naming the target
        return await send(caller_rec(call), call)

    async def ipc_recv(call: Call) -> dict[str, Any]:
        rec = caller_rec(call)
        env = await mail.receive(rec, timeout_param(call.params, 0.0) or 0.0)
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
                await mail.deliver(rec, table.get(aid), call.params["message"])
                delivered.append(aid)
            except Exception as err:  # a full mailbox (or an exit since) must not stop the others
                failed.append({"agent_id": aid, "error": getattr(err, "code", "error")})
        return {"delivered": delivered, "failed": failed}

    pipeline.register(method("agent.send", agent_send, operator=True))
    for name, fn in [("ipc.send", ipc_send), ("ipc.recv", ipc_recv), ("ipc.broadcast", ipc_broadcast)]:
        pipeline.register(method(name, fn, agent=True))
