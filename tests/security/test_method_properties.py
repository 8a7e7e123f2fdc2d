"""No effect without a live, covering, issued, charged token: a property over the method table,
through a real kernel.

One in-process kernel runs on its own event loop (a thread) for the whole module, with real
agent processes as callers and recipients and a loopback HTTP server. Each Hypothesis example
spawns a fresh ``actor`` and ``helper``, gives them random grant sets (operator ``cap.grant``
with random invocation limits and expiries), delegation chains (``helper`` → ``actor`` through
``cap.delegate``), revocations, and then makes random calls as the actor, through the
pipeline with the actor's real ``Caller``, of agent methods from the table: file tools on
paths inside and outside the grants, ``web_fetch`` to granted and ungranted loopback names,
``ipc.send`` and ``cap.delegate`` to named and unnamed recipients, ``think`` on granted and
ungranted models, ``agent.spawn_child`` of named and unnamed children, ``echo``.

After every call the effect is observed from outside (the file exists, the content came
back, the server was hit, the message is in the mailbox, the token is held, the child exists,
the provider answered) and checked against a reference written here (grant strings parsed by
this file, not by ``core``): an effect happened only if, for each resource it touched, a token
held by the actor covered it, was neither revoked nor expired when the call began, and was
charged by the call. A refusal changed nothing: no effect, no charge.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agentix.core.errors import AgentixError
from agentix.core.manifest import parse_manifest
from agentix.kernel.config import KernelConfig
from agentix.kernel.dispatch import OPERATOR, Caller
from agentix.kernel.home import Home
from agentix.kernel.kernel import KernelRoot

SLEEPER = '''
from agentix.sdk import agent
k = agent.connect()
while True:
    m = k.recv(timeout=300)
    if m is None or m.body == "exit":
        break
'''

#: recipients never read their mail: what reaches their mailbox stays there to be seen
NAPPER = '''
import time
from agentix.sdk import agent
k = agent.connect()
time.sleep(3600)
'''

SCRIPTED = ('default_model = "sim:engine"\n\n[providers.sim]\nkind = "scripted"\n'
            'script = "turns.yaml"\nloop = true\n')

#: refusals: the decision said no, so nothing may have moved
REFUSALS = {"capability_denied", "capability_expired", "capability_revoked", "capability_exhausted",
            "budget_exceeded", "taint_violation", "handoff_escalation_denied", "approval_denied"}


# ---------------------------------------------------------------------------- the reference
def parse(grant: str) -> tuple[str, list[str]]:
    """``kind: value`` or ``kind: [a, b]`` (this file's own reading of the grant syntax)."""
    kind, _, rest = grant.partition(":")
    rest = rest.strip()
    if rest.startswith("[") and rest.endswith("]"):
        return kind.strip(), [x.strip() for x in rest[1:-1].split(",") if x.strip()]
    return kind.strip(), [x.strip() for x in rest.split(",")] if kind.strip() == "network" else [rest]


def covers(grants: list[str], kind: str, value: str) -> bool:
    for g in grants:
        k, vals = parse(g)
        if k != kind:
            continue
        for v in vals:
            if kind in ("file_read", "file_write"):
                base = v[:-2] if v.endswith("/*") else v
                if value == base or (v.endswith("/*") and value.startswith(base + "/")):
                    return True
            elif kind == "model":
                if v == value or (v.endswith(":*") and value.startswith(v[:-1])) or v == "*":
                    return True
            elif v == value:
                return True
    return False


# ---------------------------------------------------------------------------- the world
class Hits(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        Hits.seen.append(self.path)
        body = b"hello"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a: Any) -> None:
        return None


@dataclass
class World:
    tmp: Path
    loop: asyncio.AbstractEventLoop
    k: KernelRoot
    port: int
    data: Path
    recipients: dict[str, Any] = field(default_factory=dict)
    n: itertools.count = field(default_factory=itertools.count)

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def spawn(self, name: str, caps: list[Any] = (), program: str = "sleeper.py") -> Any:  # type: ignore[assignment]
        return await self.k.spawn(parse_manifest({"name": name, "program": str(self.tmp / program),
                                                  "isolation": "degraded", "capabilities": list(caps)}))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("props")
    home = Home(tmp / "home")
    home.create()
    (home.root / "config.toml").write_text(SCRIPTED)
    (home.root / "turns.yaml").write_text("- {text: 'thought', usage: {input_tokens: 5, output_tokens: 2}}\n")
    (tmp / "sleeper.py").write_text(SLEEPER)
    (tmp / "napper.py").write_text(NAPPER)
    data = tmp / "data"
    for d in ("a", "b", "c"):
        (data / d).mkdir(parents=True)
        (data / d / "f.txt").write_text(f"CONTENT-{d}")
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Hits)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    k = KernelRoot(home, KernelConfig(backend="plain", isolation="degraded", stop_grace=0.5, max_agents=64))
    w = World(tmp, loop, k, srv.server_address[1], data)
    w.run(k.start())
    for name in ("r1", "r2"):
        w.recipients[name] = w.run(w.spawn(name, program="napper.py"))
    try:
        yield w
    finally:
        w.run(k.shutdown(), timeout=120)
        loop.call_soon_threadsafe(loop.stop)
        t.join(10)
        srv.shutdown()


# ---------------------------------------------------------------------------- strategies
def grant_pool(data: Path) -> list[str]:
    return [f"file_write: {data}/a/*", f"file_write: {data}/*", f"file_read: {data}/b/*",
            f"file_read: {data}/*", "network: 127.0.0.1", "network: localhost", "message_send: [r1]",
            "message_send: [r1, r2]", "model: sim:engine", "model: sim:*", "tool: echo",
            "spawn_child: [kid]"]


LIMITS = st.sampled_from([None, None, 1, 2])
EXPIRY = st.sampled_from([None, None, "1h", "1ms"])


@st.composite
def steps(draw: Any, data: Path) -> list[tuple[Any, ...]]:
    pool = grant_pool(data)
    grants = st.lists(st.sampled_from(pool), min_size=1, max_size=6, unique=True)
    setup = st.one_of(
        st.tuples(st.just("grant"), grants, LIMITS, EXPIRY),
        st.tuples(st.just("grant_helper"), grants, LIMITS, EXPIRY),
        st.tuples(st.just("delegate"), grants, LIMITS, EXPIRY),
        st.tuples(st.just("revoke"), st.integers(0, 5)),
    )
    dirs = st.sampled_from(["a", "b", "c", "a/deep"])
    call = st.one_of(
        st.tuples(st.just("file_write"), dirs),
        st.tuples(st.just("file_read"), dirs),
        st.tuples(st.just("file_read_many"), st.lists(dirs, min_size=1, max_size=3)),
        st.tuples(st.just("web_fetch"), st.sampled_from(["127.0.0.1", "localhost"])),
        st.tuples(st.just("ipc.send"), st.sampled_from(["r1", "r2"])),
        st.tuples(st.just("cap.delegate_out"), st.sampled_from(["r1", "r2"]), grants),
        st.tuples(st.just("think"), st.sampled_from(["sim:engine", "sim:other"])),
        st.tuples(st.just("echo")),
        st.tuples(st.just("spawn_child"), st.sampled_from(["kid", "other"])),
    )
    # grants first (so that calls are often allowed), then calls with revocations, grants
    # and delegations interleaved (so that tokens die between calls)
    first = draw(st.lists(st.one_of(
        st.tuples(st.just("grant"), grants, LIMITS, EXPIRY),
        st.tuples(st.just("grant_helper"), grants, LIMITS, EXPIRY)), min_size=1, max_size=3))
    chain = draw(st.lists(st.tuples(st.just("delegate"), grants, LIMITS, EXPIRY), max_size=2))
    return first + chain + draw(st.lists(st.one_of(call, call, call, setup), min_size=2, max_size=10))


# ---------------------------------------------------------------------------- one example
def check(w: World, plan: list[tuple[Any, ...]]) -> None:
    k = w.k
    actor = w.run(w.spawn("actor"))
    helper = w.run(w.spawn("helper", ["message_send: [actor]"]))
    me = Caller(agent_id=actor.agent_id, name=actor.name, workspace=actor.workspace)
    them = Caller(agent_id=helper.agent_id, name=helper.name, workspace=helper.workspace)
    try:
        for step in plan:
            op = step[0]
            if op in ("grant", "grant_helper"):
                who = actor if op == "grant" else helper
                params: dict[str, Any] = {"agent_id": who.agent_id, "grants": step[1]}
                if step[2] is not None:
                    params["max_invocations"] = step[2]
                if step[3] is not None:
                    params["expires"] = step[3]
                w.run(k.pipeline.run(OPERATOR, "cap.grant", params))
                continue
            if op == "delegate":  # a chain: root → helper → actor (refused when helper lacks it)
                params = {"to": "actor", "grants": step[1]}
                if step[2] is not None:
                    params["max_invocations"] = step[2]
                if step[3] is not None:
                    params["expires"] = step[3]
                try:
                    w.run(k.pipeline.run(them, "cap.delegate", params, taint=helper.taint))
                except AgentixError:
                    pass
                continue
            if op == "revoke":
                toks = k.caps.held.get(actor.agent_id, []) + k.caps.held.get(helper.agent_id, [])
                if toks:
                    w.run(k.pipeline.run(OPERATOR, "cap.revoke", {"token_id": toks[step[1] % len(toks)].id}))
                continue
            one_call(w, actor, me, step)
    finally:
        for rec in (actor, helper):
            for c in list(rec.children):
                w.run(k.kill(k.table.get(c)))
            w.run(k.kill(rec))
        for r in w.recipients.values():  # drain: the recipients' mailboxes stay small
            while w.run(k.receive(r, 0.0)) is not None:
                pass


def one_call(w: World, actor: Any, me: Caller, step: tuple[Any, ...]) -> None:
    k, data, n = w.k, w.data, next(w.n)
    op = step[0]
    touched: list[tuple[str, str]] = []  # (kind, value) of each resource with an observed effect

    if op == "file_write":
        path = data / step[1] / f"w{n}.txt"
        method, params = "tool.call", {"name": "file_write", "args": {"path": str(path), "content": "x"}}
        observe = lambda res: [("file_write", str(path))] if path.exists() else []  # noqa: E731
    elif op in ("file_read", "file_read_many"):
        dirs = [step[1]] if op == "file_read" else step[1]
        paths = [str(data / d / "f.txt") for d in dirs]
        args = {"path": paths[0]} if op == "file_read" else {"paths": paths}
        method, params = "tool.call", {"name": op, "args": args}

        def observe(res: Any) -> list[tuple[str, str]]:
            text = repr(res)
            return [("file_read", p) for p, d in zip(paths, dirs)
                    if "/" not in d and f"CONTENT-{d}" in text]
    elif op == "web_fetch":
        mark = f"/hit{n}"
        method, params = "tool.call", {"name": "web_fetch", "args": {"url": f"http://{step[1]}:{w.port}{mark}"}}
        observe = lambda res: [("network", step[1])] if mark in Hits.seen else []  # noqa: E731
    elif op == "ipc.send":
        target = w.recipients[step[1]]
        before = len(target.mailbox)
        method, params = "ipc.send", {"to": step[1], "message": n}
        observe = lambda res: [("message_send", step[1])] if len(target.mailbox) > before else []  # noqa: E731
    elif op == "cap.delegate_out":
        target = w.recipients[step[1]]
        before = len(k.caps.held.get(target.agent_id, []))
        method, params = "cap.delegate", {"to": step[1], "grants": step[2]}

        def observe(res: Any) -> list[tuple[str, str]]:
            if len(k.caps.held.get(target.agent_id, [])) == before:
                return []
            out = [("message_send", step[1])]
            for g in step[2]:
                kind, vals = parse(g)
                out += [(kind, v) for v in vals]
            return out
    elif op == "think":
        method, params = "think", {"messages": [{"role": "user", "content": "hi"}], "model": step[1]}
        observe = lambda res: [("model", step[1])] if isinstance(res, dict) and res.get("text") else []  # noqa: E731
    elif op == "echo":
        method, params = "tool.call", {"name": "echo", "args": {"message": "m"}}
        observe = lambda res: [("tool", "echo")] if res == {"echo": "m"} else []  # noqa: E731
    else:  # spawn_child
        before_children = len(actor.children)
        method, params = "agent.spawn_child", {"manifest": {
            "name": step[1], "program": "sleeper.py", "isolation": "degraded"}}
        observe = lambda res: [("spawn_child", step[1])] if len(actor.children) > before_children else []  # noqa: E731

    held = list(k.caps.held.get(actor.agent_id, []))
    ledger = k.caps.ledger
    began = time.time()
    live_before = {t.id: not ledger.is_revoked(t) and (t.expires_at is None or began < t.expires_at)
                   for t in held}
    # counts are kept for limited tokens (each limited link of the chain); an unlimited one has
    # nothing to charge
    bids = {bid for t in held for bid, _lim in t.limits}
    used_before = {bid: ledger.used(bid) for bid in bids}
    result: Any = None
    error: AgentixError | None = None
    try:
        result = w.run(k.pipeline.run(me, method, params, taint=actor.taint))
    except AgentixError as err:
        error = err
    effects = observe(result)
    moved = {bid for bid in bids if ledger.used(bid) != used_before[bid]}
    charged = {t.id for t in held if all(bid in moved for bid, _lim in t.limits)}

    event(f"{op}: {'effect' if effects else error.code if error is not None else 'no effect'}")
    if error is not None and error.code in REFUSALS:
        assert effects == [], (step, error.code, effects)
        assert moved == set(), (step, error.code, "a refusal charged", moved)
    for kind, value in effects:
        ok = [t for t in held if live_before[t.id] and t.id in charged and covers(t.grants.strings(), kind, value)]
        assert ok, (f"{op}: {kind} {value} happened without a live covering charged token",
                    [(t.grants.strings(), live_before[t.id], t.id in charged) for t in held])
    if op == "file_write":  # nothing else under the data tree appeared
        assert all(p.name == "f.txt" or p.is_dir() or p.name.startswith("w")
                   for p in data.rglob("*"))


# ---------------------------------------------------------------------------- the properties
@pytest.mark.usefixtures("world")
@settings(max_examples=int(os.environ.get("AGENTIX_PROPERTY_EXAMPLES", "12")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_no_effect_without_a_live_covering_charged_token(world: World, data: Any) -> None:
    check(world, data.draw(steps(world.data)))


@pytest.mark.slow
@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_no_effect_without_a_live_covering_charged_token_long(world: World, data: Any) -> None:
    check(world, data.draw(steps(world.data)))


def test_the_reference_reads_grants_as_documented() -> None:
    """The reference itself, on the edges that matter (a reference that says yes to
    everything would make the property vacuous)."""
    assert covers(["file_write: /d/*"], "file_write", "/d/a/x") and covers(["file_write: /d/*"], "file_write", "/d")
    assert not covers(["file_write: /d/*"], "file_write", "/d-x/a") and not covers(["file_read: /d/*"], "file_write", "/d/x")
    assert covers(["message_send: [r1, r2]"], "message_send", "r2") and not covers(["message_send: [r1]"], "message_send", "r2")
    assert covers(["model: sim:*"], "model", "sim:other") and not covers(["model: sim:engine"], "model", "sim:other")
    assert covers(["network: 127.0.0.1"], "network", "127.0.0.1") and not covers(["network: 127.0.0.1"], "network", "localhost")
