"""The capability service: the kernel's authority, tokens at spawn, the one decision, approvals.

(Just over 400 lines: the tokens each agent holds, their bound and the one decision over them
are one job; the calls, the stage and the configuration already live apart.)

The layer is four modules: this service (``CapabilityService``), the pipeline stage that asks it
(``kernel/cap_stage.py``), what it reads from the home at start (``kernel/cap_config.py``) and
grants as manifests state them (``kernel/cap_grants.py``); its system calls are in
``kernel/calls_caps.py``.

Rules (docs/security.md has the model):

- Zero permissions by default: an agent holds only the tokens minted for it at spawn from its
  manifest's ``capabilities`` (one root-minted token per grant set for a root agent; for a
  child, ``Authority.delegate``/``attenuate`` of its parent's tokens, so a child never holds
  more than its parent, revoking a parent's token revokes the child's, and invocation counts
  are shared). Every ``tool.call`` — echo included — needs a covering token.
- The holder is the agent id. Grants and requests are in the agent's view: ``{workspace}``
  and relative paths mean ``/workspace``, and ``/workspace/*`` always means the *holder's*
  own workspace; only when a file tool runs is ``/workspace`` mapped to the caller's host
  workspace directory (so a host directory literally named ``/workspace`` cannot be granted).
- ``CapabilityStage`` is a pipeline stage that names no method: the method table
  (``kernel/methods.py``) gives each call's resources; the stage asks the one decision
  (``CapabilityService.decide`` → ``core.authorize``: holder, issue, expiry, revocation,
  invocations, ``max_tool_calls``), applies the taint policy and approvals
  (``approval_required`` of the manifest or of any block of the token used, or a taint rule
  that says ``ask``), commits the charges *before* execution and hands the handler the
  ``Authorization`` (``call.authorization``). Relations (own descendants) are the row's guard.
- Holder binding: ``IssuedTokens`` records which agent each token id was issued to; bytes
  copied from another agent or extended offline name an id not issued to the presenter.
- The kernel's own state (``$AGENTIX_HOME``) is a denied prefix of every decision and is
  fenced at open time (``tools/safe_fs.py``).
- Operator ``tool.invoke`` without ``agent_id`` holds no token: the operator is trusted, and
  since no agent's manifest applies no approval is asked either.
- An agent holds at most ``MAX_HELD`` (256) tokens: a ``cap.delegate`` or ``cap.grant`` past
  it first lets go of the dead ones (revoked, expired, used up), else is ``limit_exceeded``
  before anything is minted (``make_room``).
- When an agent exits all its tokens are revoked (``TokenLedger.revoke_holder``).
- A revocation reaches work already running: ``revoke`` and ``revoke_agent`` end every call
  at work whose decision no longer holds (``kernel/live_calls.py``; so does an expiry).
- The root key lives in ``$AGENTIX_HOME/keys/root.key`` (0600), made at first start.
- Secrets (``[secrets.NAME] env = "VAR", hosts = [...]`` in config.toml, or
  ``$AGENTIX_HOME/keys/secrets.toml`` mode 0600) are bound to the hosts they declare (none
  declared: never injected); they stay in the kernel; ``kernel/vault.py``
  redacts them (and provider API keys) from every reply, error, event and log line.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from agentix.core.approval import DEFAULT_TIMEOUT
from agentix.core.authorize import AuthRequest, Authorization
from agentix.core.caps import Authority, Token
from agentix.core.decision_cache import DecisionCache
from agentix.core.errors import CapabilityDenied, HandoffEscalationDenied, LimitExceeded, NotFound
from agentix.core.grants import MCP_TOOL_PREFIX, Grant, Request, mcp_resource
from agentix.core.hosts import HostPattern
from agentix.core.ledger import IssuedTokens
from agentix.core.manifest import Manifest
from agentix.core.taint import TaintPolicy
from agentix.kernel.approval_book import ApprovalBook
from agentix.kernel.cap_config import (
    kernel_state_prefixes,
    load_root_key,
    load_secret_hosts,
)
from agentix.kernel.cap_grants import (
    DEFAULT_LLM_BUDGET,
    DEFAULT_LLM_CHILD_BUDGET,
    grants_model,
    manifest_groups,
    model_grant,
)
from agentix.kernel.clock import Clock
from agentix.kernel.config import KernelConfig
from agentix.kernel.dispatch import Call
from agentix.kernel.fence import HomeFence
from agentix.kernel.home import Home
from agentix.kernel.live_calls import LiveCalls
from agentix.kernel.process import ProcessTable
from agentix.kernel.trusted_state import StoredIssuedTokens, StoredLedger, lineage_key
from agentix.kernel.vault import Vault
from agentix.store.db import Database

if TYPE_CHECKING:
    from agentix.kernel.process import AgentRecord

__all__ = ["CapabilityService"]


_RESOURCE_TOOLS: dict[str, tuple[str, ...]] = {
    "file_read": ("file_read",), "file_read_many": ("file_read",), "file_list": ("file_read",),
    "grep": ("file_read",), "file_write": ("file_write",), "file_edit": ("file_read", "file_write"),
    "web_fetch": ("network",), "exec": ("exec",), "a2a_call": ("network",),
}


#: the most tokens one agent holds: each of its decisions scans them (cap.delegate, cap.grant)
MAX_HELD = 256


# ---------------------------------------------------------------------------- the service
class CapabilityService:
    """The kernel's authority, ledger, issued-token record, held tokens, approvals and vault.

    ``decide`` is the kernel's only way to ask the authorization question: it feeds the pure
    decision (``core.authorize``) the caller's tokens, the ledger, the issued-token record, the
    clock and the denied prefixes (the kernel's own state). ``clock`` is the kernel's one clock
    (``kernel/clock.py``): token expiry, issue times and approval deadlines all read it."""

    def __init__(self, home: Home, config: KernelConfig, *, db: Database | None, table: ProcessTable,
                 tool_names: Callable[[], list[str]], vault: Vault, secrets: dict[str, str],
                 clock: Clock, taint_policy: TaintPolicy, live_calls: LiveCalls | None = None) -> None:
        self.home = home
        self.clock = clock
        self.config = config
        self.table = table
        self.tool_names = tool_names
        self.vault = vault
        self.authority = Authority(load_root_key(home.keys))
        self.ledger = StoredLedger(db)  # counts, revocations, issued tokens: in the store
        self.issued: IssuedTokens = StoredIssuedTokens(db)
        self._lineage: dict[str, str] = {}  # token id -> lineage, from tokens_for_spawn to install
        self.policy = taint_policy  # config.toml's [taint] (cap_config.load_taint)
        self.held: dict[str, list[Token]] = {}
        self.approvals = ApprovalBook(db, legacy=home.root / "approvals.json", clock=clock)
        self.approval_timeout = float(getattr(config, "approval_timeout", DEFAULT_TIMEOUT))
        self.secrets: dict[str, str] = secrets
        #: the hosts each secret may be sent to (a secret with none is never injected)
        self.secret_hosts: dict[str, tuple[HostPattern, ...]] = load_secret_hosts(home.root)
        #: no file resource may be under these, whatever the grants (the kernel's own state)
        self.denied_prefixes: tuple[str, ...] = kernel_state_prefixes(home.root)
        #: the file tools' open-time fence (lists the home again only when it changed)
        self._fence = HomeFence(home.root)
        #: repeat decisions (same tokens, same resources, nothing revoked, nothing expired, no
        #: counted token) answered from memory: ``core/decision_cache.py`` says why that is exact
        self.decisions = DecisionCache()
        #: the decided calls at work (the pipeline's): every revocation ends those it refuses now
        self.live_calls = live_calls

    # ------------------------------------------------------------------ the decision
    def decide(self, rec: AgentRecord, resources: Sequence[Request | Grant], *,
               tokens: Sequence[Token] | None = None, partial: bool = False,
               charge: str = "per_token", tool_call: bool = False,
               prior: Authorization | None = None) -> Authorization:
        """One decision for ``rec`` over ``resources`` (pure; nothing is charged until
        ``commit``). ``tokens`` defaults to everything the agent was given (dead ones included,
        so a call only a revoked token would allow reports ``capability_revoked``)."""
        toks = list(self.held.get(rec.agent_id, ())) if tokens is None else list(tokens)
        left = None
        if tool_call and rec.budget is not None:
            left = rec.budget.tool_calls_left()
        req = AuthRequest(holder=rec.agent_id, resources=tuple(resources), partial=partial,
                          charge=charge,  # type: ignore[arg-type]
                          denied_prefixes=self.denied_prefixes, tool_calls_left=left,
                          counts_tool_call=tool_call)
        if not toks and req.resources:
            first = req.resources[0]
            raise CapabilityDenied(f"{rec.name} holds no capability; {first} needs one",
                                   reason="no_token", request=str(first))
        return self.decisions.authorize(toks, req, ledger=self.ledger, issued=self.issued,
                                        now=self.clock.now(), prior=prior)

    def commit(self, rec: AgentRecord, auth: Authorization) -> None:
        """Apply a decision's charges (tokens, then the tool-call budget) in one step."""
        self.ledger.commit(auth)
        if auth.counts_tool_call and rec.budget is not None:
            rec.budget.tool_calls += 1

    def reauthorizer(self, call: Call) -> Any:
        """For a tool: a new decision over resources found late (a redirect hop), as the same
        agent, charged to the same call (tokens this call already paid for are not charged
        again). None when the call runs without an agent's authority."""
        first = call.authorization
        if first is None or call.subject is None:
            return None
        rec = self.table.get(call.subject)
        paid = [first]  # every token this call has paid for so far (never charged twice)

        def again(resources: Sequence[Request]) -> Authorization:
            prior = paid[-1]
            auth = self.decide(rec, resources, prior=prior)
            self.ledger.commit(auth)
            call.hops.append(auth)  # the call now rests on it too (``still_live``, its expiry)
            if self.live_calls is not None and any(t.expires_at is not None for t in auth.tokens):
                self.live_calls.rearm(call)
            new = tuple(t for t in auth.tokens if all(t.id != p.id for p in prior.tokens))
            if new:
                paid.append(Authorization(holder=prior.holder, covered=(), tokens=prior.tokens + new))
            return auth

        return again

    def still_live(self, call: Call) -> Callable[[], None] | None:
        """For a call that waits between its decision and its effect (a ``think`` queued
        behind other agents' requests, or back in the queue for a retry): a check that every
        token the call's decision used is still live for its holder (issued, not expired,
        nothing in its chain revoked), charging nothing (the call paid when it was
        committed). It raises the refusal the decision would give now. A call that decided
        again while it ran (``reauthorizer``: a redirect hop) is checked on those decisions
        too. None when the call runs without an agent's authority."""
        first = call.authorization
        if first is None or call.subject is None:
            return None
        rec = self.table.get(call.subject)
        # what the answer reads that can change: revocations (the ledger's epoch only grows)
        # and the clock (the first expiry among its tokens); the holder and issue cannot
        epoch = self.ledger.revocation_epoch()
        until = min((t.expires_at for t in first.tokens if t.expires_at is not None), default=math.inf)

        def check() -> None:
            if not call.hops and self.ledger.revocation_epoch() == epoch and self.clock.now() < until:
                return  # nothing it rests on can have changed: the decision holds
            # the first decision, then every one made while it ran (a redirect hop's host)
            for auth in (first, *call.hops):
                if auth.tokens:
                    self.decide(rec, [c.resource for c in auth.covered], tokens=auth.tokens, prior=auth)

        return check

    def fence(self, workspace: Path | None) -> Any:
        """The open-time fence of the file tools: ``$AGENTIX_HOME`` denied (by dev/inode),
        the caller's own workspace allowed, the key and database files protected wherever
        they are linked (``kernel/fence.py``: listed again only when the home changed)."""
        return self._fence.fence(workspace)

    # ------------------------------------------------------------------ spawn
    def constrain(self, manifest: Manifest, parent: AgentRecord | None) -> Manifest:
        """The manifest the kernel enforces:

        - constraints only accumulate: a child's ``approval_required`` is its parent's plus its
          own (it may add tools, never drop one); the taint policy is the kernel's, the same
          for every agent;
        - a child never gets more than its parent: each of its ``limits`` is at most the
          parent's, its memory quota (``max_records``, ``max_record_bytes``) and its
          ``priority`` at most the parent's (its budget, tool calls included, is
          carved out of the parent's by ``BudgetLedger.carve``, and never resets);
        - an agent granted a model with no token budget gets finite defaults:
          ``DEFAULT_LLM_BUDGET`` for a root, ``DEFAULT_LLM_CHILD_BUDGET`` for a child (carved
          out of its parent's, so that several children fit in a parent's default)."""
        b = manifest.budget
        if grants_model(manifest) and b.max_input_tokens is None and b.max_output_tokens is None:
            dflt = DEFAULT_LLM_BUDGET if parent is None else DEFAULT_LLM_CHILD_BUDGET
            manifest = manifest.model_copy(update={"budget": b.model_copy(update=dflt)})
        if parent is None:
            return manifest
        asks = sorted(set(parent.manifest.approval_required) | set(manifest.approval_required))
        # never more than the parent: its limits (memory, cpu, pids, wall clock, files, disk)
        # bound the child's, and its scheduling priority bounds the child's
        limits = self.config.effective_limits(manifest.limits).capped_by(parent.limits)
        # ... and its episodic memory quota (records, bytes each) at most the parent's
        mem, pmem = manifest.memory, parent.manifest.memory
        memory = mem.model_copy(update={"max_records": min(mem.max_records, pmem.max_records),
                                        "max_record_bytes": min(mem.max_record_bytes, pmem.max_record_bytes)})
        update: dict[str, Any] = {"approval_required": asks, "limits": limits, "memory": memory,
                                  "priority": min(manifest.priority, parent.manifest.priority)}
        return manifest.model_copy(update=update)

    def tokens_for_spawn(self, manifest: Manifest, parent: AgentRecord | None, agent_id: str) -> list[Token]:
        """The tokens a new agent gets: minted from root for a root agent, delegated from the
        parent's *live* tokens for a child (``handoff_escalation_denied`` "parent lacks …" when
        wider; a revoked, expired or exhausted parent token delegates nothing). The manifest's
        ``model`` must be covered by a ``model`` grant. Pure with respect to kernel state:
        nothing is registered until ``install``."""
        now = self.clock.now()
        groups = manifest_groups(manifest)
        model_grant(manifest, groups)
        asks = tuple(manifest.approval_required)
        out: list[Token] = []
        if parent is None:
            persistent = manifest.lifecycle == "persistent"
            for i, g in enumerate(groups):
                exp = now + g.expires if g.expires is not None else None
                out.append(self.authority.mint(agent_id, g.grants, now=now, expires_at=exp,
                                               max_invocations=g.max_invocations, ask=asks))
                if persistent:  # the next run of this agent continues these tokens
                    self._lineage[out[-1].id] = lineage_key(manifest.name, i, g.grants.strings(),
                                                            g.max_invocations)
            return out
        live = self.live_tokens(parent.agent_id, now)
        for g in groups:
            exp = now + g.expires if g.expires is not None else None
            if g.max_invocations is None:
                out.extend(self.authority.delegate(
                    live, g.grants, holder=agent_id, now=now, expires_at=exp,
                    remaining={t.id: self.ledger.remaining(t) for t in live}, ask=asks))
                continue
            owner = next((t for t in live if all(t.covers(x) for x in g.grants)), None)
            if owner is None:  # let delegate name what is missing
                self.authority.delegate(live, g.grants, holder=agent_id, now=now)
                raise HandoffEscalationDenied("no single parent token covers this limited grant set",
                                              reason="parent_lacks_grant")
            out.append(self.authority.attenuate(
                owner, g.grants, now=now, holder=agent_id, expires_at=exp,
                max_invocations=g.max_invocations, remaining=self.ledger.remaining(owner), ask=asks))
        return out

    def make_room(self, agent_id: str, n: int) -> None:
        """Room for ``n`` more tokens held by ``agent_id`` (at most ``MAX_HELD``), before any
        is minted: past the bound its dead tokens (revoked, expired, used up) are let go; if the
        live ones leave no room, ``limit_exceeded`` and nothing changes."""
        if len(self.held.get(agent_id, ())) + n <= MAX_HELD:
            return
        live = self.live_tokens(agent_id)
        if len(live) + n > MAX_HELD:
            raise LimitExceeded(
                f"{agent_id} holds {len(live)} live tokens and {n} more would pass the limit of "
                f"{MAX_HELD} per agent: revoke some it holds (cap.revoke) or give fewer, broader grants",
                limit=MAX_HELD, held=len(live), agent_id=agent_id)
        self.held[agent_id] = live

    def install(self, agent_id: str, tokens: list[Token]) -> None:
        for t in tokens:
            lineage = self._lineage.pop(t.id, None)
            self.issued.issue(t)
            self.ledger.register(t, lineage)  # journals the issued-token record
            if lineage is not None:
                self.ledger.continue_lineage(t, lineage)
        self.held.setdefault(agent_id, []).extend(tokens)

    def revoke(self, token_id: str, reason: str = "operator") -> None:
        """Revoke ``token_id`` (and so every token delegated from it), and end every call at
        work whose decision rested on it."""
        self.ledger.revoke(token_id, reason)
        self._revoked()

    def revoke_agent(self, agent_id: str) -> list[str]:
        """Revoke every token ``agent_id`` holds (it exited or was stopped), and end every call
        at work whose decision rested on one of them or on a token delegated from one."""
        ids = self.ledger.revoke_holder(agent_id)
        if ids:
            self._revoked()
        return ids

    def _revoked(self) -> None:
        if self.live_calls is not None:
            self.live_calls.recheck()

    async def calls_ended(self, subject: str | None = None) -> None:
        """Once every call at work a revocation (or an expiry) ended — those for ``subject``,
        if given — has unwound (``revoke`` ends them by cancelling their tasks; their cleanup
        runs after it returns)."""
        if self.live_calls is not None:
            await self.live_calls.settled(subject)

    def live_tokens(self, agent_id: str, now: float | None = None) -> list[Token]:
        """The agent's tokens that are neither revoked, expired nor exhausted now."""
        now = self.clock.now() if now is None else now
        out = []
        for t in self.held.get(agent_id, []):
            exp = t.expires_at
            if self.ledger.is_revoked(t) or (exp is not None and not now < exp):
                continue
            left = self.ledger.remaining(t)
            if left is not None and left <= 0:
                continue
            out.append(t)
        return out

    def tokens_of(self, agent_id: str) -> list[Token]:
        return self.live_tokens(agent_id)

    def find_token(self, token_id: str) -> tuple[str, Token]:
        for holder, toks in self.held.items():
            for t in toks:
                if t.id == token_id:
                    return holder, t
        raise NotFound(f"no token {token_id!r}", token_id=token_id)

    # ------------------------------------------------------------------ queries
    def describe_token(self, t: Token) -> dict[str, Any]:
        return {"id": t.id, "holder": t.holder, "chain": list(t.chain), "parent_id": t.parent_id,
                "grants": t.grants.strings(), "expires_at": t.expires_at,
                "max_invocations": t.max_invocations, "remaining": self.ledger.remaining(t),
                "revoked": self.ledger.is_revoked(t),
                "approval_required": sorted(t.approval_required)}

    def allowed_tools(self, agent_id: str) -> list[str]:
        toks = self.tokens_of(agent_id)
        names = []
        for name in self.tool_names():
            kinds = _RESOURCE_TOOLS.get(name)
            if name.startswith(MCP_TOOL_PREFIX):  # an MCP server's tool: its mcp: grant
                ok = any(t.permits(Request("mcp", mcp_resource(name))) for t in toks)
            elif kinds is None:
                ok = any(t.permits(Request("tool", name)) for t in toks)
            else:
                ok = any(all(t.grants.of_kind(kd) for kd in kinds) for t in toks)
            if ok:
                names.append(name)
        return names

    def loop_tools(self, agent_id: str) -> list[str]:
        """The LLM loop's own tools the agent's grants allow: spawning needs a ``spawn_child``
        grant (and room below the depth limit), messaging a ``message_send`` grant;
        ``recv_message`` comes with ``message_send`` (an agent that can write to no one has no
        conversation to receive)."""
        toks = self.tokens_of(agent_id)
        names: list[str] = []
        try:
            room = self.table.get(agent_id).depth + 1 <= self.config.max_depth
        except NotFound:
            room = True
        if room and any(t.grants.of_kind("spawn_child") for t in toks):
            names += ["spawn_agent", "spawn_agents"]
        if any(t.grants.of_kind("message_send") for t in toks):
            names += ["send_message", "send_and_wait", "recv_message"]
        return names

    def info(self, agent_id: str) -> dict[str, Any]:
        toks = self.tokens_of(agent_id)
        grants: list[str] = []
        for t in toks:
            for s in t.grants.strings():
                if s not in grants:
                    grants.append(s)
        return {"tokens": [t.id for t in toks], "grants": grants, "tools": self.allowed_tools(agent_id),
                "loop_tools": self.loop_tools(agent_id)}

    # ------------------------------------------------------------------ redaction
    def redact(self, obj: Any) -> Any:
        return self.vault.redact(obj)
