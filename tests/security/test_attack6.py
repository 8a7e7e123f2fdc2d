"""Attack round 6 on the trust core: work with an effect that a cancelled or revoked call left
running in a worker thread (a program copied into a refused child's workspace, saved state
written after its call ended), and the review that keeps every bare ``asyncio.to_thread`` in
the kernel, the tools and the packages an allowed, reasoned site.

Each test asserts the refusal AND that the world did not move after it. Harness: the
scenarios' one (``_world.py``), a real kernel, real agent processes, a real workspace.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _world import World, run, tool  # noqa: E402  (same directory)
from test_attack4_core import _caller, _until, _World  # noqa: E402  (its sleeping agent and hang guard)

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from agentix.kernel import spawn as spawn_mod  # noqa: E402


class _Held:
    """Wraps a function run in a worker thread: the thread waits inside it until the test
    opens it (so the cancellation surely comes while the thread is at work), then runs the
    real function, and says when the thread has left."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.entered = threading.Event()
        self.open = threading.Event()
        self.left = threading.Event()

    def __call__(self, *a: Any, **kw: Any) -> Any:
        self.entered.set()
        self.open.wait(30)
        try:
            return self.real(*a, **kw)
        finally:
            self.left.set()


async def _answer(aw: Any) -> Any:
    """What awaiting ``aw`` answered: its result, or its error's code (a hang guard of 30 s)."""
    try:
        return await asyncio.wait_for(aw, 30)
    except BaseException as err:  # noqa: BLE001 - a cancellation is an answer here too
        return getattr(err, "code", type(err).__name__)


async def _ended_while_held(call: Any, held: _Held, what: str) -> Any:
    """End ``call`` while its worker thread is held inside ``what``, let the thread go on, and
    return what the call answered once the thread is done (a late write has landed by then)."""
    await _until(lambda: held.entered.is_set() or call.done(), f"the {what} in its thread")
    assert not call.done(), call.result()
    call.cancel()
    await asyncio.sleep(0.2)
    held.open.set()
    answer = await _answer(call)
    await _until(held.left.is_set, f"the {what}'s thread done")
    return answer


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_child_spawn_revoked_while_its_program_is_copied_leaves_no_workspace(tmp_path, monkeypatch):
    """``agent.spawn_child`` copies the child's program into the child's new workspace in a
    worker thread. Before, revoking the parent's ``spawn_child`` token during that copy
    answered ``capability_revoked`` at once and removed the workspace while the thread was still
    copying (up to the program bounds, after the refusal; a copy caught between the removal's
    listing and its last ``rmdir`` left files behind). Now the refusal comes once the thread is
    done, and then the unwinding removes everything it made."""
    held = _Held(spawn_mod.install_program)
    monkeypatch.setattr(spawn_mod, "install_program", held)

    async def body(w: World) -> dict[str, Any]:
        held.open.set()  # the parent itself is copied without waiting (before: it waited out
        # the 30 s hold, since the gate opened only once its spawn had returned)
        parent = await w.spawn(["spawn_child: [kid]"], name="parent", program="sleeper.py")
        (Path(parent.workspace) / "kid.py").write_text("print('kid')\n")
        await _until(held.left.is_set, "the parent's own copy")
        held.entered.clear(), held.open.clear(), held.left.clear()
        before = _tree(w.home.workspaces)
        agents = sorted(r.agent_id for r in w.k.table)
        call = asyncio.ensure_future(w.k.pipeline.run(_caller(parent), "agent.spawn_child", {
            "manifest": {"name": "kid", "program": "kid.py", "isolation": w.isolation}}))
        await _until(lambda: held.entered.is_set() or call.done(), "the program copy in its thread")
        assert not call.done(), call.result()
        for t in w.k.caps.held[parent.agent_id]:
            await w.op("cap.revoke", token_id=t.id)
        await asyncio.sleep(0.2)  # before: the refusal is answered here, the copy still waiting
        early = call.done()
        held.open.set()
        outcome = await _answer(call)
        settled = held.left.is_set()  # the answer came once the thread was done
        await _until(held.left.is_set, "the copy's thread done")
        await asyncio.sleep(0.2)  # anything the thread still does lands now
        after = _tree(w.home.workspaces)
        return {"outcome": outcome, "before": before, "after": after, "children": list(parent.children),
                "agents": agents, "early": early, "settled": settled, "agents_after": sorted(r.agent_id for r in w.k.table)}

    r = run(tmp_path, body, world=_World)
    assert r["outcome"] == "capability_revoked", r
    assert not r["early"] and r["settled"], r
    assert r["after"] == r["before"], r
    assert r["children"] == [], r
    assert r["agents_after"] == r["agents"], r


def test_a_state_save_whose_call_ends_mid_write_answers_what_it_did(tmp_path, monkeypatch):
    """``agent.state_save`` writes in a worker thread. Before, a call ended meanwhile (its
    agent stopped, its connection closed: the call's task cancelled) was answered as
    cancelled, and the thread then saved the value anyway: the refusal said it never happened.
    Now the answer agrees with the store: the save is either answered as done, or refused
    with nothing saved."""

    async def body(w: World) -> dict[str, Any]:
        rec = await w.spawn([], name="saver", program="sleeper.py")
        held = _Held(w.k.state_store.save)
        monkeypatch.setattr(w.k.state_store, "save", held)
        call = asyncio.ensure_future(w.k.pipeline.run(_caller(rec), "agent.state_save",
                                                      {"key": "k", "value": "late"}))
        answer = await _ended_while_held(call, held, "save")
        from agentix.kernel.persistent import state_identity
        try:
            stored: Any = w.k.state_store.load_labelled(state_identity(rec), "k")[0]
        except Exception as err:  # noqa: BLE001
            stored = getattr(err, "code", type(err).__name__)
        return {"answer": answer, "stored": stored}

    r = run(tmp_path, body, world=_World)
    if isinstance(r["answer"], dict):
        assert r["answer"]["saved"] is True and r["stored"] == "late", r
    else:
        assert r["stored"] != "late", r


def test_an_agent_holding_every_path_reaches_no_siblings_workspace_nor_the_kernels_home(tmp_path):
    """Confused deputy through the file tools: an agent granted ``file_read: /*`` and
    ``file_write: /*`` names its sibling's workspace (and the kernel's database) by host path,
    through ``..``, doubled slashes, a trailing dot, a symlink in its own workspace, /proc, and a
    look-alike Unicode form of the path. Each is refused, and the sibling's files are as they
    were: no file read back, none written, none made."""

    async def body(w: World) -> dict[str, Any]:
        sib = await w.spawn([], name="sibling", program="sleeper.py")
        sws = Path(sib.workspace)
        (sws / "secret.txt").write_text("the sibling's secret\n")
        att = await w.spawn(["file_read: /*", "file_write: /*"], name="attacker")
        aws = Path(att.workspace)
        (aws / "link").symlink_to(sws)
        (aws / "dblink").symlink_to(w.home.root / "agentix.db")
        s, h = str(sws), str(w.home.root)
        reads = [f"{s}/secret.txt", f"{s}//secret.txt", f"{s}/./secret.txt",
                 f"{aws}/../{sib.agent_id}/secret.txt", f"/workspace/../{sib.agent_id}/secret.txt",
                 "/workspace/link/secret.txt", "link/secret.txt", "dblink", f"{h}/agentix.db",
                 f"/proc/{sib.pid}/root{s}/secret.txt" if sib.pid else f"/proc/1/root{s}/secret.txt",
                 f"/proc/self/cwd/../{sib.agent_id}/secret.txt",
                 s.replace("workspaces", "workspaceｓ") + "/secret.txt"]  # fullwidth s
        calls = [tool("file_read", path=p) for p in reads]
        calls += [tool("file_list", path=s), tool("grep", pattern="secret", path=s),
                  tool("file_write", path=f"{s}/planted.txt", content="x"),
                  tool("file_write", path="/workspace/link/planted.txt", content="x"),
                  tool("file_edit", path=f"{s}/secret.txt", old="secret", new="stolen")]
        before = {p: (sws / p).read_bytes() for p in _tree(sws) if (sws / p).is_file()}
        res = await w.calls(att, calls)
        after = {p: (sws / p).read_bytes() for p in _tree(sws) if (sws / p).is_file()}
        return {"res": res, "before": before, "after": after, "n": len(reads)}

    r = run(tmp_path, body, world=_World)
    leaked = [(i, x) for i, x in enumerate(r["res"]) if "ok" in x]
    assert leaked == [], leaked
    assert all("the sibling's secret" not in str(x) for x in r["res"]), r["res"]
    assert r["after"] == r["before"], r


def test_a_delegation_or_a_childs_manifest_of_too_many_grants_is_refused_and_changes_nothing(tmp_path):
    """One ``cap.delegate`` of 5,000 grants (a frame holds ~40,000) held the kernel's event loop
    for 30 s on this host: every other agent's call waited (the decision looked up each grant's
    token by a linear scan, and minting grew with the grants). Now a set of more than
    ``MAX_GRANTS`` grants is ``limit_exceeded`` before anything is minted (a delegation, a
    child's manifest, all its groups together), and the lookup is a dict. Nothing is
    installed, no child spawned, nothing delegated is recorded."""
    from agentix.core.grants import MAX_GRANTS

    many = [f"file_read: /data/p{i}/*" for i in range(MAX_GRANTS + 1)]
    split = [{"grant": many[: MAX_GRANTS // 2 + 1]}, {"grant": many[MAX_GRANTS // 2 + 1:]}]

    async def body(w: World) -> dict[str, Any]:
        a = await w.spawn(["message_send: [b]", "file_read: /data/*", "spawn_child: [kid]"], name="a",
                          program="sleeper.py")
        b = await w.spawn([], name="b", program="sleeper.py")
        (Path(a.workspace) / "kid.py").write_text("print('kid')\n")
        held = {x.name: len(w.k.caps.held.get(x.agent_id, [])) for x in (a, b)}
        out = []
        for method, params in [
                ("cap.delegate", {"to": "b", "grants": many}),
                ("cap.delegate", {"to": "b", "grants": ["file_read: " + ", ".join(f"/data/q{i}/*" for i in range(400))]}),
                ("agent.spawn_child", {"manifest": {"name": "kid", "program": "kid.py", "capabilities": many}}),
                ("agent.spawn_child", {"manifest": {"name": "kid", "program": "kid.py", "capabilities": split}}),
                ("cap.delegate", {"to": "b", "grants": many[:MAX_GRANTS]})]:  # at the bound: delegated
            answer = await _answer(w.k.pipeline.run(_caller(a), method, params))
            out.append("ok" if isinstance(answer, dict) else answer)
        return {"out": out, "held": held,
                "held_after": {x.name: len(w.k.caps.held.get(x.agent_id, [])) for x in (a, b)},
                "children": list(a.children), "delegated": len(w.events("capability.delegated"))}

    r = run(tmp_path, body, world=_World)
    assert r["out"][:4] == ["limit_exceeded"] * 4, r["out"]
    assert r["out"][4] == "ok", r["out"]
    assert r["children"] == [] and r["delegated"] == 1, r
    assert r["held_after"] == {"a": r["held"]["a"], "b": r["held"]["b"] + 1}, r


def test_parallel_calls_racing_a_budget_and_a_childs_carved_share_never_exceed_it(tmp_path):
    """Budget bypass by parallel calls: a parent with ``max_tool_calls: 6`` carves 3 for a
    child, then parent and child fire 25 calls each at once (tasks on the kernel's loop, as
    many connections would). Exactly 6 run in all (the reservation is taken in the same step
    as the decision, no await between), the rest are ``budget_exceeded``, and the parent
    holds no more than it had once the child is gone."""

    async def body(w: World) -> dict[str, Any]:
        parent = await w.spawn(["tool: echo", "spawn_child: [kid]"], name="parent", program="sleeper.py",
                               budget={"max_tool_calls": 6})
        (Path(parent.workspace) / "kid.py").write_text("import time\nfrom agentix.sdk import agent\n"
                                                      "k = agent.connect()\ntime.sleep(3600)\n")
        await w.k.pipeline.run(_caller(parent), "agent.spawn_child", {"manifest": {
            "name": "kid", "program": "kid.py", "isolation": w.isolation, "capabilities": ["tool: echo"],
            "budget": {"max_tool_calls": 3}}})
        kid = w.k.table.get(parent.children[0])

        async def one(rec: Any) -> str:
            answer = await _answer(w.k.pipeline.run(_caller(rec), "tool.call",
                                                    {"name": "echo", "args": {"message": "x"}}))
            return "ok" if isinstance(answer, dict) else answer

        res = await asyncio.gather(*(one(r) for _ in range(25) for r in (parent, kid)))
        def echoes() -> int:  # a no_effect call's record rides the next group commit
            return len([e for e in w.events("tool.result") if e["data"].get("tool") == "echo" and e["data"]["ok"]])

        await _until(lambda: echoes() >= 6, "the echoes' records committed")
        await asyncio.sleep(0.5)  # (a seventh would be committed by now)
        return {"res": res, "echoes": echoes()}

    r = run(tmp_path, body, world=_World)
    assert r["res"].count("ok") == 6 and r["echoes"] == 6, r
    assert set(r["res"]) == {"ok", "budget_exceeded"}, r


_SOURCES = ["fetched_url", "untrusted_file", "agent_message", "external_tool"]


@given(st.lists(st.tuples(st.sampled_from(_SOURCES), st.text(max_size=12)), max_size=400))
@settings(max_examples=200, deadline=None)
def test_a_memory_records_labels_are_bounded_and_keep_every_source(pairs: list[tuple[str, str]]) -> None:
    """A context that read thousands of untrusted files holds a label each; a memory record it
    stores keeps at most ``MAX_LABELS`` of them, and never loses a source (what the taint
    policy refuses by, and ``untaint`` clears by): small sets are kept exactly."""
    import json

    from agentix.core.taint import MAX_LABELS
    from agentix.memory.store import _labels

    given_labels = {f"{s}:{o}" for s, o in pairs}
    stored = json.loads(_labels(given_labels))
    assert len(stored) <= MAX_LABELS
    assert {x.partition(":")[0] for x in stored} == {x.partition(":")[0] for x in given_labels}
    if len(given_labels) <= MAX_LABELS:
        assert stored == sorted(given_labels)


def test_a_memory_store_ended_while_its_text_is_embedded_stores_nothing(tmp_path, monkeypatch):
    """``memory_store`` embeds its text before it writes (with an API embedder, a network round
    trip). Before, its commit point came before the embedding, so a call ended meanwhile waited
    the embedding out and stored the record anyway; now the embedding runs before the commit
    point: ended during it, the call stores nothing."""

    async def body(w: World) -> dict[str, Any]:
        rec = await w.spawn(["tool: memory_store"], name="rememberer", program="sleeper.py")
        held = _Held(w.k.memory.embedder.embed_passages)
        monkeypatch.setattr(w.k.memory.embedder, "embed_passages", held)
        call = asyncio.ensure_future(w.k.pipeline.run(_caller(rec), "tool.call", {
            "name": "memory_store", "args": {"content": "a note stored late"}}))
        answer = await _ended_while_held(call, held, "embedding")
        await asyncio.sleep(0.2)  # a write after the embedding lands now
        return {"answer": answer, "stored": [r["content"] for r in w.k.memory.export(f"agent:{rec.agent_id}")]}

    r = run(tmp_path, body, world=_World)
    assert not isinstance(r["answer"], dict) and r["stored"] == [], r  # ended before any change
