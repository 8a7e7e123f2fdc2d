"""Lines of issue #15 that no other test proved (the audit of session 7; the table of which
test proves which line is in the pkg-audit report): the layer cache is keyed by each step's
own inputs (a changed step rebuilds itself and the run steps after it, nothing before it);
on a terminal `agentix run` shows the declared capabilities and asks; an install (a pull) and
its refusal are audited with the verdict."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from pathlib import Path
from typing import Any

from .conftest import Registry, make_context
from .test_build_run import GEN, with_run
from .test_run_e2e import AGENTIX, cli, events, ok


# ---------------------------------------------------------------- the layer cache
def test_a_changed_step_rebuilds_itself_and_the_run_steps_after_it_and_nothing_before(
        start_kernel: Any, tmp_path: Path) -> None:
    """Steps: copy agent/, run GEN (sees agent/), copy data/notes.txt. ``cached`` is per layer."""
    k = start_kernel()
    ctx = with_run(make_context(tmp_path / "ctx"), "python3", "-c", GEN)

    def build() -> dict[str, Any]:
        return k.client.call("package.build", context=str(ctx), tag="team/hello:1.0.0")

    cold = build()
    assert cold["cached"] == [False, False, False]
    # the first step's input: it and the run step after it (which saw its files) are rebuilt
    (ctx / "agent" / "util.py").write_text("X = 2\n")
    first = build()
    assert first["cached"] == [False, False, True]
    assert first["layers"][2] == cold["layers"][2] and first["layers"][0] != cold["layers"][0]
    # the last step's input: only it
    (ctx / "data" / "notes.txt").write_text("remember the eggs\n")
    last = build()
    assert last["cached"] == [True, True, False] and last["layers"][:2] == first["layers"][:2]
    # the run step's own input (its argv): only it; the copy steps around it are cache hits
    af = (ctx / "Agentfile").read_text().replace("made in the sandbox", "made again")
    (ctx / "Agentfile").write_text(af)
    own = build()
    assert own["cached"] == [True, False, True]
    assert own["layers"][0] == last["layers"][0] and own["layers"][2] == last["layers"][2]
    assert own["layers"][1] != last["layers"][1]
    # and back to an earlier state: every layer from the cache, the earlier digest
    (ctx / "Agentfile").write_text(af.replace("made again", "made in the sandbox"))
    assert build() == {**last, "cached": [True, True, True]}


# ---------------------------------------------------------------- the prompt on a terminal
def _run_on_a_terminal(kernel: Any, args: list[str], answer: bytes, timeout: float = 90) -> tuple[int, str]:
    """``agentix ARGS`` with a pseudo-terminal as stdin/stdout; ``answer`` is typed once the
    question shows. Returns (exit code, everything it printed)."""
    leader, follower = pty.openpty()
    p = subprocess.Popen([*AGENTIX, "--home", str(kernel.home), *args], stdin=follower, stdout=follower,
                         stderr=follower, close_fds=True)
    os.close(follower)
    out = b""
    typed = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:  # the other side closed: the command ended
                    break
                if not chunk:
                    break
                out += chunk
                if not typed and b"accept all of them?" in out:
                    os.write(leader, answer)
                    typed = True
            elif p.poll() is not None:
                break
        return p.wait(timeout=max(1.0, deadline - time.monotonic())), out.decode(errors="replace")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(leader)


def test_on_a_terminal_run_shows_the_declared_capabilities_and_asks(start_kernel: Any, tmp_path: Path) -> None:
    k = start_kernel()
    ok(cli(k, "build", str(make_context(tmp_path / "ctx")), "-t", "local/hello:1.0.0"))
    ok(cli(k, "trust", "allow-unsigned", "local/*"))
    code, out = _run_on_a_terminal(k, ["run", "local/hello:1.0.0"], b"n\n")
    assert code == 2, out
    assert "tool: echo" in out and "file_write: /workspace/out/*" in out and "accept all of them?" in out
    assert k.client.list() == [] and events(k, "package.accepted") == []   # said no: nothing ran
    code, out = _run_on_a_terminal(k, ["run", "local/hello:1.0.0"], b"y\n")
    assert code == 0, out
    [acc] = events(k, "package.accepted")
    assert acc["data"]["accepted"] == "all"
    assert acc["data"]["granted"] == ["tool: echo", "file_write: /workspace/out/*"]


# ---------------------------------------------------------------- install and refusal, audited
def test_an_install_and_a_refused_install_are_audited_with_the_verdict(
        start_kernel: Any, registry: Registry, tmp_path: Path) -> None:
    a = start_kernel()
    ref = registry.ref("team/audited:1.0.0")
    ok(cli(a, "build", str(make_context(tmp_path / "ctx")), "-t", ref))
    pub = ok(cli(a, "keys", "generate", "default")).strip().splitlines()[-1]
    ok(cli(a, "sign", ref))
    ok(cli(a, "push", ref))
    digest = a.client.call("package.inspect", ref=ref)["digest"]
    keyid = a.client.call("keys.list")["keys"][0]["keyid"]

    b = start_kernel()
    assert cli(b, "pull", ref).returncode != 0                      # no key trusted yet
    [refused] = events(b, "package.pull")
    assert refused["data"]["ok"] is False and refused["data"]["reason"] == "untrusted_key"
    assert refused["data"]["name"] == registry.ref("team/audited") and refused["data"]["digest"] == digest
    ok(cli(b, "trust", "add", pub, "--for", registry.ref("team/*")))
    [added] = events(b, "trust.add")
    assert added["data"]["ok"] is True and added["data"]["pattern"] == registry.ref("team/*")
    ok(cli(b, "pull", ref))
    installed = [e["data"] for e in events(b, "package.pull") if e["data"]["ok"]]
    assert len(installed) == 1
    assert {k_: installed[0][k_] for k_ in ("ref", "digest", "basis", "keyid", "name", "version")} == {
        "ref": ref, "digest": digest, "basis": "signed", "keyid": keyid,
        "name": registry.ref("team/audited"), "version": "1.0.0"}
    assert b.client.audit_verify()["ok"] is True


# ---------------------------------------------------------------- budget spent, in tokens
SCRIPTED = ('default_model = "sim:engine"\n\n[providers.sim]\nkind = "scripted"\n'
            'script = "turns.yaml"\nloop = true\n')
TURNS = "- text: thought\n  usage: {input_tokens: 40, output_tokens: 25}\n"


def test_the_tokens_an_agent_spent_are_carried_into_the_restored_agent(start_kernel: Any) -> None:
    """Not only tool calls (tests/packages/test_snapshots.py): the model tokens it spent. The
    restored agent runs the same program, whose first call (think) it is not granted: its
    counters are the snapshot's, not a fresh start's and not a second think's."""
    from conftest import wait_until

    def prepare(home: Path) -> None:
        (home / "config.toml").write_text(SCRIPTED)
        (home / "turns.yaml").write_text(TURNS)

    k = start_kernel(prepare=prepare)
    think = ["think", {"messages": [{"role": "user", "content": "hi"}]}]
    aid = k.spawn("calls.py", json.dumps([think, ["sleep", 120]]), name="thinker",
                  capabilities=["model: sim:*", "tool: echo"])
    assert wait_until(lambda: k.client.status(aid).raw["budget"]["used"]["input_tokens"] == 40, timeout=30)
    spent = k.client.status(aid).raw["budget"]["used"]
    assert spent["output_tokens"] == 25
    snap = k.client.call("snapshot.create", agent=aid)
    r = k.client.call("snapshot.restore", ref=snap["ref"], grants=["tool: echo"])
    used = k.client.status(r["agent_id"]).raw["budget"]["used"]
    assert (used["input_tokens"], used["output_tokens"]) == (40, 25)
    assert used["cost_usd"] == spent["cost_usd"]


# ---------------------------------------------------------------- untrusted, allowed by name
def test_a_package_signed_only_by_an_untrusted_key_runs_only_where_the_policy_allows_that_name(
        store: Any, context: Path) -> None:
    """"unsigned or untrusted packages are refused unless the policy explicitly allows them for
    that name": a signature by a key trusted for nothing counts for nothing — refused, also
    under a pattern for another name — and where the name is allowed it runs as unsigned
    (basis ``unsigned_allowed``: what `run` and `pull` audit as ``package.unsigned_accepted``)."""
    import pytest

    from agentix.core.errors import PackageRejected

    from .test_trust import REF, assert_nothing_moved, run_dir

    store.build(context, REF)
    store.keys.generate("stranger")
    store.sign(REF, "stranger")
    for allowed in (None, "team/other", "other/*"):
        if allowed:
            store.trust_allow_unsigned(allowed)
        with pytest.raises(PackageRejected) as exc:
            store.prepare(REF, "all", run_dir(store))
        assert exc.value.data["reason"] == "untrusted_key"
        assert_nothing_moved(store)
    store.trust_allow_unsigned("team/hello")
    p = store.prepare(REF, "all", run_dir(store))
    assert p.verdict.basis == "unsigned_allowed" and p.verdict.keyid is None
