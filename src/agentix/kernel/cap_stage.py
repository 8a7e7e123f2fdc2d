"""The capability stage of the pipeline: the method's policy, one decision, taint, approval, commit.

Nothing here names a method: the method table (``kernel/methods.py``) says which resources a
call touches (a function of the call and a ``Lookup``), and the stage asks the one decision
(``CapabilityService.decide``), applies the taint policy and approvals, commits the charges
*before* execution and hands the handler the ``Authorization`` (``call.authorization``).
"""

from __future__ import annotations

import secrets as _secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentix.core.approval import Approval, apply, consume
from agentix.core.authorize import Authorization
from agentix.core.errors import AgentixError, ApprovalDenied, CapabilityDenied, InvalidRequest
from agentix.core.grants import Request
from agentix.core.taint import TaintSet, web_fetch_has_payload
from agentix.kernel.cap_grants import decode_token_param
from agentix.kernel.cap_service import CapabilityService
from agentix.kernel.dispatch import Call, EventSink
from agentix.kernel.lookup import Lookup
from agentix.kernel.methods import VIRTUAL_WORKSPACE
from agentix.tools.base import ToolRegistry, check_args

if TYPE_CHECKING:
    from agentix.kernel.process import AgentRecord

__all__ = ["CapabilityStage", "writes_outside"]


@dataclass(eq=False)
class CapabilityStage:
    """Pipeline stage: the method's policy → one decision → taint → approval → commit.

    Nothing here names a method: the method table (``kernel/methods.py``) says which resources
    a call touches; a policy without resources touches none a token governs."""

    svc: CapabilityService
    lookup: Lookup
    tools: ToolRegistry
    events: EventSink

    async def before(self, call: Call) -> None:
        assert call.spec is not None
        pol = call.spec.policy
        if pol.guard is not None:
            if call.caller.is_operator:
                raise InvalidRequest(f"{call.method} is an agent's call")  # never registered so
            try:
                pol.guard(self.lookup, call)
            except AgentixError:
                call.denial_kind = "capability.denied"
                raise
        if pol.resources is None:
            return
        svc, lookup = self.svc, self.lookup
        if call.tool is not None:
            check_args(self.tools.get(call.tool), call.args)  # unknown tool, bad arguments: said first
            call.args_checked = True
            if call.tool in ("file_list", "grep") and "path" not in call.args:
                call.args = {**call.args, "path": "."}
        rec = self._subject(call)
        if rec is None:  # the operator acting as itself is trusted (its socket is the authority)
            if call.params.get("dry_run"):  # ... and a pure check still runs nothing
                call.dry_run = {"allowed": True, "token_id": None, "needs_approval": False,
                                "requests": [str(r) for r in pol.resources(lookup, call, None)]}
            return
        try:
            if call.params.get("token") is None and not svc.held.get(rec.agent_id):
                # holding nothing, the answer does not depend on the arguments: said first
                raise CapabilityDenied(f"{rec.name} holds no capability; {call.tool or call.method} "
                                       "needs one", reason="no_token")
            resources = pol.resources(lookup, call, rec)
            tokens = None
            if call.params.get("token") is not None:  # one presented token: decided like any other
                tokens = [svc.authority.parse(decode_token_param(call.params["token"]))]
            partial = pol.partial or (call.tool is not None and self.tools.get(call.tool).partial)
            auth = svc.decide(rec, resources, tokens=tokens, partial=partial, charge=pol.charge,
                              tool_call=pol.tool_call)
        except AgentixError as err:
            if call.method == "agent.spawn_child":
                call.denial_kind = "capability.denied"
            if call.tool is not None:
                raise err.with_default(tool=call.tool) from None
            raise
        needs = False
        taint_ask = False
        if call.tool is not None:
            if call.taint:  # an untainted context: no taint rule applies (TaintPolicy.decide)
                decision = svc.policy.decide(
                    call.tool, TaintSet.from_strings(call.taint),
                    has_payload=call.tool == "web_fetch" and web_fetch_has_payload(call.args),
                    outside_workspace=writes_outside(auth, VIRTUAL_WORKSPACE),
                )
                if decision.action == "refuse":
                    call.denial_kind = "taint.violation"
                    raise decision.violation().with_default(tool=call.tool)
                taint_ask = decision.action == "ask"
            needs = taint_ask or call.tool in rec.manifest.approval_required or any(
                call.tool in t.approval_required for t in auth.tokens)
        if call.params.get("dry_run"):
            call.dry_run = {"allowed": True, "token_id": auth.token.id if auth.token else None,
                            "needs_approval": needs, "requests": auth.resources()}
            return
        if needs:
            def held() -> None:  # the decision, as it would be now (nothing charged)
                svc.decide(rec, resources, tokens=auth.tokens or None, partial=partial, charge=pol.charge,
                           tool_call=pol.tool_call)

            await self._approve(call, rec, call.params.get("approval"), taint_ask, auth, held)
            # the world may have moved while a human looked: decide again
            auth = svc.decide(rec, resources, tokens=auth.tokens or None, partial=partial,
                              charge=pol.charge, tool_call=pol.tool_call)
        svc.commit(rec, auth)  # before execution: a failing call still uses its invocation
        call.authorization = auth
        # while it runs, a revocation or an expiry that ends this decision ends the call
        call.live = svc.still_live(call)

    async def after(self, call: Call, result: Any, error: BaseException | None) -> None:
        return None

    def _subject(self, call: Call) -> AgentRecord | None:
        """The agent the call acts as: the caller, or for operator ``tool.invoke`` the agent
        named by ``agent_id`` (None: the operator acting as itself)."""
        table = self.lookup.table
        if not call.caller.is_operator:
            assert call.caller.agent_id is not None
            return table.get(call.caller.agent_id)
        aid = call.params.get("agent_id")
        if aid is None:
            return None
        if not isinstance(aid, str):
            raise InvalidRequest('"agent_id" must be an agent id', field="agent_id")
        rec = table.find_live(aid)
        call.subject = rec.agent_id
        call.taint |= rec.taint
        return rec

    async def _approve(self, call: Call, rec: AgentRecord, approved_id: Any, taint_ask: bool,
                       auth: Authorization, held: Any) -> None:
        svc = self.svc
        now = svc.clock.now()
        assert call.tool is not None
        if approved_id is not None:  # a previously granted approval presented again
            if not isinstance(approved_id, str):
                raise InvalidRequest('"approval" must be an approval id', field="approval")
            a = consume(svc.approvals.get(approved_id), rec.agent_id, call.tool, call.args, now=now)
            svc.approvals.put(a)
            return
        svc.approvals.admit(rec.agent_id, now)  # bounded: no agent floods the operator's queue
        aid = "ap-" + _secrets.token_hex(4)
        a = Approval.request(aid, rec.agent_id, call.tool, call.args, now=now, timeout=svc.approval_timeout)
        svc.approvals.add(a, call.args)
        why = "taint" if taint_ask else "approval_required"
        await self.events.record("approval.requested", rec.agent_id, svc.redact({
            "approval_id": aid, "tool": call.tool, "args": call.args, "why": why,
            "deadline": a.deadline, "action_hash": a.action_hash}), tuple(sorted(call.taint)))
        if call.params.get("wait") is False:
            raise ApprovalDenied(f"{call.tool} needs the operator's approval {aid}; call again with "
                                 f'"approval": "{aid}" once it is granted', approval_id=aid,
                                 reason="pending")
        a = await self._wait(call, auth, held, aid, a.deadline - svc.clock.now())
        if a.state == "pending":
            a = apply(a, "expire", now=svc.clock.now(), reason="no answer before the deadline")
            svc.approvals.put(a)
            await self.events.record("approval.expired", rec.agent_id, {"approval_id": aid, "tool": call.tool})
        a = consume(a, rec.agent_id, call.tool, call.args, now=svc.clock.now())
        svc.approvals.put(a)


    async def _wait(self, call: Call, auth: Authorization, held: Any, aid: str, timeout: float) -> Approval:
        """The operator's answer. The wait is live work (``kernel/live_calls.py``): a
        revocation or an expiry that ends the decision meanwhile ends it with that refusal,
        and the request expires (nothing is left for the operator to answer)."""
        svc = self.svc
        if svc.live_calls is None:
            return await svc.approvals.wait(aid, timeout)
        call.live, call.authorization = held, auth  # while it waits only
        try:
            return await svc.live_calls.run(call, lambda _c: svc.approvals.wait(aid, timeout))
        except AgentixError as err:
            a = svc.approvals.get(aid)
            if a.state == "pending":
                svc.approvals.put(apply(a, "expire", now=svc.clock.now(),
                                        reason=f"the call's capability ended while it waited ({err.code})"))
                await self.events.record("approval.expired", call.subject, {
                    "approval_id": aid, "tool": call.tool, "reason": err.code})
            raise
        finally:
            call.live, call.authorization = None, None


def writes_outside(auth: Authorization, workspace: str) -> bool:
    """Whether the call writes outside the caller's workspace (a taint rule may care)."""
    writes = [c.resource.value for c in auth.covered
              if isinstance(c.resource, Request) and c.resource.kind == "file_write"]
    ws = workspace.rstrip("/")
    return any(not (p == ws or p.startswith(ws + "/")) for p in writes)
