"""Capability tokens: minted, attenuated and verified by the kernel's root key (Biscuit inside).
(Over 400 lines: the token and the authority that mints, attenuates and verifies it: the Biscuit
details stay private to this module.)

A token is a Biscuit (Ed25519, offline attenuation) whose every block carries one signed
``agentix_block(payload)`` fact — holder, grants, expiry, invocation limit — the Datalog check
``check if time($t), $t < expiry`` when there is an expiry, and the block's grants as a Datalog
check ``reject if request($k, $v, $pub, $ip), !(<grant> || ...)`` (``authorize_datalog``
evaluates them; ``authorize`` makes the same decision in Python, faster — a property test
holds the two to agreement). No biscuit type leaves this
module: callers see ``Token`` (and ``VerifiedToken``, the same type) and agentix errors.

Rules:

- Verification checks the signature chain against the *real* root public key, refuses third-
  party blocks and malformed payloads, runs the Datalog checks with the caller's clock, and then
  checks the holder: the holder named by the last block must be the agent presenting the token
  (``capability_denied`` reason ``wrong_holder``). Forged, truncated or foreign-key tokens are
  ``capability_denied`` reason ``invalid_token``; past expiry is ``capability_expired``.
- What a token permits is the *intersection* of its blocks: a request is allowed only if every
  block's grant set permits it. An appended block can therefore only narrow.
- Attenuation (``attenuate``/``delegate``) refuses anything the token does not cover, a later
  expiry, or more invocations than the token has left (``handoff_escalation_denied``).
- Token ids are (a prefix of) Biscuit revocation ids, one per block; a token's ``chain`` lists
  its own id and all its ancestors', so revoking an id revokes every token derived from it.
- Revocation and invocation counts are kernel state, held by ``TokenLedger`` (in ``ledger.py``).

Verified tokens are cached by their bytes; the cache holds only time-independent facts
(signature validity, parsed blocks), so expiry (clock passed in on every call) and revocation
(checked by the ledger on every charge) take effect at once.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

import biscuit_auth as _bi
import orjson

from agentix.core.errors import (
    CapabilityDenied,
    CapabilityExpired,
    HandoffEscalationDenied,
    InvalidRequest,
)
from agentix.core.grants import Grant, GrantSet, Request, parse_grants

__all__ = [
    "Authority",
    "GrantDecision",
    "Token",
    "VerifiedToken",
    "generate_root_key",
]

_PAYLOAD_RE = re.compile(r'agentix_block\("([A-Za-z0-9_=-]*)"\);')
_DATALOG_MAX_TIME = timedelta(milliseconds=250)
_VERDICTS_MAX = 1024  # memoised grant-matching verdicts per token
_ID_LEN = 32  # hex chars of the revocation id used as the token id (128 bits)
_SEAL = object()  # held by Authority: only it constructs a Token


def generate_root_key() -> bytes:
    """32 fresh bytes of an Ed25519 private key (the kernel stores them, mode 0600)."""
    return bytes(_bi.KeyPair().private_key.to_bytes())


@dataclass(frozen=True, slots=True)
class Block:
    """One signed link of a token chain."""

    id: str
    holder: str
    grants: GrantSet
    expires_at: int | None
    max_invocations: int | None
    issued_at: float
    #: tools that need a human's approval whenever this token (or one derived from it) is used
    ask: tuple[str, ...] = ()


@dataclass(frozen=True)
class Token:
    """A verified (or just minted) capability. Only ``Authority`` constructs these.
    (Derived facts — id, chain, expiry, limits — are computed once per token: its blocks are
    signed and immutable.)"""

    blocks: tuple[Block, ...]
    serialized: bytes = field(repr=False)
    _biscuit: Any = field(repr=False, compare=False, default=None)
    #: request -> whether the signed grants permit it (a pure function of the signed blocks;
    #: revocation, expiry and holder are never cached — ``core.authorize`` checks them each time)
    _verdicts: dict[Any, bool] = field(repr=False, compare=False, default_factory=dict)
    #: ``_SEAL`` when ``Authority`` made it from signed bytes; nothing else can build a Token
    _seal: object = field(repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if self._seal is not _SEAL:
            raise TypeError("a Token is made by Authority (mint, attenuate, parse) from signed "
                            "bytes, never constructed: parse the serialized token instead")

    @cached_property
    def id(self) -> str:
        return self.blocks[-1].id

    @cached_property
    def parent_id(self) -> str | None:
        return self.blocks[-2].id if len(self.blocks) > 1 else None

    @cached_property
    def chain(self) -> tuple[str, ...]:
        """Ids from the root token to this one."""
        return tuple(b.id for b in self.blocks)

    @cached_property
    def holder(self) -> str:
        return self.blocks[-1].holder

    @property
    def grants(self) -> GrantSet:
        """The grants this token's own block states (its effective rights are the
        intersection over ``blocks``; see ``permits``)."""
        return self.blocks[-1].grants

    @cached_property
    def expires_at(self) -> int | None:
        exps = [b.expires_at for b in self.blocks if b.expires_at is not None]
        return min(exps) if exps else None

    @property
    def max_invocations(self) -> int | None:
        return self.blocks[-1].max_invocations

    @cached_property
    def approval_required(self) -> frozenset[str]:
        """Tools that need approval when this token is used: the union over its chain, so a
        constraint added by any ancestor can never be dropped by delegating."""
        return frozenset(a for b in self.blocks for a in b.ask)

    @cached_property
    def limits(self) -> tuple[tuple[str, int], ...]:
        """(id, max_invocations) for every block in the chain that has a limit."""
        return tuple((b.id, b.max_invocations) for b in self.blocks if b.max_invocations is not None)

    def permits(self, request: Request) -> bool:
        """Whether every block's grants permit ``request`` (the last block, the narrowest,
        first). Memoised per token: the grants are signed and never change."""
        verdicts = self._verdicts
        v = verdicts.get(request)
        if v is None:
            v = True
            for b in reversed(self.blocks):
                if not b.grants.permits(request):
                    v = False
                    break
            if len(verdicts) >= _VERDICTS_MAX:
                verdicts.clear()
            verdicts[request] = v
        return v

    def covers(self, grant: Grant) -> bool:
        """Whether every block's grants cover ``grant`` (what delegation needs)."""
        return all(b.grants.covers(grant) for b in self.blocks)

    def file_root(self, kind: str, path: str) -> str | None:
        """The most specific granted directory for ``path`` over the chain (see GrantSet.best_root)."""
        best: str | None = None
        for b in self.blocks:
            root = b.grants.best_root(kind, path)
            if root is None:
                return None
            if best is None or len(root) > len(best):
                best = root
        return best

    def describe(self) -> dict[str, Any]:
        """A JSON-able view for status and audit (no key material, no serialized token)."""
        return {
            "id": self.id,
            "chain": list(self.chain),
            "holder": self.holder,
            "grants": self.grants.strings(),
            "expires_at": self.expires_at,
            "max_invocations": self.max_invocations,
        }


VerifiedToken = Token


@dataclass(frozen=True, slots=True)
class GrantDecision:
    allowed: bool
    reason: str  # "granted" | "not_granted"
    request: Request | None = None


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(int(ts), timezone.utc)


def _payload(holder: str, grants: GrantSet, exp: int | None, max_inv: int | None, now: float,
             ask: Iterable[str] = ()) -> str:
    data: dict[str, Any] = {"v": 1, "holder": holder, "grants": grants.strings(), "exp": exp,
                            "max": max_inv, "iat": now}
    ask = sorted(set(ask))
    if ask:
        data["ask"] = ask
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode("ascii")


def _grant_expr(g: Grant, params: dict[str, Any]) -> str:
    """The Datalog condition under which grant ``g`` permits ``request($k, $v, $pub, $ip)``.
    Values go in as parameters, never spliced into the source."""

    def p(value: str) -> str:
        name = f"g{len(params)}"
        params[name] = value
        return "{" + name + "}"

    kind = f"$k == {p(g.kind)}"
    v = g.value
    if g.kind in ("file_read", "file_write"):
        if v == "/*":
            return f"({kind})"
        if v.endswith("/*"):
            base = v[:-2]
            return f"({kind} && ($v == {p(base)} || $v.starts_with({p(base + '/')})))"
        return f"({kind} && $v == {p(v)})"
    if g.kind == "network":
        if v == "*":
            return f"({kind} && $pub == true)"
        if v.startswith("*."):
            return f"({kind} && $v.ends_with({p(v[1:])}) && $ip == false && $pub == true)"
        return f"({kind} && $v == {p(v)})"
    if v == "*" and g.kind != "secret":
        return f"({kind})"
    if (g.kind == "model" or g.kind == "mcp") and v.endswith("*"):
        return f"({kind} && $v.starts_with({p(v[:-1])}))"
    return f"({kind} && $v == {p(v)})"


def _block_code(payload: str, exp: int | None, grants: GrantSet) -> tuple[str, dict[str, Any]]:
    code = "agentix_block({p});"
    params: dict[str, Any] = {"p": payload}
    if exp is not None:
        code += " check if time($t), $t < {exp};"
        params["exp"] = _dt(exp)
    exprs = [_grant_expr(g, params) for g in grants]
    if exprs:
        code += " reject if request($k, $v, $pub, $ip), !(" + " || ".join(exprs) + ");"
    else:
        code += " reject if request($k, $v, $pub, $ip);"
    return code, params


#: what ``mint``, ``attenuate`` and ``delegate`` take as grants: a set, ``Grant`` values, or
#: grant strings in manifest syntax
GrantsLike = GrantSet | Iterable[Grant] | Iterable[str]


def _authorizer(now: float) -> _bi.AuthorizerBuilder:
    """A Datalog authorizer at time ``now`` with our run limit: biscuit's default 1 ms refuses
    valid tokens on a loaded machine; our blocks hold one fact and one check each (third-party
    blocks were refused while parsing)."""
    az = _bi.AuthorizerBuilder("time({now}); allow if true;", {"now": _dt(now)})
    limits = az.limits()
    limits.max_time = _DATALOG_MAX_TIME
    az.set_limits(limits)
    return az


def _as_grantset(grants: GrantsLike) -> GrantSet:
    if isinstance(grants, GrantSet):
        return grants
    items = list(grants)
    if all(isinstance(g, Grant) for g in items):
        return GrantSet(tuple(dict.fromkeys(items)))
    if all(isinstance(g, str) for g in items):
        return parse_grants(items)
    raise InvalidRequest("grants must be Grant values or grant strings")


def _check_limits(expires_at: float | None, max_invocations: int | None) -> tuple[int | None, int | None]:
    if max_invocations is not None and (not isinstance(max_invocations, int) or max_invocations < 0):
        raise InvalidRequest(f"max_invocations must be a non-negative integer, got {max_invocations!r}")
    exp = None if expires_at is None else int(expires_at)
    return exp, max_invocations


def _invalid(msg: str = "the capability token is not valid") -> CapabilityDenied:
    return CapabilityDenied(msg, reason="invalid_token")


class Authority:
    """Holds the root key; mints, attenuates and verifies tokens. The kernel owns one."""

    def __init__(self, root_private_key: bytes, *, cache_size: int = 4096) -> None:
        try:
            priv = _bi.PrivateKey.from_bytes(bytes(root_private_key), _bi.Algorithm.Ed25519)
        except Exception:  # noqa: BLE001 - biscuit raises assorted types for bad key bytes
            raise InvalidRequest("the root key is not a valid Ed25519 private key") from None
        self._keypair = _bi.KeyPair.from_private_key(priv)
        self._public = self._keypair.public_key
        self._cache: dict[bytes, Token] = {}
        self._cache_size = cache_size

    @property
    def public_key(self) -> bytes:
        return bytes(self._public.to_bytes())

    # ------------------------------------------------------------------ minting
    def mint(self, holder: str, grants: GrantsLike, *, now: float, expires_at: float | None = None,
             max_invocations: int | None = None, ask: Iterable[str] = ()) -> Token:
        """A root token for ``holder`` (used at spawn, from the manifest's grants); ``ask`` names
        tools that need approval whenever it or a token derived from it is used."""
        gs = _as_grantset(grants)
        exp, max_inv = _check_limits(expires_at, max_invocations)
        code, params = _block_code(_payload(holder, gs, exp, max_inv, now, ask), exp, gs)
        biscuit = _bi.BiscuitBuilder(code, params).build(self._keypair.private_key)
        return self._remember(self._parse(biscuit))

    def attenuate(self, token: Token, grants: GrantsLike, *, now: float, holder: str | None = None,
                  expires_at: float | None = None, max_invocations: int | None = None,
                  remaining: int | None = None, ask: Iterable[str] = ()) -> Token:
        """A narrower token derived from ``token`` (same holder unless ``holder`` is given).
        ``ask`` adds tools that need approval (the parent's stay: constraints only accumulate).

        ``remaining`` is what the ledger says ``token`` has left (``TokenLedger.remaining``);
        asking for more is refused, as are grants the token does not cover and a later expiry.
        """
        gs = _as_grantset(grants)
        lacking = [g for g in gs if not token.covers(g)]
        if lacking:
            raise HandoffEscalationDenied(
                f"parent lacks {lacking[0]}",
                reason="parent_lacks_grant",
                missing=[str(g) for g in lacking],
                token_id=token.id,
            )
        exp, max_inv = _check_limits(expires_at, max_invocations)
        parent_exp = token.expires_at
        if parent_exp is not None:
            if exp is None:
                exp = parent_exp
            elif exp > parent_exp:
                raise HandoffEscalationDenied(
                    f"a delegated token cannot expire later than its parent ({exp} > {parent_exp})",
                    reason="later_expiry",
                    token_id=token.id,
                )
        if remaining is not None and max_inv is not None and max_inv > remaining:
            raise HandoffEscalationDenied(
                f"a delegated token cannot have more invocations than its parent has left "
                f"(asked {max_inv}, parent has {remaining})",
                reason="more_invocations",
                token_id=token.id,
            )
        code, params = _block_code(_payload(holder or token.holder, gs, exp, max_inv, now, ask), exp, gs)
        biscuit = token._biscuit.append(_bi.BlockBuilder(code, params))
        return self._remember(self._parse(biscuit))

    def delegate(
        self,
        parents: Iterable[Token],
        grants: GrantsLike,
        *,
        holder: str,
        now: float,
        expires_at: float | None = None,
        remaining: dict[str, int | None] | None = None,
        ask: Iterable[str] = (),
    ) -> list[Token]:
        """Tokens for a child (``agent.spawn_child``) derived from the parent's tokens.

        Each child grant goes to the first parent token that covers it; a grant no parent token
        covers is refused ("parent lacks file_write: /etc/*"). One derived token per parent
        token used. ``remaining`` maps parent token id -> invocations left (bounds the child).
        """
        gs = _as_grantset(grants)
        parents = list(parents)
        groups: dict[str, list[Grant]] = {}
        by_id = {p.id: p for p in parents}
        lacking: list[Grant] = []
        for g in gs:
            owner = next((p for p in parents if p.covers(g)), None)
            if owner is None:
                lacking.append(g)
            else:
                groups.setdefault(owner.id, []).append(g)
        if lacking:
            raise HandoffEscalationDenied(
                f"parent lacks {lacking[0]}", reason="parent_lacks_grant", missing=[str(g) for g in lacking]
            )
        out = []
        for pid, glist in groups.items():
            left = (remaining or {}).get(pid)
            out.append(
                self.attenuate(
                    by_id[pid], glist, now=now, holder=holder, expires_at=expires_at,
                    max_invocations=left, remaining=left, ask=ask,
                )
            )
        return out

    # ------------------------------------------------------------------ verifying
    def parse(self, serialized: bytes) -> Token:
        """The token in ``serialized`` if its signature chain verifies against the root key.

        Only this is cached (keyed by the bytes): nothing that depends on the clock, the holder
        or the ledger is checked here or remembered — ``core.authorize`` checks those at every
        decision, so expiry and revocation take effect at the next call."""
        return self._load(serialized, None)

    def verify(self, serialized: bytes, holder: str, now: float) -> Token:
        """The token in ``serialized``, if genuine, unexpired and held by ``holder``."""
        token = self._load(serialized, now)
        exp = token.expires_at
        if exp is not None and not now < exp:
            raise CapabilityExpired(
                f"the capability expired at {exp}", token_id=token.id, expires_at=exp
            )
        if token.holder != holder:
            raise CapabilityDenied(
                "this capability belongs to another agent", reason="wrong_holder", token_id=token.id
            )
        return token

    def authorize(self, token: Token, requests: Iterable[Request]) -> None:
        """Raise ``capability_denied`` (reason ``not_granted``) unless ``token`` permits all."""
        for r in requests:
            if not token.permits(r):
                raise CapabilityDenied(
                    f"no capability allows {r}", reason="not_granted", request=str(r), token_id=token.id
                )

    def authorize_datalog(self, token: Token, requests: Iterable[Request], now: float) -> None:
        """The same decision as ``authorize``, made by Biscuit's Datalog engine from the checks
        signed into every block (``reject if request(...), !(grants)``) and the expiry checks. Slower
        (tens of microseconds per block); the tests use it to prove that both agree, and a
        kernel may use it as defence in depth."""
        from agentix.core.hosts import is_ip_literal, is_public_address

        reqs = list(requests)
        az = _authorizer(now)
        for i, r in enumerate(reqs):
            pub = r.address is None or is_public_address(r.address)
            ip = r.kind == "network" and is_ip_literal(r.value)
            az.add_code(
                "request({k}, {v}, {pub}, {ip});",
                {"k": r.kind, "v": r.value, "pub": pub, "ip": ip},
            )
        try:
            az.build(token._biscuit).authorize()
        except _bi.AuthorizationError:
            raise CapabilityDenied(
                "no capability allows " + ", ".join(str(r) for r in reqs),
                reason="not_granted", token_id=token.id,
            ) from None

    def decide(self, token: Token, request: Request) -> GrantDecision:
        if token.permits(request):
            return GrantDecision(True, "granted", request)
        return GrantDecision(False, "not_granted", request)

    # ------------------------------------------------------------------ internals
    def _load(self, serialized: bytes, now: float | None) -> Token:
        """The cached token for ``serialized``; on a miss, decode it, verify its signature chain
        (and, given ``now``, the Datalog checks signed into its blocks) and cache it."""
        if not isinstance(serialized, (bytes, bytearray)):
            raise _invalid()
        key = bytes(serialized)
        token = self._cache.get(key)
        if token is None:
            try:
                biscuit = _bi.Biscuit.from_bytes(key, self._public)
            except Exception:  # noqa: BLE001 - any decoding/signature failure is the same refusal
                raise _invalid() from None
            token = self._parse(biscuit)
            if now is not None:
                self._datalog_checks(token, now)
            self._remember(token)
        return token

    def _remember(self, token: Token) -> Token:
        cache = self._cache
        while len(cache) >= self._cache_size:
            try:  # oldest first; tolerant of another thread evicting at the same moment
                cache.pop(next(iter(cache)), None)
            except (StopIteration, RuntimeError):
                break
        cache[token.serialized] = token
        return token

    def _datalog_checks(self, token: Token, now: float) -> None:
        az = _authorizer(now)
        try:
            az.build(token._biscuit).authorize()
        except _bi.AuthorizationError:
            exp = token.expires_at
            if exp is not None and not now < exp:
                raise CapabilityExpired(
                    f"the capability expired at {exp}", token_id=token.id, expires_at=exp
                ) from None
            raise _invalid() from None
        except Exception:  # noqa: BLE001
            raise _invalid() from None

    def _parse(self, biscuit: Any) -> Token:
        try:
            rev = list(biscuit.revocation_ids)
            n = biscuit.block_count()
            if n != len(rev) or n < 1:
                raise _invalid()
            blocks = []
            for i in range(n):
                if i > 0 and biscuit.block_external_key(i) is not None:
                    raise _invalid("third-party blocks are not accepted")
                found = _PAYLOAD_RE.findall(biscuit.block_source(i))
                if len(found) != 1:
                    raise _invalid()
                data = orjson.loads(base64.urlsafe_b64decode(found[0]))
                if data.get("v") != 1:
                    raise _invalid()
                exp = data["exp"]
                mx = data["max"]
                blocks.append(
                    Block(
                        id=rev[i][:_ID_LEN],
                        holder=str(data["holder"]),
                        grants=parse_grants(data["grants"]),
                        expires_at=None if exp is None else int(exp),
                        max_invocations=None if mx is None else int(mx),
                        issued_at=float(data["iat"]),
                        ask=tuple(str(a) for a in data.get("ask", ())),
                    )
                )
            return Token(tuple(blocks), bytes(biscuit.to_bytes()), biscuit, _seal=_SEAL)
        except CapabilityDenied:
            raise
        except Exception:  # noqa: BLE001 - a malformed payload is an invalid token
            raise _invalid() from None
