"""The capability check of one system call, in the kernel's order, as one pure function.

``CallGate.check`` does, for the agent ``holder`` presenting its tokens:

1. verify each token (signature, expiry against ``now``, holder) — cached, so cheap;
2. find the first token that permits every request the call needs (``requests_for_tool``;
   for ``file_read_many`` one readable path is enough here — the tool checks each path and
   reports the others as partial failures); none: ``capability_denied`` reason
   ``not_granted`` naming the request;
3. apply the taint policy (``taint_violation`` on refuse; ``ask`` is returned so the kernel
   turns the call into an approval request);
4. charge one invocation of the chosen token (and its ancestors) — atomically with the
   revocation check — unless ``charge=False`` (a pure check charges nothing).

Refusals in 1-3 charge nothing. The kernel then runs the tool and, to honour "no call
succeeds after a revocation returns", may call ``ledger.check(token)`` again before replying.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from agentix.core.caps import Authority, Token
from agentix.core.errors import AgentixError, CapabilityDenied
from agentix.core.grants import Request, requests_for_tool
from agentix.core.ledger import TokenLedger
from agentix.core.paths import resolve_request
from agentix.core.taint import TaintDecision, TaintPolicy, TaintSet, web_fetch_has_payload

__all__ = ["CallGate", "GateResult"]

_CLEAN = TaintSet()


@dataclass(frozen=True, slots=True)
class GateResult:
    token: Token
    requests: tuple[Request, ...]
    taint: TaintDecision

    @property
    def needs_approval(self) -> bool:
        return self.taint.action == "ask"


class CallGate:
    def __init__(self, authority: Authority, ledger: TokenLedger, policy: TaintPolicy | None = None) -> None:
        self.authority = authority
        self.ledger = ledger
        self.policy = policy or TaintPolicy()

    def verified(self, tokens: Iterable[bytes], holder: str, now: float) -> list[Token]:
        """The caller's tokens that verify; raises the first error if none does."""
        out: list[Token] = []
        first: AgentixError | None = None
        for raw in tokens:
            try:
                out.append(self.authority.verify(raw, holder, now))
            except AgentixError as err:
                first = first or err
        if not out:
            raise first or CapabilityDenied("this agent holds no capability", reason="no_token")
        return out

    def check(
        self,
        *,
        tokens: Iterable[bytes],
        holder: str,
        tool: str,
        args: dict[str, Any],
        now: float,
        workspace: str | None = None,
        taint: TaintSet = _CLEAN,
        charge: bool = True,
    ) -> GateResult:
        reqs = tuple(requests_for_tool(tool, args, workspace))
        toks = self.verified(tokens, holder, now)
        need_all = tool != "file_read_many"
        chosen: Token | None = None
        for t in toks:
            ok = all(t.permits(r) for r in reqs) if need_all else any(t.permits(r) for r in reqs)
            if ok and (reqs or need_all):
                chosen = t
                break
        if chosen is None:
            missing = next((r for r in reqs if not any(t.permits(r) for t in toks)), reqs[0] if reqs else None)
            raise CapabilityDenied(
                f"no capability allows {missing}" if missing else f"no capability allows {tool}",
                reason="not_granted", tool=tool, request=str(missing) if missing else None,
            )
        decision = self.policy.decide(
            tool, taint,
            has_payload=tool == "web_fetch" and web_fetch_has_payload(args),
            outside_workspace=_outside(reqs, workspace),
        )
        if decision.action == "refuse":
            raise decision.violation()
        if charge:
            self.ledger.charge(chosen)
        return GateResult(chosen, reqs, decision)


def _outside(reqs: tuple[Request, ...], workspace: str | None) -> bool:
    writes = [r.value for r in reqs if r.kind == "file_write"]
    if not writes:
        return False
    if workspace is None:
        return True
    ws = resolve_request(workspace, None)
    return any(not (p == ws or p.startswith(ws.rstrip("/") + "/")) for p in writes)
