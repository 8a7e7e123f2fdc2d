"""System calls of inference: ``think`` (agents; streamed with ``think.delta``) and
``inference.stats`` (operator). The scheduler and the budgets live in ``kernel/inference.py``."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from agentix.core.errors import InvalidRequest
from agentix.kernel.cap_service import CapabilityService
from agentix.kernel.dispatch import Call, Pipeline
from agentix.kernel.inference import InferenceService
from agentix.kernel.lookup import Lookup
from agentix.kernel.methods import method, model_of
from agentix.kernel.param_checks import caller_record
from agentix.kernel.process import AgentRecord, ProcessTable

__all__ = ["register"]


def register(pipeline: Pipeline, *, table: ProcessTable, inference: InferenceService, lookup: Lookup,
             caps: CapabilityService | None = None) -> None:
    """``caps``: where a queued ``think`` checks, when its turn comes, that the token it was
    decided on is still live (``CapabilityService.still_live``)."""
    caller_rec = partial(caller_record, table)

    async def think(call: Call) -> dict[str, Any]:
        if asyncio.current_task() is None:
            # the RPC layer starts calls eagerly, outside any task (rpc/server.py); an HTTP
            # provider (httpx/anyio) and cancel_agent need one
            return await asyncio.ensure_future(run_think(call))
        return await run_think(call)

    async def run_think(call: Call) -> dict[str, Any]:
        rec = caller_rec(call)
        params = {k_: v for k_, v in call.params.items() if k_ not in ("purpose", "stream_id")}
        # the capability stage authorised exactly this model (model: provider:model grant);
        # a revocation or expiry while the request waits for its turn refuses it then
        live = caps.still_live(call) if caps is not None else None
        resp = await inference.think(rec.agent_id, rec.manifest.priority, params, rec.budget,
                                     model=model_of(lookup, rec, params),
                                     on_delta=stream_deltas(rec, call.params, live), live=live)
        return resp.to_data()

    def stream_deltas(rec: AgentRecord, params: dict[str, Any], live: Any = None) -> Any:
        """With ``stream: true`` and a ``stream_id``, partial text goes to the caller as
        ``think.delta {stream_id, text}`` notifications on its channel, before the reply.
        Each delta first asks ``live``: a stream whose model token was revoked or expired
        meanwhile stops there (the call is refused; nothing more reaches the caller)."""
        sid = params.get("stream_id")
        if not params.get("stream") or sid is None:
            return None
        if not isinstance(sid, (str, int)) or isinstance(sid, bool) or len(str(sid)) > 64:
            raise InvalidRequest('"stream_id" must be a string or integer of at most 64 characters',
                                 field="stream_id")
        if rec.notify is None:
            return None

        def on_delta(text: str) -> None:
            if live is not None:
                live()
            rec.notify("think.delta", {"stream_id": sid, "text": text})

        return on_delta

    async def inference_stats(call: Call) -> dict[str, Any]:
        return inference.stats()

    pipeline.register(method("inference.stats", inference_stats, operator=True))
    pipeline.register(method("think", think, agent=True))
