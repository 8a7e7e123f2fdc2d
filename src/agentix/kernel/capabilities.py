"""The capability layer of the kernel: tokens at spawn, the check stage, approvals, the vault.

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
  fenced at open time (``tools/fs.py``).
- Operator ``tool.invoke`` without ``agent_id`` holds no token: the operator is trusted, and
  since no agent's manifest applies no approval is asked either.
- When an agent exits all its tokens are revoked (``TokenLedger.revoke_holder``).
- The root key lives in ``$AGENTIX_HOME/keys/root.key`` (0600), made at first start.
- Secrets (``[secrets.NAME] env = "VAR", hosts = [...]`` in config.toml, or
  ``$AGENTIX_HOME/keys/secrets.toml`` mode 0600) are bound to the hosts they declare (none
  declared: never injected); they stay in the kernel; ``kernel/vault.py``
  redacts them (and provider API keys) from every reply, error, event and log line.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import logging
import os
import secrets as _secrets
import stat
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from agentix.core.approval import DEFAULT_TIMEOUT, Approval, apply, consume
from agentix.core.caps import Authority, Token, generate_root_key
from agentix.core.errors import (
    AgentixError,
    ApprovalDenied,
    CapabilityDenied,
    HandoffEscalationDenied,
    InvalidRequest,
    NotFound,
)
from agentix.core.authorize import AuthRequest, Authorization, authorize
from agentix.core.grants import (
    MCP_TOOL_PREFIX,
    Grant,
    GrantSet,
    Request,
    mcp_resource,
    parse_grants,
    parse_secret_hosts,
)
from agentix.core.hosts import HostPattern
from agentix.core.ledger import IssuedTokens
from agentix.core.manifest import CapabilityEntry, Manifest
from agentix.core.taint import DEFAULT_RULES, TaintPolicy, TaintSet, parse_rules, web_fetch_has_payload
from agentix.kernel.dispatch import Call
from agentix.kernel.trusted_state import DurableStateStage, StoredIssuedTokens, StoredLedger, lineage_key
from agentix.store.db import Database
from agentix.store.state import ApprovalRecord, ApprovalStore

if TYPE_CHECKING:
    from agentix.kernel.kernel import Kernel
    from agentix.kernel.process import AgentRecord

__all__ = [
    "VIRTUAL_WORKSPACE",
    "ApprovalBook",
    "CapabilityService",
    "CapabilityStage",
    "GrantGroup",
    "decode_token_param",
    "encode_token",
    "install",
    "load_root_key",
    "load_secret_hosts",
    "load_secrets",
    "load_taint_policy",
    "manifest_groups",
]

log = logging.getLogger(__name__)

VIRTUAL_WORKSPACE = "/workspace"
ROOT_KEY_FILE = "root.key"
#: tools whose requests are resources (file paths, hosts, programs), not ``tool: NAME``
_RESOURCE_TOOLS: dict[str, tuple[str, ...]] = {
    "file_read": ("file_read",), "file_read_many": ("file_read",), "file_list": ("file_read",),
    "grep": ("file_read",), "file_write": ("file_write",), "file_edit": ("file_read", "file_write"),
    "web_fetch": ("network",), "exec": ("exec",), "a2a_call": ("network",),
}


# ---------------------------------------------------------------------------- key and vault
def load_root_key(keys_dir: Path) -> bytes:
    """The kernel's root private key: made (0600, O_EXCL) at first start, loaded after."""
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = keys_dir / ROOT_KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077:
            raise InvalidRequest(f"{path} must be a regular file readable by its owner only (0600)",
                                 field="root.key") from None
        return path.read_bytes()
    key = generate_root_key()
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


def load_secrets(home_root: Path, environ: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """``NAME -> value`` from config.toml ``[secrets]`` (``NAME = "env:VAR"`` or
    ``[secrets.NAME] env = "VAR", hosts = [...]``; a literal value is refused: values belong in
    keys/secrets.toml, mode 0600) and ``keys/secrets.toml`` (``NAME = "value"`` or
    ``[NAME] value = "...", hosts = [...]``)."""
    return _load_vault(home_root, environ)[0]


def load_secret_hosts(home_root: Path) -> dict[str, tuple[HostPattern, ...]]:
    """``NAME -> the hosts it may be sent to`` (``hosts = [...]`` in either file; both lists
    count). A secret with none is refused for injection (``check_secret_host``)."""
    return _load_vault(home_root, {})[1]


def _load_vault(home_root: Path, environ: Any) -> tuple[dict[str, str], dict[str, tuple[HostPattern, ...]]]:
    out: dict[str, str] = {}
    hosts: dict[str, tuple[HostPattern, ...]] = {}
    cfg = home_root / "config.toml"
    if cfg.exists():
        try:
            table = tomllib.loads(cfg.read_text()).get("secrets", {})
        except tomllib.TOMLDecodeError as err:
            raise InvalidRequest(f"{cfg}: not valid TOML: {err}", field="config.toml") from None
        for name, spec in table.items():
            if isinstance(spec, dict):  # [secrets.NAME] env = "VAR", hosts = [...]
                if "hosts" in spec:
                    hosts[name] = hosts.get(name, ()) + parse_secret_hosts(name, spec["hosts"])
                extra = set(spec) - {"env", "hosts"}
                env = spec.get("env")
                if extra or (env is not None and not isinstance(env, str)):
                    raise InvalidRequest(f"{cfg}: [secrets.{name}] takes env = \"VARIABLE\" and hosts = "
                                         "[...] only (put values in keys/secrets.toml, mode 0600)",
                                         field=f"secrets.{name}")
                spec = f"env:{env}" if env else None
                if spec is None:
                    continue
            if not isinstance(spec, str) or not spec.startswith("env:"):
                raise InvalidRequest(f"{cfg}: [secrets] {name} must be \"env:VARIABLE\" (put values "
                                     "in keys/secrets.toml, mode 0600)", field=f"secrets.{name}")
            val = environ.get(spec[4:])
            if val:
                out[name] = val
    vault = home_root / "keys" / "secrets.toml"
    if vault.exists():
        st = vault.stat()
        if st.st_mode & 0o077:
            raise InvalidRequest(f"{vault} must be mode 0600", field="secrets.toml")
        try:
            data = tomllib.loads(vault.read_text())
        except tomllib.TOMLDecodeError as err:
            raise InvalidRequest(f"{vault}: not valid TOML: {err}", field="secrets.toml") from None
        for k_, v in data.items():
            if isinstance(v, dict):  # [NAME] value = "...", hosts = [...]
                if "hosts" in v:
                    hosts[str(k_)] = hosts.get(str(k_), ()) + parse_secret_hosts(str(k_), v["hosts"])
                if isinstance(v.get("value"), (str, int)):
                    out[str(k_)] = str(v["value"])
            elif isinstance(v, (str, int)):
                out[str(k_)] = str(v)
    return out, hosts


def load_taint_policy(home_root: Path) -> TaintPolicy:
    """``[taint] rules = [{tool, sources, action, when}]`` in config.toml; the defaults otherwise
    (``extend = true`` keeps the defaults after the configured rules)."""
    cfg = home_root / "config.toml"
    if not cfg.exists():
        return TaintPolicy()
    try:
        section = tomllib.loads(cfg.read_text()).get("taint", {})
    except tomllib.TOMLDecodeError:
        return TaintPolicy()
    rules = parse_rules(section.get("rules", []))
    if not rules:
        return TaintPolicy()
    return TaintPolicy(rules + (DEFAULT_RULES if section.get("extend", True) else ()))


# ---------------------------------------------------------------------------- grants in manifests
@dataclass(frozen=True)
class GrantGroup:
    """One token's worth of grants from a manifest: strings, plus optional limits."""

    grants: GrantSet
    max_invocations: int | None = None
    expires: float | None = None  # seconds from now


def manifest_groups(manifest: Manifest) -> list[GrantGroup]:
    """The manifest's capabilities as grant groups: all plain strings together, each mapping
    entry alone (with its limits). Raises ``invalid_request`` for a bad grant string."""
    caps = manifest.capabilities
    items: list[Any] = [caps] if isinstance(caps, str) else list(caps)
    plain = [c for c in items if isinstance(c, str)]
    out: list[GrantGroup] = []
    if plain:
        out.append(GrantGroup(parse_grants(plain, workspace=VIRTUAL_WORKSPACE)))
    for c in items:
        if isinstance(c, CapabilityEntry):
            out.append(GrantGroup(parse_grants(c.grant_strings(), workspace=VIRTUAL_WORKSPACE),
                                  c.max_invocations, c.expires))
    return [g for g in out if len(g.grants)]


# ---------------------------------------------------------------------------- approvals
class ApprovalBook:
    """Approvals the kernel knows about (pending and answered), with a waiter per pending one.

    Every change is written to the store (table ``approvals``, through the one writer, queued
    in order: the audit record that follows a change is durable only after it), so pending
    approvals survive a restart. A ``legacy`` ``approvals.json`` from an older kernel is
    imported once and removed.
    """

    def __init__(self, db: Database | None = None, legacy: Path | None = None) -> None:
        self._items: dict[str, Approval] = {}
        self._waiters: dict[str, asyncio.Event] = {}
        self.args: dict[str, dict[str, Any]] = {}  # what the operator is shown
        self.db = db
        if db is not None:
            self.restore([r.request for r in ApprovalStore(db).all()])
            if legacy is not None and legacy.exists():
                self._import(legacy)

    def _import(self, legacy: Path) -> None:
        import orjson

        assert self.db is not None
        records = [d for d in orjson.loads(legacy.read_bytes()) if d.get("id") not in self._items]
        self.restore(records)
        for d in records:
            self._save(self._items[d["id"]]).result()  # durable before the file goes
        legacy.unlink()
        log.info("imported %d approvals from %s into the store", len(records), legacy)

    def _save(self, a: Approval) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if self.db is None:
            fut.set_result(None)
            return fut
        from agentix.core.audit import format_ts

        rec = ApprovalRecord(a.id, a.agent, {**a.to_data(), "args": self.args.get(a.id)}, a.state,
                             format_ts(a.created_at), format_ts(a.deadline))
        fut = self.db.submit(lambda t: ApprovalStore.put_in(t, rec))
        fut.add_done_callback(_log_store_failure)
        return fut

    def add(self, a: Approval, args: dict[str, Any]) -> None:
        self._items[a.id] = a
        self._waiters[a.id] = asyncio.Event()
        self.args[a.id] = args
        self._save(a)

    def get(self, approval_id: str) -> Approval:
        try:
            return self._items[approval_id]
        except KeyError:
            raise NotFound(f"no approval {approval_id!r}", approval_id=approval_id) from None

    def put(self, a: Approval) -> None:
        self._items[a.id] = a
        self._save(a)
        if a.state != "pending" and a.id in self._waiters:
            self._waiters[a.id].set()

    def resolve(self, approval_id: str, approve: bool, *, reason: str | None, by: str, now: float) -> Approval:
        a = apply(self.get(approval_id), "grant" if approve else "deny", now=now, reason=reason, by=by)
        self.put(a)
        return a

    async def wait(self, approval_id: str, timeout: float) -> Approval:
        ev = self._waiters.setdefault(approval_id, asyncio.Event())
        try:
            await asyncio.wait_for(ev.wait(), timeout=max(0.0, timeout))
        except asyncio.TimeoutError:
            pass
        return self.get(approval_id)

    def pending(self, now: float) -> list[Approval]:
        return [a for a in self._items.values() if a.state == "pending" and now < a.deadline]

    def all(self) -> list[Approval]:
        return list(self._items.values())

    def snapshot(self) -> list[dict[str, Any]]:
        return [{**a.to_data(), "args": self.args.get(a.id)} for a in self._items.values()]

    def restore(self, records: list[dict[str, Any]]) -> None:
        for d in records:
            d = dict(d)
            args = d.pop("args", None) or {}
            a = Approval.from_data(d)
            self._items[a.id] = a
            self._waiters[a.id] = asyncio.Event()
            self.args[a.id] = args


def _log_store_failure(fut: concurrent.futures.Future[Any]) -> None:
    if fut.exception() is not None:
        log.error("the store refused an approval write: %r", fut.exception())


# ---------------------------------------------------------------------------- the service
class CapabilityService:
    """The kernel's authority, ledger, issued-token record, held tokens, approvals and vault.

    ``decide`` is the kernel's only way to ask the authorization question: it feeds the pure
    decision (``core.authorize``) the caller's tokens, the ledger, the issued-token record, the
    clock and the denied prefixes (the kernel's own state)."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self.authority = Authority(load_root_key(k.home.keys))
        db = k.db  # the kernel's one store
        self.ledger = StoredLedger(db)  # counts, revocations, issued tokens: in the store
        self.issued: IssuedTokens = StoredIssuedTokens(db)
        self._lineage: dict[str, str] = {}  # token id -> lineage, from tokens_for_spawn to install
        self.policy = load_taint_policy(k.home.root)
        self.held: dict[str, list[Token]] = {}
        self.approvals = ApprovalBook(db, legacy=k.home.root / "approvals.json")
        self.approval_timeout = float(getattr(k.config, "approval_timeout", DEFAULT_TIMEOUT))
        self.secrets: dict[str, str] = load_secrets(k.home.root, os.environ)
        #: the hosts each secret may be sent to (a secret with none is never injected)
        self.secret_hosts: dict[str, tuple[HostPattern, ...]] = load_secret_hosts(k.home.root)
        #: no file resource may be under these, whatever the grants (the kernel's own state)
        self.denied_prefixes: tuple[str, ...] = kernel_state_prefixes(k.home.root)
        self._fence: Any = None  # kernel/fence.py's HomeFence, made on first use

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
        return authorize(toks, req, ledger=self.ledger, issued=self.issued, now=time.time(),
                         prior=prior)

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
        rec = self.k.table.get(call.subject)
        paid = [first]  # every token this call has paid for so far (never charged twice)

        def again(resources: Sequence[Request]) -> Authorization:
            prior = paid[-1]
            auth = self.decide(rec, resources, prior=prior)
            self.ledger.commit(auth)
            new = tuple(t for t in auth.tokens if all(t.id != p.id for p in prior.tokens))
            if new:
                paid.append(Authorization(holder=prior.holder, covered=(), tokens=prior.tokens + new))
            return auth

        return again

    def fence(self, workspace: Path | None) -> Any:
        """The open-time fence of the file tools: ``$AGENTIX_HOME`` denied (by dev/inode),
        the caller's own workspace allowed, the key and database files protected wherever
        they are linked (``kernel/fence.py``: listed again only when the home changed)."""
        if self._fence is None:
            from agentix.kernel.fence import HomeFence

            self._fence = HomeFence(self.k.home.root)
        return self._fence.fence(workspace)

    # ------------------------------------------------------------------ spawn
    def constrain(self, manifest: Manifest, parent: AgentRecord | None) -> Manifest:
        """The manifest the kernel enforces:

        - constraints only accumulate: a child's ``approval_required`` is its parent's plus its
          own (it may add tools, never drop one); the taint policy is the kernel's, the same
          for every agent;
        - a child never gets more than its parent: each of its ``limits`` is at most the
          parent's, its ``priority`` at most the parent's (its budget, tool calls included, is
          carved out of the parent's by ``BudgetLedger.carve``, and never resets);
        - an agent granted a model with no token budget gets finite defaults:
          ``DEFAULT_LLM_BUDGET`` for a root, ``DEFAULT_LLM_CHILD_BUDGET`` for a child (carved
          out of its parent's, so that several children fit in a parent's default)."""
        b = manifest.budget
        if _grants_model(manifest) and b.max_input_tokens is None and b.max_output_tokens is None:
            dflt = DEFAULT_LLM_BUDGET if parent is None else DEFAULT_LLM_CHILD_BUDGET
            manifest = manifest.model_copy(update={"budget": b.model_copy(update=dflt)})
        if parent is None:
            return manifest
        asks = sorted(set(parent.manifest.approval_required) | set(manifest.approval_required))
        # never more than the parent: its limits (memory, cpu, pids, wall clock, files, disk)
        # bound the child's, and its scheduling priority bounds the child's
        limits = self.k.config.effective_limits(manifest.limits).capped_by(parent.limits)
        update: dict[str, Any] = {"approval_required": asks, "limits": limits,
                                  "priority": min(manifest.priority, parent.manifest.priority)}
        return manifest.model_copy(update=update)

    def tokens_for_spawn(self, manifest: Manifest, parent: AgentRecord | None, agent_id: str) -> list[Token]:
        """The tokens a new agent gets: minted from root for a root agent, delegated from the
        parent's *live* tokens for a child (``handoff_escalation_denied`` "parent lacks …" when
        wider; a revoked, expired or exhausted parent token delegates nothing). The manifest's
        ``model`` must be covered by a ``model`` grant. Pure with respect to kernel state:
        nothing is registered until ``install``."""
        now = time.time()
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

    def install(self, agent_id: str, tokens: list[Token]) -> None:
        for t in tokens:
            lineage = self._lineage.pop(t.id, None)
            self.issued.issue(t)
            self.ledger.register(t, lineage)  # journals the issued-token record
            if lineage is not None:
                self.ledger.continue_lineage(t, lineage)
        self.held.setdefault(agent_id, []).extend(tokens)

    def revoke_agent(self, agent_id: str) -> list[str]:
        return self.ledger.revoke_holder(agent_id)

    def live_tokens(self, agent_id: str, now: float | None = None) -> list[Token]:
        """The agent's tokens that are neither revoked, expired nor exhausted now."""
        now = time.time() if now is None else now
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
        for name in self.k.tools.names():
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
            room = self.k.table.get(agent_id).depth + 1 <= self.k.config.max_depth
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
        vault = getattr(self.k, "vault", None)
        if vault is not None:
            return vault.redact(obj)
        if not self.secrets:
            return obj
        from agentix.tools.secrets import redact

        return redact(obj, self.secrets)


#: the budget of a root agent that holds a model grant and set no token limits (docs/inference.md)
DEFAULT_LLM_BUDGET: dict[str, int] = {"max_input_tokens": 2_000_000, "max_output_tokens": 200_000}
#: the same for a child (a tenth: ten children with defaults fit in a root's default)
DEFAULT_LLM_CHILD_BUDGET: dict[str, int] = {"max_input_tokens": 200_000, "max_output_tokens": 20_000}


def _grants_model(manifest: Manifest) -> bool:
    try:
        return any(g.grants.of_kind("model") for g in manifest_groups(manifest))
    except AgentixError:
        return False  # a bad grant string is refused later, with its own message


def kernel_state_prefixes(home_root: Path) -> tuple[str, ...]:
    """The directories no grant reaches: ``$AGENTIX_HOME`` (keys, database, secrets,
    approvals, every agent's workspace and log), as written and as resolved."""
    out = [os.path.normpath(str(home_root.absolute()))]
    try:
        real = os.path.realpath(home_root)
    except OSError:
        real = out[0]
    if real not in out:
        out.append(real)
    return tuple(out)


def model_grant(manifest: Manifest, groups: list[GrantGroup]) -> None:
    """Refuse a manifest whose ``model`` no ``model`` grant of its own covers, naming the grant."""
    if not manifest.model:
        return
    req = Request("model", manifest.model)
    if any(g.grants.permits(req) for g in groups):
        return
    raise CapabilityDenied(
        f"manifest model {manifest.model!r} is not granted: add the capability "
        f"'model: {manifest.model}' (or e.g. 'model: {manifest.model.partition(':')[0]}:*')",
        reason="model_not_granted", request=str(req), field="capabilities")


def decode_token_param(value: Any) -> bytes:
    if not isinstance(value, str) or not value:
        raise InvalidRequest('"token" must be a base64 string (a serialized token)', field="token")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise CapabilityDenied("the capability token is not valid", reason="invalid_token") from None


def encode_token(t: Token) -> str:
    return base64.urlsafe_b64encode(t.serialized).decode("ascii").rstrip("=")


# ---------------------------------------------------------------------------- the stage
class CapabilityStage:
    """Pipeline stage: the method's policy → one decision → taint → approval → commit.

    Nothing here names a method: the method table (``kernel/methods.py``) says which resources
    a call touches; a policy without resources touches none a token governs."""

    def __init__(self, k: Kernel, svc: CapabilityService) -> None:
        self.k = k
        self.svc = svc

    async def before(self, call: Call) -> None:
        assert call.spec is not None
        pol = call.spec.policy
        if pol.guard is not None:
            if call.caller.is_operator:
                raise InvalidRequest(f"{call.method} is an agent's call")  # never registered so
            try:
                pol.guard(self.k, call)
            except AgentixError:
                call.denial_kind = "capability.denied"
                raise
        if pol.resources is None:
            return
        k, svc = self.k, self.svc
        if call.tool is not None:
            from agentix.tools.base import check_args

            check_args(k.tools.get(call.tool), call.args)  # unknown tool, bad arguments: said first
            if call.tool in ("file_list", "grep") and "path" not in call.args:
                call.args = {**call.args, "path": "."}
        rec = self._subject(call)
        if rec is None:  # the operator acting as itself is trusted (its socket is the authority)
            if call.params.get("dry_run"):  # ... and a pure check still runs nothing
                call.dry_run = {"allowed": True, "token_id": None, "needs_approval": False,
                                "requests": [str(r) for r in pol.resources(k, call, None)]}
            return
        try:
            if call.params.get("token") is None and not svc.held.get(rec.agent_id):
                # holding nothing, the answer does not depend on the arguments: said first
                raise CapabilityDenied(f"{rec.name} holds no capability; {call.tool or call.method} "
                                       "needs one", reason="no_token")
            resources = pol.resources(k, call, rec)
            tokens = None
            if call.params.get("token") is not None:  # one presented token: decided like any other
                tokens = [svc.authority.parse(decode_token_param(call.params["token"]))]
            partial = pol.partial or (call.tool is not None and k.tools.get(call.tool).partial)
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
            decision = svc.policy.decide(
                call.tool, TaintSet.from_strings(call.taint),
                has_payload=call.tool == "web_fetch" and web_fetch_has_payload(call.args),
                outside_workspace=_outside(auth, VIRTUAL_WORKSPACE),
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
            await self._approve(call, rec, call.params.get("approval"), taint_ask)
            # the world may have moved while a human looked: decide again
            auth = svc.decide(rec, resources, tokens=auth.tokens or None, partial=partial,
                              charge=pol.charge, tool_call=pol.tool_call)
        svc.commit(rec, auth)  # before execution: a failing call still uses its invocation
        call.authorization = auth

    async def after(self, call: Call, result: Any, error: BaseException | None) -> None:
        return None

    def _subject(self, call: Call) -> AgentRecord | None:
        """The agent the call acts as: the caller, or for operator ``tool.invoke`` the agent
        named by ``agent_id`` (None: the operator acting as itself)."""
        k = self.k
        if not call.caller.is_operator:
            assert call.caller.agent_id is not None
            return k.table.get(call.caller.agent_id)
        aid = call.params.get("agent_id")
        if aid is None:
            return None
        if not isinstance(aid, str):
            raise InvalidRequest('"agent_id" must be an agent id', field="agent_id")
        rec = k.table.find_live(aid)
        call.subject = rec.agent_id
        call.taint |= rec.taint
        return rec

    async def _approve(self, call: Call, rec: AgentRecord, approved_id: Any, taint_ask: bool) -> None:
        svc, k = self.svc, self.k
        now = time.time()
        assert call.tool is not None
        if approved_id is not None:  # a previously granted approval presented again
            if not isinstance(approved_id, str):
                raise InvalidRequest('"approval" must be an approval id', field="approval")
            a = consume(svc.approvals.get(approved_id), rec.agent_id, call.tool, call.args, now=now)
            svc.approvals.put(a)
            return
        aid = "ap-" + _secrets.token_hex(4)
        a = Approval.request(aid, rec.agent_id, call.tool, call.args, now=now, timeout=svc.approval_timeout)
        svc.approvals.add(a, call.args)
        why = "taint" if taint_ask else "approval_required"
        await k.events.record("approval.requested", rec.agent_id, svc.redact({
            "approval_id": aid, "tool": call.tool, "args": call.args, "why": why,
            "deadline": a.deadline, "action_hash": a.action_hash}), tuple(sorted(call.taint)))
        if call.params.get("wait") is False:
            raise ApprovalDenied(f"{call.tool} needs the operator's approval {aid}; call again with "
                                 f'"approval": "{aid}" once it is granted', approval_id=aid,
                                 reason="pending")
        a = await svc.approvals.wait(aid, a.deadline - time.time())
        if a.state == "pending":
            a = apply(a, "expire", now=time.time(), reason="no answer before the deadline")
            svc.approvals.put(a)
            await k.events.record("approval.expired", rec.agent_id, {"approval_id": aid, "tool": call.tool})
        a = consume(a, rec.agent_id, call.tool, call.args, now=time.time())
        svc.approvals.put(a)


def _outside(auth: Authorization, workspace: str) -> bool:
    """Whether the call writes outside the caller's workspace (a taint rule may care)."""
    writes = [c.resource.value for c in auth.covered
              if isinstance(c.resource, Request) and c.resource.kind == "file_write"]
    ws = workspace.rstrip("/")
    return any(not (p == ws or p.startswith(ws + "/")) for p in writes)


# ---------------------------------------------------------------------------- methods
def install(k: Kernel) -> CapabilityService:
    """Create the service, add the stage, register the tools and the methods."""
    from agentix.kernel import net_exec
    from agentix.tools import files

    svc = CapabilityService(k)
    k.caps = svc
    from agentix.kernel import vault

    vault.install(k, svc.secrets)  # replies, errors, events and log lines are redacted
    stage = CapabilityStage(k, svc)
    k.cap_stage = stage
    k.pipeline.add_stage(stage)
    k.pipeline.add_stage(DurableStateStage(k, svc.ledger))  # charges durable before effects
    for spec in files.SPECS + net_exec.make_specs(k):
        k.tools.register(spec)
    _register_methods(k, svc, stage)
    return svc


def _register_methods(k: Kernel, svc: CapabilityService, stage: CapabilityStage) -> None:
    from agentix.kernel.methods import method

    def op(name: str, fn: Any) -> None:
        k.pipeline.register(method(name, fn, operator=True))

    def sc(name: str, fn: Any) -> None:
        k.pipeline.register(method(name, fn, agent=True))

    def grants_param(params: dict[str, Any]) -> GrantSet:
        g = params.get("grants")
        if isinstance(g, str):
            g = [g]
        if not isinstance(g, list) or not g or not all(isinstance(x, str) for x in g):
            raise InvalidRequest('"grants" must be a non-empty list of grant strings', field="grants")
        return parse_grants(g, workspace=VIRTUAL_WORKSPACE)

    def limits_params(params: dict[str, Any]) -> tuple[int | None, float | None]:
        from agentix.core.units import parse_duration

        mx = params.get("max_invocations")
        if mx is not None and (not isinstance(mx, int) or isinstance(mx, bool) or mx < 0):
            raise InvalidRequest('"max_invocations" must be a non-negative integer', field="max_invocations")
        exp = params.get("expires")
        try:
            seconds = None if exp is None else parse_duration(exp)
        except ValueError as err:
            raise InvalidRequest(f'"expires": {err}', field="expires") from None
        return mx, None if seconds is None else time.time() + seconds

    # ---------------------------------------------------------------- operator
    async def cap_list(call: Call) -> dict[str, Any]:
        aid = call.params.get("agent_id")
        holders = [k.table.find(aid).agent_id] if isinstance(aid, str) else list(svc.held)
        return {"tokens": [svc.describe_token(t) for h in holders for t in svc.held.get(h, [])]}

    async def cap_grant(call: Call) -> dict[str, Any]:
        rec = k.table.find_live(call.params.get("agent_id") or "")
        gs = grants_param(call.params)
        mx, exp = limits_params(call.params)
        tok = svc.authority.mint(rec.agent_id, gs, now=time.time(), expires_at=exp, max_invocations=mx)
        svc.install(rec.agent_id, [tok])
        await k.events.record("capability.granted", rec.agent_id, {
            "by": "operator", "token_id": tok.id, "grants": gs.strings(), "max_invocations": mx,
            "expires_at": tok.expires_at})
        return svc.describe_token(tok)

    async def cap_revoke(call: Call) -> dict[str, Any]:
        tid = call.params.get("token_id")
        if not isinstance(tid, str):
            raise InvalidRequest('missing parameter "token_id"', field="token_id")
        holder, _ = svc.find_token(tid)
        svc.ledger.revoke(tid)
        derived = [t.id for toks in svc.held.values() for t in toks if tid in t.chain and t.id != tid]
        await k.events.record("capability.revoked", holder, {"token_id": tid, "derived": derived,
                                                             "by": "operator"})
        return {"revoked": tid, "derived": derived}

    async def cap_check(call: Call) -> dict[str, Any]:
        """The decision an agent's ``tool.call`` would get now, charging nothing: revoked,
        expired and exhausted tokens answer "denied" exactly as the call would."""
        from agentix.kernel.methods import tool_resources

        rec = k.table.find_live(call.params.get("agent_id") or "")
        name = call.params.get("name")
        args = call.params.get("args") or {}
        if not isinstance(name, str) or not isinstance(args, dict):
            raise InvalidRequest('cap.check needs "name" and "args"', field="name")
        probe = Call(caller=call.caller, method="tool.call", params={}, tool=name, args=args,
                     subject=rec.agent_id, taint=set(rec.taint))
        try:
            auth = svc.decide(rec, tool_resources(k, probe, rec), partial=k.tools.get(name).partial,
                              tool_call=True)
            decision = svc.policy.decide(name, TaintSet.from_strings(rec.taint),
                                         has_payload=name == "web_fetch" and web_fetch_has_payload(args),
                                         outside_workspace=_outside(auth, VIRTUAL_WORKSPACE))
            if decision.action == "refuse":
                raise decision.violation()
        except AgentixError as err:
            return {"allowed": False, "error": err.code, "message": err.message, **err.data}
        return {"allowed": True, "token_id": auth.token.id if auth.token else None,
                "requests": auth.resources(),
                "needs_approval": decision.action == "ask" or name in rec.manifest.approval_required
                or any(name in t.approval_required for t in auth.tokens)}

    async def approval_list(call: Call) -> dict[str, Any]:
        now = time.time()
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
        a = svc.approvals.resolve(aid, approve, reason=reason, by="operator", now=time.time())
        await k.events.record("approval.granted" if a.state == "granted" else "approval.denied",
                              a.agent, {"approval_id": aid, "tool": a.tool, "reason": reason})
        return a.to_data()

    for name, fn in [("cap.list", cap_list), ("cap.grant", cap_grant), ("cap.revoke", cap_revoke),
                     ("cap.check", cap_check), ("approval.list", approval_list),
                     ("approval.respond", approval_respond)]:
        op(name, fn)

    # ---------------------------------------------------------------- agent
    def me(call: Call) -> AgentRecord:
        assert call.caller.agent_id is not None
        return k.table.get(call.caller.agent_id)

    async def cap_delegate(call: Call) -> dict[str, Any]:
        # authorised by the stage: a live message_send token naming the recipient and, for
        # each grant, a live token covering it (expiry, revocation and holder included)
        rec = me(call)
        auth = call.authorization
        assert auth is not None
        target = k.table.find_live(call.params.get("to") or "")
        gs = grants_param(call.params)
        mx, exp = limits_params(call.params)
        by_owner: dict[str, tuple[Token, list[Grant]]] = {}
        for g in gs:
            owner = auth.token_for(g)
            by_owner.setdefault(owner.id, (owner, []))[1].append(g)
        # constraints only accumulate: the delegator's approval_required travels in the token
        asks = rec.manifest.approval_required
        toks = [svc.authority.attenuate(owner, glist, now=time.time(), holder=target.agent_id,
                                        expires_at=exp, max_invocations=mx,
                                        remaining=svc.ledger.remaining(owner), ask=asks)
                for owner, glist in by_owner.values()]
        svc.install(target.agent_id, toks)
        for tok in toks:
            await k.events.record("capability.delegated", rec.agent_id, {
                "to": target.agent_id, "token_id": tok.id, "parent_id": tok.parent_id,
                "grants": tok.grants.strings()})
        return {"token_id": toks[0].id, "token_ids": [t.id for t in toks], "to": target.agent_id,
                "grants": gs.strings()}

    async def sys_untaint(call: Call) -> dict[str, Any]:
        rec = me(call)
        label = call.params["label"]  # the stage checked it and an untaint grant for its source
        removed = sorted(x for x in rec.taint if x == label or x.partition(":")[0] == label)
        rec.taint.difference_update(removed)
        await k.events.record("taint.cleared", rec.agent_id, {"label": label, "removed": removed})
        return {"removed": removed, "taint": sorted(rec.taint)}

    async def stop_child(call: Call) -> dict[str, Any]:
        target = k.table.find(call.params["agent_id"])
        grace = call.params.get("grace")
        rec = await k.stop(target, reason="killed", detail=f"stopped by {call.caller.agent_id}",
                           grace=float(grace) if isinstance(grace, (int, float)) else None)
        return rec.summary()

    async def kill_child(call: Call) -> dict[str, Any]:
        target = k.table.find(call.params["agent_id"])
        rec = await k.kill(target)
        return rec.summary()

    sc("cap.delegate", cap_delegate)
    sc("sys.untaint", sys_untaint)
    sc("agent.stop_child", stop_child)
    sc("agent.kill_child", kill_child)
