"""System calls about capabilities and approvals: ``cap.list``, ``cap.grant``, ``cap.revoke``,
``cap.check``, ``approval.list``, ``approval.respond`` (operator); ``cap.delegate``,
``sys.untaint`` (agents). The service they act on is ``kernel/cap_service.py``."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from agentix.core.approval import Approval
from agentix.core.caps import Token
from agentix.core.errors import AgentixError, InvalidRequest
from agentix.core.grants import Grant
from agentix.core.taint import TaintSet, web_fetch_has_payload
from agentix.kernel.cap_service import CapabilityService
from agentix.kernel.cap_stage import writes_outside
from agentix.kernel.dispatch import Call, EventSink, Pipeline
from agentix.kernel.lookup import Lookup
from agentix.kernel.methods import VIRTUAL_WORKSPACE, method, tool_resources
from agentix.kernel.param_checks import caller_record, grants_param, limits_params
from agentix.kernel.process import ProcessTable
from agentix.tools.base import ToolRegistry

__all__ = ["register"]


def register(pipeline: Pipeline, *, svc: CapabilityService, table: ProcessTable, tools: ToolRegistry,
             events: EventSink, lookup: Lookup) -> None:
    def op(name: str, fn: Any) -> None:
        pipeline.register(method(name, fn, operator=True))

    def sc(name: str, fn: Any) -> None:
        pipeline.register(method(name, fn, agent=True))

    async def cap_list(call: Call) -> dict[str, Any]:
        aid = call.params.get("agent_id")
        holders = [table.find(aid).agent_id] if isinstance(aid, str) else list(svc.held)
        return {"tokens": [svc.describe_token(t) for h in holders for t in svc.held.get(h, [])]}

    async def cap_grant(call: Call) -> dict[str, Any]:
        rec = table.find_live(call.params.get("agent_id") or "")
        gs = grants_param(call.params)
        mx, exp = limits_params(call.params, svc.clock.now())
        svc.make_room(rec.agent_id, 1)
        tok = svc.authority.mint(rec.agent_id, gs, now=svc.clock.now(), expires_at=exp, max_invocations=mx)
        svc.install(rec.agent_id, [tok])
        await events.record("capability.granted", rec.agent_id, {
            "by": "operator", "token_id": tok.id, "grants": gs.strings(), "max_invocations": mx,
            "expires_at": tok.expires_at})
        return svc.describe_token(tok)

    async def cap_revoke(call: Call) -> dict[str, Any]:
        tid = call.params.get("token_id")
        if not isinstance(tid, str):
            raise InvalidRequest('missing parameter "token_id"', field="token_id")
        holder, _ = svc.find_token(tid)
        svc.revoke(tid)  # ... and every call at work it allowed ends now
        derived = [t.id for toks in svc.held.values() for t in toks if tid in t.chain and t.id != tid]
        await events.record("capability.revoked", holder, {"token_id": tid, "derived": derived,
                                                             "by": "operator"})
        return {"revoked": tid, "derived": derived}

    async def cap_check(call: Call) -> dict[str, Any]:
        """The decision an agent's ``tool.call`` would get now, charging nothing: revoked,
        expired and exhausted tokens answer "denied" exactly as the call would."""
        rec = table.find_live(call.params.get("agent_id") or "")
        name = call.params.get("name")
        args = call.params.get("args") or {}
        if not isinstance(name, str) or not isinstance(args, dict):
            raise InvalidRequest('cap.check needs "name" and "args"', field="name")
        probe = Call(caller=call.caller, method="tool.call", params={}, tool=name, args=args,
                     subject=rec.agent_id, taint=set(rec.taint))
        try:
            auth = svc.decide(rec, tool_resources(lookup, probe, rec), partial=tools.get(name).partial,
                              tool_call=True)
            decision = svc.policy.decide(name, TaintSet.from_strings(rec.taint),
                                         has_payload=name == "web_fetch" and web_fetch_has_payload(args),
                                         outside_workspace=writes_outside(auth, VIRTUAL_WORKSPACE))
            if decision.action == "refuse":
                raise decision.violation()
        except AgentixError as err:
            return {"allowed": False, "error": err.code, "message": err.message, **err.data}
        return {"allowed": True, "token_id": auth.token.id if auth.token else None,
                "requests": auth.resources(),
                "needs_approval": decision.action == "ask" or name in rec.manifest.approval_required
                or any(name in t.approval_required for t in auth.tokens)}

    async def approval_list(call: Call) -> dict[str, Any]:
        now = svc.clock.now()
        show_all = bool(call.params.get("all"))
        items = svc.approvals.all() if show_all else svc.approvals.pending(now)
        return {"approvals": [{**a.to_data(), "args": svc.redact(svc.approvals.args.get(a.id))}
                              for a in items]}

    async def approval_respond(call: Call) -> dict[str, Any]:
        aid = call.params.get("id")
        approve = call.params.get("approve")
        reason = call.params.get("reason")
        if not isinstance(aid, str) or not isinstance(approve, bool):
            raise InvalidRequest('approval.respond needs "id" and "approve" (true/false)', field="id")
        if reason is not None and not isinstance(reason, str):
            raise InvalidRequest('"reason" must be a string', field="reason")
        a = svc.approvals.answer(aid, approve, reason=reason, by="operator", now=svc.clock.now())

        async def recorded_then_in_effect() -> Approval:
            # the answer takes effect (the waiting call runs the tool) only once it is in the
            # log; a cancelled respond (its client gone) still records, then commits, it
            try:
                await events.record("approval.granted" if a.state == "granted" else "approval.denied",
                                    a.agent, {"approval_id": aid, "tool": a.tool, "reason": reason})
            except BaseException:
                svc.approvals.withdraw(aid)
                raise
            return await svc.approvals.commit(a)

        return (await asyncio.shield(recorded_then_in_effect())).to_data()

    me = partial(caller_record, table)

    async def cap_delegate(call: Call) -> dict[str, Any]:
        # authorised by the stage: a live message_send token naming the recipient and, for
        # each grant, a live token covering it (expiry, revocation and holder included)
        rec = me(call)
        auth = call.authorization
        assert auth is not None
        target = table.find_live(call.params.get("to") or "")
        gs = grants_param(call.params)
        mx, exp = limits_params(call.params, svc.clock.now())
        by_owner: dict[str, tuple[Token, list[Grant]]] = {}
        for g in gs:
            owner = auth.token_for(g)
            by_owner.setdefault(owner.id, (owner, []))[1].append(g)
        # constraints only accumulate: the delegator's approval_required travels in the token
        asks = rec.manifest.approval_required
        svc.make_room(target.agent_id, len(by_owner))  # before anything is minted
        toks = [svc.authority.attenuate(owner, glist, now=svc.clock.now(), holder=target.agent_id,
                                        expires_at=exp, max_invocations=mx,
                                        remaining=svc.ledger.remaining(owner), ask=asks)
                for owner, glist in by_owner.values()]
        svc.install(target.agent_id, toks)
        for tok in toks:
            await events.record("capability.delegated", rec.agent_id, {
                "to": target.agent_id, "token_id": tok.id, "parent_id": tok.parent_id,
                "grants": tok.grants.strings()})
        return {"token_id": toks[0].id, "token_ids": [t.id for t in toks], "to": target.agent_id,
                "grants": gs.strings()}

    async def sys_untaint(call: Call) -> dict[str, Any]:
        rec = me(call)
        label = call.params["label"]  # the stage checked it and an untaint grant for its source
        removed = sorted(x for x in rec.taint if x == label or x.partition(":")[0] == label)
        rec.taint.difference_update(removed)
        await events.record("taint.cleared", rec.agent_id, {"label": label, "removed": removed})
        return {"removed": removed, "taint": sorted(rec.taint)}

    for name, fn in [("cap.list", cap_list), ("cap.grant", cap_grant), ("cap.revoke", cap_revoke),
                     ("cap.check", cap_check), ("approval.list", approval_list),
                     ("approval.respond", approval_respond)]:
        op(name, fn)
    sc("cap.delegate", cap_delegate)
    sc("sys.untaint", sys_untaint)
