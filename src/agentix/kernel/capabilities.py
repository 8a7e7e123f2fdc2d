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
- ``CapabilityStage`` is a pipeline stage: for ``tool.call`` (and operator ``tool.invoke``
  with ``agent_id``, which acts as that agent) it runs ``CallGate.check`` (verify, authorise,
  taint policy, charge one invocation *before* execution), then approvals
  (``approval_required`` in the manifest, or a taint rule that says ``ask``). It also gates
  ``ipc.send``/``ipc.broadcast`` (``message_send``), ``agent.spawn_child`` (``spawn_child``),
  ``agent.stop_child``/``agent.kill_child`` (own descendants only).
- Operator ``tool.invoke`` without ``agent_id`` holds no token: the operator is trusted, and
  since no agent's manifest applies no approval is asked either.
- When an agent exits all its tokens are revoked (``TokenLedger.revoke_holder``).
- The root key lives in ``$AGENTIX_HOME/keys/root.key`` (0600), made at first start.
- Secrets (``[secrets]`` in config.toml, ``NAME = "env:VAR"``, or
  ``$AGENTIX_HOME/keys/secrets.toml`` mode 0600) stay in the kernel; ``redact`` runs over
  every tool result and event before it leaves.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import secrets as _secrets
import stat
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from agentix.core.gate import CallGate, GateResult
from agentix.core.grants import GrantSet, Request, parse_grants
from agentix.core.ledger import TokenLedger
from agentix.core.manifest import CapabilityEntry, Manifest
from agentix.core.taint import DEFAULT_RULES, TaintPolicy, TaintSet, parse_rules
from agentix.kernel.dispatch import Call

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
    "web_fetch": ("network",), "exec": ("exec",),
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
    """``NAME -> value`` from config.toml ``[secrets]`` (``"env:VAR"`` or a literal is refused:
    values belong in keys/secrets.toml, mode 0600) and ``keys/secrets.toml``."""
    out: dict[str, str] = {}
    cfg = home_root / "config.toml"
    if cfg.exists():
        try:
            table = tomllib.loads(cfg.read_text()).get("secrets", {})
        except tomllib.TOMLDecodeError as err:
            raise InvalidRequest(f"{cfg}: not valid TOML: {err}", field="config.toml") from None
        for name, spec in table.items():
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
        out.update({str(k): str(v) for k, v in data.items() if isinstance(v, (str, int))})
    return out


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

    In memory; ``snapshot``/``restore`` move the records (``Approval.to_data``) to and from a
    durable store so that pending approvals survive a restart.
    """

    def __init__(self, path: Path | None = None) -> None:
        self._items: dict[str, Approval] = {}
        self._waiters: dict[str, asyncio.Event] = {}
        self.args: dict[str, dict[str, Any]] = {}  # what the operator is shown
        self.path = path  # the interim durable copy (JSON, replaced atomically on every change)
        if path is not None and path.exists():
            import orjson

            self.restore(orjson.loads(path.read_bytes()))

    def _save(self) -> None:
        if self.path is None:
            return
        import orjson

        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, orjson.dumps(self.snapshot()))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)

    def add(self, a: Approval, args: dict[str, Any]) -> None:
        self._items[a.id] = a
        self._waiters[a.id] = asyncio.Event()
        self.args[a.id] = args
        self._save()

    def get(self, approval_id: str) -> Approval:
        try:
            return self._items[approval_id]
        except KeyError:
            raise NotFound(f"no approval {approval_id!r}", approval_id=approval_id) from None

    def put(self, a: Approval) -> None:
        self._items[a.id] = a
        self._save()
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


# ---------------------------------------------------------------------------- the service
class CapabilityService:
    """The kernel's authority, ledger, gate, held tokens, approvals and vault."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self.authority = Authority(load_root_key(k.home.keys))
        self.ledger = TokenLedger()
        self.policy = load_taint_policy(k.home.root)
        self.gate = CallGate(self.authority, self.ledger, self.policy)
        self.held: dict[str, list[Token]] = {}
        self.approvals = ApprovalBook(k.home.root / "approvals.json")
        self.approval_timeout = float(getattr(k.config, "approval_timeout", DEFAULT_TIMEOUT))
        self.secrets: dict[str, str] = load_secrets(k.home.root, os.environ)

    # ------------------------------------------------------------------ spawn
    def tokens_for_spawn(self, manifest: Manifest, parent: AgentRecord | None, agent_id: str) -> list[Token]:
        """The tokens a new agent gets: minted from root for a root agent, delegated from the
        parent's for a child (``handoff_escalation_denied`` "parent lacks …" when wider).
        Pure with respect to kernel state: nothing is registered until ``install``."""
        now = time.time()
        groups = manifest_groups(manifest)
        out: list[Token] = []
        if parent is None:
            for g in groups:
                exp = now + g.expires if g.expires is not None else None
                out.append(self.authority.mint(agent_id, g.grants, now=now, expires_at=exp,
                                               max_invocations=g.max_invocations))
            return out
        parents = self.held.get(parent.agent_id, [])
        live = [t for t in parents if not self.ledger.is_revoked(t)]
        for g in groups:
            exp = now + g.expires if g.expires is not None else None
            if g.max_invocations is None:
                out.extend(self.authority.delegate(
                    live, g.grants, holder=agent_id, now=now, expires_at=exp,
                    remaining={t.id: self.ledger.remaining(t) for t in live}))
                continue
            owner = next((t for t in live if all(t.covers(x) for x in g.grants)), None)
            if owner is None:  # let delegate name what is missing
                self.authority.delegate(live, g.grants, holder=agent_id, now=now)
                raise HandoffEscalationDenied("no single parent token covers this limited grant set",
                                              reason="parent_lacks_grant")
            out.append(self.authority.attenuate(
                owner, g.grants, now=now, holder=agent_id, expires_at=exp,
                max_invocations=g.max_invocations, remaining=self.ledger.remaining(owner)))
        return out

    def install(self, agent_id: str, tokens: list[Token]) -> None:
        for t in tokens:
            self.ledger.register(t)
        self.held.setdefault(agent_id, []).extend(tokens)

    def revoke_agent(self, agent_id: str) -> list[str]:
        return self.ledger.revoke_holder(agent_id)

    def tokens_of(self, agent_id: str) -> list[Token]:
        return [t for t in self.held.get(agent_id, []) if not self.ledger.is_revoked(t)]

    def presented(self, agent_id: str) -> list[bytes]:
        """The tokens an agent presents by default: live ones first, revoked ones last (so a
        call that only a revoked token would allow reports ``capability_revoked``)."""
        held = self.held.get(agent_id, [])
        live = self.tokens_of(agent_id)
        return [t.serialized for t in live] + [t.serialized for t in held if t not in live]

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
                "revoked": self.ledger.is_revoked(t)}

    def allowed_tools(self, agent_id: str) -> list[str]:
        toks = self.tokens_of(agent_id)
        names = []
        for name in self.k.tools.names():
            kinds = _RESOURCE_TOOLS.get(name)
            if kinds is None:
                ok = any(t.permits(Request("tool", name)) for t in toks)
            else:
                ok = any(all(t.grants.of_kind(kd) for kd in kinds) for t in toks)
            if ok:
                names.append(name)
        return names

    def info(self, agent_id: str) -> dict[str, Any]:
        toks = self.tokens_of(agent_id)
        grants: list[str] = []
        for t in toks:
            for s in t.grants.strings():
                if s not in grants:
                    grants.append(s)
        return {"tokens": [t.id for t in toks], "grants": grants, "tools": self.allowed_tools(agent_id)}

    def permits(self, agent_id: str, request: Request) -> Token | None:
        for t in self.tokens_of(agent_id):
            if t.permits(request):
                return t
        return None

    def require(self, agent_id: str, request: Request, *, charge: bool = True, what: str = "") -> Token:
        """The caller's first live token permitting ``request`` (charged), else capability_denied."""
        now = time.time()
        toks = []
        for t in self.tokens_of(agent_id):
            try:
                toks.append(self.authority.verify(t.serialized, agent_id, now))
            except AgentixError:
                continue
        for t in toks:
            if t.permits(request):
                if charge:
                    self.ledger.charge(t)
                return t
        raise CapabilityDenied(f"no capability allows {request}" + (f" ({what})" if what else ""),
                               reason="not_granted", request=str(request))

    # ------------------------------------------------------------------ redaction
    def redact(self, obj: Any) -> Any:
        if not self.secrets:
            return obj
        from agentix.tools.secrets import redact

        return redact(obj, self.secrets)


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
    """Pipeline stage: capability, taint and approval checks before a call runs."""

    def __init__(self, k: Kernel, svc: CapabilityService) -> None:
        self.k = k
        self.svc = svc

    async def before(self, call: Call) -> None:
        m = call.method
        if m in ("tool.call", "tool.invoke"):
            await self._tool(call)
        elif m == "ipc.send":
            self._message(call)
        elif m == "ipc.broadcast":
            self._broadcast(call)
        elif m == "agent.spawn_child":
            self._spawn_child(call)
        elif m in ("agent.stop_child", "agent.kill_child"):
            self._descendant(call)

    async def after(self, call: Call, result: Any, error: BaseException | None) -> None:
        return None

    # ------------------------------------------------------------------ tools
    async def _tool(self, call: Call) -> None:
        k, svc = self.k, self.svc
        assert call.tool is not None
        from agentix.tools.base import check_args

        check_args(k.tools.get(call.tool), call.args)  # unknown tool, bad arguments: said first
        if call.tool in ("file_list", "grep") and "path" not in call.args:
            call.args = {**call.args, "path": "."}
        if call.caller.is_operator:
            aid = call.params.get("agent_id")
            if aid is None:
                call.meta["operator"] = True
                return  # the operator acting as itself is trusted
            if not isinstance(aid, str):
                raise InvalidRequest('"agent_id" must be an agent id', field="agent_id")
            rec = k.table.find_live(aid)
            call.subject = rec.agent_id
            call.taint |= rec.taint
        else:
            assert call.caller.agent_id is not None
            rec = k.table.get(call.caller.agent_id)
        if call.params.get("token") is not None:
            raws = [decode_token_param(call.params["token"])]
        else:
            raws = svc.presented(rec.agent_id)
            if not raws:
                raise CapabilityDenied(f"{rec.name} holds no capability; {call.tool} needs one",
                                       reason="no_token", tool=call.tool,
                                       request=str(_first_request(call)))
        dry = bool(call.params.get("dry_run"))
        approved_id = call.params.get("approval")
        try:
            res = svc.gate.check(tokens=raws, holder=rec.agent_id, tool=call.tool, args=call.args,
                                 now=time.time(), workspace=VIRTUAL_WORKSPACE,
                                 taint=TaintSet.from_strings(call.taint), charge=False)
        except AgentixError as err:
            if err.code == "taint_violation":
                call.meta["denial_kind"] = "taint.violation"
            err.data.setdefault("tool", call.tool)
            raise
        needs = res.needs_approval or call.tool in rec.manifest.approval_required
        if dry:
            call.meta["dry_run"] = {"allowed": True, "token_id": res.token.id,
                                    "needs_approval": needs,
                                    "requests": [str(r) for r in res.requests]}
            return
        if needs:
            await self._approve(call, rec, res, approved_id)
        svc.ledger.charge(res.token)  # before execution: a failing call still uses one
        call.meta["gate"] = res
        if call.tool in _RESOURCE_TOOLS:  # the tools re-locate each path/host against them
            call.meta["tokens"] = svc.gate.verified(raws, rec.agent_id, time.time())
        call.meta["subject"] = rec

    async def _approve(self, call: Call, rec: AgentRecord, res: GateResult, approved_id: Any) -> None:
        svc, k = self.svc, self.k
        now = time.time()
        assert call.tool is not None
        if approved_id is not None:  # a previously granted approval presented again
            if not isinstance(approved_id, str):
                raise InvalidRequest('"approval" must be an approval id', field="approval")
            a = consume(svc.approvals.get(approved_id), rec.agent_id, call.tool, call.args, now=now)
            svc.approvals.put(a)
            self._clear_taint_for_call(call, res)
            return
        aid = "ap-" + _secrets.token_hex(4)
        a = Approval.request(aid, rec.agent_id, call.tool, call.args, now=now, timeout=svc.approval_timeout)
        svc.approvals.add(a, call.args)
        why = "taint" if res.needs_approval else "approval_required"
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
        self._clear_taint_for_call(call, res)

    @staticmethod
    def _clear_taint_for_call(call: Call, res: GateResult) -> None:
        call.meta["approved"] = True

    # ------------------------------------------------------------------ messages and agents
    def _sender(self, call: Call) -> AgentRecord:
        assert call.caller.agent_id is not None
        return self.k.table.get(call.caller.agent_id)

    def _message(self, call: Call) -> None:
        rec = self._sender(call)
        to = call.params.get("to")
        if not isinstance(to, str):
            raise InvalidRequest('missing parameter "to" (an agent id or live name)', field="to")
        target = self.k.table.find_live(to)
        self.message_token(rec, target)

    def message_token(self, rec: AgentRecord, target: AgentRecord) -> Token:
        for name in (target.manifest.name, target.name):
            tok = self.svc.permits(rec.agent_id, Request("message_send", name))
            if tok is not None:
                self.svc.ledger.charge(tok)
                return tok
        raise CapabilityDenied(f"{rec.name} may not message {target.name}: no message_send grant names it",
                               reason="not_granted", request=f"message_send: {target.manifest.name}",
                               to=target.agent_id)

    def may_message(self, rec: AgentRecord, target: AgentRecord) -> bool:
        return any(self.svc.permits(rec.agent_id, Request("message_send", n)) is not None
                   for n in (target.manifest.name, target.name))

    def _broadcast(self, call: Call) -> None:
        rec = self._sender(call)
        if not any(t.grants.of_kind("message_send") for t in self.svc.tokens_of(rec.agent_id)):
            raise CapabilityDenied(f"{rec.name} holds no message_send grant", reason="not_granted",
                                   request="message_send: *")

    def _spawn_child(self, call: Call) -> None:
        rec = self._sender(call)
        man = call.params.get("manifest")
        name = man.get("name") if isinstance(man, dict) else None
        if not isinstance(name, str):
            raise InvalidRequest('agent.spawn_child needs "manifest" with a "name"', field="manifest")
        try:
            self.svc.require(rec.agent_id, Request("spawn_child", name), what="spawn a child")
        except AgentixError:
            call.meta["denial_kind"] = "capability.denied"
            raise

    def _descendant(self, call: Call) -> None:
        rec = self._sender(call)
        aid = call.params.get("agent_id")
        if not isinstance(aid, str):
            raise InvalidRequest('missing parameter "agent_id"', field="agent_id")
        target = self.k.table.find(aid)
        node = target
        while node.parent is not None:
            if node.parent == rec.agent_id:
                return
            node = self.k.table.get(node.parent)
        raise CapabilityDenied(f"{target.name} is not a descendant of {rec.name}",
                               reason="not_a_descendant", agent_id=target.agent_id)


def _first_request(call: Call) -> Request | None:
    from agentix.core.grants import requests_for_tool

    try:
        reqs = requests_for_tool(call.tool or "", call.args, VIRTUAL_WORKSPACE)
    except AgentixError:
        return None
    return reqs[0] if reqs else None


# ---------------------------------------------------------------------------- methods
def install(k: Kernel) -> CapabilityService:
    """Create the service, add the stage, register the tools and the methods."""
    from agentix.kernel import net_exec
    from agentix.tools import files

    svc = CapabilityService(k)
    k.caps = svc
    if svc.secrets:  # every event record passes through redaction before it is written
        raw_record = k.events.record

        async def record(kind: str, agent_id: str | None, data: dict[str, Any],
                         taint: tuple[str, ...] = (), **kw: Any) -> Any:
            return await raw_record(kind, agent_id, svc.redact(data), taint, **kw)

        k.events.record = record  # type: ignore[method-assign]
    stage = CapabilityStage(k, svc)
    k.cap_stage = stage
    k.pipeline.add_stage(stage)
    for spec in files.SPECS + net_exec.make_specs(k):
        k.tools.register(spec)
    _register_methods(k, svc, stage)
    return svc


def _register_methods(k: Kernel, svc: CapabilityService, stage: CapabilityStage) -> None:
    from agentix.kernel.dispatch import MethodSpec

    def op(name: str, fn: Any) -> None:
        k.pipeline.register(MethodSpec(name, fn, operator=True, checked=False, recorded=False))

    def sc(name: str, fn: Any, *, checked: bool = True) -> None:
        k.pipeline.register(MethodSpec(name, fn, agent=True, checked=checked, recorded=True))

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
        rec = k.table.find_live(call.params.get("agent_id") or "")
        name = call.params.get("name")
        args = call.params.get("args") or {}
        if not isinstance(name, str) or not isinstance(args, dict):
            raise InvalidRequest('cap.check needs "name" and "args"', field="name")
        try:
            res = svc.gate.check(tokens=svc.presented(rec.agent_id),
                                 holder=rec.agent_id, tool=name, args=args, now=time.time(),
                                 workspace=VIRTUAL_WORKSPACE, taint=TaintSet.from_strings(rec.taint),
                                 charge=False)
            svc.ledger.check(res.token)
        except AgentixError as err:
            return {"allowed": False, "error": err.code, "message": err.message, **err.data}
        return {"allowed": True, "token_id": res.token.id, "needs_approval":
                res.needs_approval or name in rec.manifest.approval_required}

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
        rec = me(call)
        target = k.table.find_live(call.params.get("to") or "")
        if not stage.may_message(rec, target):
            raise CapabilityDenied(f"{rec.name} may not hand capabilities to {target.name} "
                                   "(no message_send grant names it)", reason="not_granted",
                                   request=f"message_send: {target.manifest.name}")
        gs = grants_param(call.params)
        mx, exp = limits_params(call.params)
        owner = next((t for t in svc.tokens_of(rec.agent_id) if all(t.covers(g) for g in gs)), None)
        if owner is None:
            lacking = next(g for g in gs if not any(t.covers(g) for t in svc.tokens_of(rec.agent_id)))
            raise HandoffEscalationDenied(f"parent lacks {lacking}", reason="parent_lacks_grant",
                                          missing=[str(lacking)])
        tok = svc.authority.attenuate(owner, gs, now=time.time(), holder=target.agent_id, expires_at=exp,
                                      max_invocations=mx, remaining=svc.ledger.remaining(owner))
        svc.install(target.agent_id, [tok])
        await k.events.record("capability.delegated", rec.agent_id, {
            "to": target.agent_id, "token_id": tok.id, "parent_id": owner.id, "grants": gs.strings()})
        return {"token_id": tok.id, "to": target.agent_id, "grants": gs.strings()}

    async def sys_untaint(call: Call) -> dict[str, Any]:
        rec = me(call)
        label = call.params.get("label")
        if not isinstance(label, str) or not label:
            raise InvalidRequest('"label" must be a taint source such as fetched_url', field="label")
        source = label.partition(":")[0]
        svc.require(rec.agent_id, Request("untaint", source), what="clear a taint label")
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
