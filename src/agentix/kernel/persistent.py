"""Persistent agents: work delivered to a running loop, answers awaited, state kept.

(``kernel.KernelRoot`` registers it with ``register(pipeline, table=, mail=, store=)`` and starts
the stored agents again with ``KernelRoot.respawn_persistent``.)

    agent.run {agent_id, message, timeout?}     operator: deliver work, wait for the answer
    agent.reply {request_id, result}            syscall: answer an agent.run request
    agent.state_save {key, value}               syscall: keep a JSON value (e.g. the conversation)
    agent.state_load {key}                      syscall: -> {"value": ... | null}

Rules:

* ``agent.run`` sends ``{"task": message, "request_id": ID}`` to the agent's mailbox as the
  operator and waits (default 300 s, at most a day) for the agent's ``agent.reply`` with
  that id; a timeout is ``timeout`` and a later reply is dropped. Only the agent the
  request went to can answer it.
* A persistent agent the operator spawns (a root with ``lifecycle: persistent``) has its
  manifest stored in table ``persistent_agents`` (keyed by name); ``respawn_persistent``
  starts each again when the kernel starts, and an operator ``agent.stop``/``agent.kill``
  removes it (a kernel shutdown does not).
* State is stored in the kernel's store (``store/saved_state.StateStore``, through its one
  writer), table ``agent_state``, with the taint labels of the context that saved it; loading it adds those labels to the
  loading context (a new run that reads state saved while tainted is tainted the same way;
  only an approval or ``untaint`` clears them). It is kept under the
  agent's *stable identity*: ``root:<name>`` for an agent the operator spawned (so a
  persistent agent spawned again under the same name after a kernel restart finds its
  conversation), ``agent:<agent_id>`` for children (no two children share state).
  A value is at most ``MAX_STATE`` bytes as JSON; an agent holds at most ``MAX_KEYS`` keys
  (``store/saved_state``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

from agentix.core.errors import InvalidRequest, Timeout
from agentix.core.manifest import Manifest
from agentix.core.taint import cap_labels
from agentix.kernel.dispatch import Call, EventSink, Pipeline
from agentix.kernel.inference import InferenceService
from agentix.kernel.messaging import Messaging
from agentix.kernel.methods import method
from agentix.kernel.process import AgentRecord, ProcessTable
from agentix.kernel.spawn import Spawner
from agentix.store.saved_state import StateStore
from agentix.tools.thread_work import commit_point, in_thread

__all__ = ["register", "respawn_persistent", "state_identity", "ungranted_model"]

log = logging.getLogger(__name__)

DEFAULT_RUN_TIMEOUT = 300.0


def state_identity(rec: AgentRecord) -> str:
    """Whose state this agent reads and writes (see the module rules)."""
    return f"root:{rec.name}" if rec.parent is None else f"agent:{rec.agent_id}"


async def respawn_persistent(*, store: StateStore, spawner: Spawner, events: EventSink,
                             inference: InferenceService) -> list[str]:
    """Start every stored persistent root agent again (``KernelRoot.respawn_persistent``, called
    after ``kernel.start()``).

    A manifest that no longer spawns (a program gone, isolation unavailable) is recorded as
    ``agent.respawn_failed`` and stays stored, so a later start tries again; the operator
    removes it with ``agent.stop``. Returns the agent ids started."""
    from agentix.core.errors import AgentixError
    from agentix.core.manifest import parse_manifest

    started = []
    for name, data in await asyncio.to_thread(store.persistent_agents):
        try:
            manifest = parse_manifest({**data, "name": name})
            ungranted_model(manifest, inference.config.default_model)
            rec = await spawner.spawn(manifest)
        except AgentixError as err:
            log.warning("persistent agent %s was not started again: %s", name, err.message)
            await events.record("agent.respawn_failed", None, {**err.data, "name": name, "error": err.code,
                                                                 "message": err.message})
            continue
        await events.record("agent.respawned", rec.agent_id, {"name": rec.name})
        started.append(rec.agent_id)
    return started


def ungranted_model(manifest: Manifest, default_model: str | None) -> None:
    """Refuse to start again a stored LLM agent whose manifest grants no model it uses
    (``default_model``: the kernel's, which a built-in LLM program uses when it names none).

    A manifest stored before ``think`` became a capability may name a ``model`` it is not
    granted, or run a built-in LLM program (``module:agentix.agents.*``) on the kernel's
    default model with no ``model`` grant at all; started anyway, it would fail at its first
    ``think``. The refusal names the grant to add."""
    from agentix.core.errors import CapabilityDenied
    from agentix.core.grants import Request
    from agentix.kernel.cap_grants import manifest_groups

    builtin_llm = (manifest.program or "").startswith("module:agentix.agents.")
    model = manifest.model or (default_model if builtin_llm else None)
    if not model:
        return
    if any(g.grants.permits(Request("model", model)) for g in manifest_groups(manifest)):
        return
    provider = model.partition(":")[0]
    raise CapabilityDenied(
        f"persistent agent {manifest.name!r} was stored before models became a capability: it uses "
        f"model {model!r} and its manifest grants no model. Add the capability 'model: {model}' "
        f"(or 'model: {provider}:*') to its manifest and spawn it again (`agentix stop "
        f"{manifest.name}` forgets the stored one)",
        reason="model_not_granted", request=f"model: {model}", grant_to_add=f"model: {model}",
        agent=manifest.name)


def _key(params: dict[str, Any]) -> str:
    key = params.get("key")
    if not isinstance(key, str) or not 0 < len(key) <= 128:
        raise InvalidRequest('"key" must be a string of 1-128 characters', field="key")
    return key


def register(pipeline: Pipeline, *, table: ProcessTable, mail: Messaging, store: StateStore) -> None:
    """Add ``agent.run`` (delivers through ``mail``), ``agent.reply`` and ``agent.state_save/load``
    (kept in ``store``) to ``pipeline``."""
    pending: dict[tuple[str, str], asyncio.Future[Any]] = {}

    async def agent_run(call: Call) -> dict[str, Any]:
        target_id = call.params.get("agent_id")
        if not isinstance(target_id, str):
            raise InvalidRequest('"agent_id" must be an agent id or live name', field="agent_id")
        target = table.find_live(target_id)
        if "message" not in call.params:
            raise InvalidRequest('missing parameter "message"', field="message")
        timeout = call.params.get("timeout", DEFAULT_RUN_TIMEOUT)
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout <= 86400:
            raise InvalidRequest('"timeout" must be a number of seconds in (0, 86400]', field="timeout")
        rid = "req-" + secrets.token_hex(6)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        pending[(target.agent_id, rid)] = fut
        try:
            await mail.deliver(None, target, {"task": call.params["message"], "request_id": rid})
            try:
                result = await asyncio.wait_for(fut, timeout=float(timeout))
            except asyncio.TimeoutError:
                raise Timeout(f"{target.name} did not answer within {timeout:g} s", request_id=rid) from None
        finally:
            pending.pop((target.agent_id, rid), None)
        return {"agent_id": target.agent_id, "request_id": rid, "result": result}

    async def agent_reply(call: Call) -> dict[str, Any]:
        rid = call.params.get("request_id")
        if not isinstance(rid, str):
            raise InvalidRequest('"request_id" must be a string', field="request_id")
        assert call.caller.agent_id is not None
        fut = pending.get((call.caller.agent_id, rid))
        if fut is None or fut.done():
            return {"delivered": False}     # nobody waits (timed out, or not addressed to this agent)
        fut.set_result(call.params.get("result"))
        return {"delivered": True}

    async def state_save(call: Call) -> dict[str, Any]:
        rec = table.get(call.caller.agent_id)
        labels = cap_labels(rec.taint)  # the data is as tainted as the context that saves it (capped)
        ident, key, value = state_identity(rec), _key(call.params), call.params.get("value")

        def save() -> int:
            commit_point()  # its call is still there: never saved after its refusal (tools/thread_work.py)
            return store.save(ident, key, value, labels)

        size = await in_thread(save)
        return {"saved": True, "bytes": size, "taint": labels}

    async def state_load(call: Call) -> dict[str, Any]:
        rec = table.get(call.caller.agent_id)
        value, labels = await asyncio.to_thread(store.load_labelled, state_identity(rec), _key(call.params))
        rec.taint |= set(labels)  # restored with its labels; only approval or untaint clears them
        call.taint |= set(labels)
        return {"value": value, "taint": labels}

    pipeline.register(method("agent.run", agent_run, operator=True))
    pipeline.register(method("agent.reply", agent_reply, agent=True))
    pipeline.register(method("agent.state_save", state_save, agent=True))
    pipeline.register(method("agent.state_load", state_load, agent=True))
