"""The whole path through real kernels and a real loopback registry, driven by the CLI:
build and sign on one $AGENTIX_HOME, push, then pull, verify and run on another, with the
agent's capabilities bounded by declared ∩ accepted, and everything audited."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import Registry, make_context

AGENTIX = [sys.executable, "-m", "agentix.cli.main"]


def cli(kernel: Any, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AGENTIX, "--home", str(kernel.home), *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def ok(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


@pytest.fixture
def published(start_kernel: Any, registry: Registry, tmp_path: Path) -> tuple[Any, str, str]:
    """Kernel A built, signed and pushed team/hello:1.0.0; returns (A, ref, public key)."""
    a = start_kernel()
    ctx = make_context(tmp_path / "ctx")
    ref = registry.ref(f"team/hello-{tmp_path.name[-12:].lower().replace('_', '-')}:1.0.0")
    ok(cli(a, "build", str(ctx), "-t", ref))
    pub = ok(cli(a, "keys", "generate", "default")).strip().splitlines()[-1]
    ok(cli(a, "sign", ref))
    ok(cli(a, "push", ref))
    return a, ref, pub


def events(kernel: Any, kind: str) -> list[dict[str, Any]]:
    return [e for e in kernel.client.audit_tail(limit=1000) if e["kind"] == kind]


def test_a_package_built_here_runs_there_with_only_what_was_accepted(
        published: tuple[Any, str, str], start_kernel: Any, registry: Registry) -> None:
    _, ref, pub = published
    b = start_kernel()
    ok(cli(b, "trust", "add", pub, "--for", registry.ref("team/*")))
    p = cli(b, "run", ref, "--accept", "tool: echo", "--json")
    assert not list((b.home / "registry" / "tmp").iterdir())  # the unpacked tree was moved, not left
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout)
    res = out["result"]
    assert res["notes"] == "remember the milk"
    assert "agent" in res["workspace"]             # the package tree is the workspace
    assert res["echo"] == "ok"                      # declared and accepted
    assert res["write"] == "capability_denied"      # declared, not accepted
    assert res["fetch"] == "capability_denied"      # never declared
    assert out["package"]["granted"] == ["tool: echo"]
    assert out["package"]["verdict"]["basis"] == "signed"
    [acc] = events(b, "package.accepted")
    assert acc["data"]["declared"] == ["tool: echo", "file_write: /workspace/out/*"]
    assert acc["data"]["granted"] == ["tool: echo"]
    assert [e["data"]["ok"] for e in events(b, "package.run")] == [True]


def test_accepting_more_than_declared_is_refused_and_nothing_runs(
        published: tuple[Any, str, str], start_kernel: Any, registry: Registry) -> None:
    _, ref, pub = published
    b = start_kernel()
    ok(cli(b, "trust", "add", pub, "--for", registry.ref("team/*")))
    p = cli(b, "run", ref, "--accept", "tool: echo", "--accept", "network: *")
    assert p.returncode == 4, p.stdout + p.stderr
    assert "does not declare network: *" in p.stderr
    assert b.client.list() == []
    [refusal] = events(b, "package.run")
    assert refusal["data"]["ok"] is False and refusal["data"]["missing"] == ["network: *"]


def test_an_untrusted_package_is_refused_audited_and_not_stored(
        published: tuple[Any, str, str], start_kernel: Any) -> None:
    _, ref, _ = published
    b = start_kernel()
    p = cli(b, "run", ref, "--accept", "all")
    assert p.returncode == 4, p.stdout + p.stderr
    assert "not trusted" in p.stderr or "trust" in p.stderr
    assert b.client.list() == []
    assert json.loads(ok(cli(b, "packages", "ls", "--json"))) == []
    assert any(e["data"].get("reason") == "untrusted_key" for e in events(b, "package.run"))


def test_without_accept_a_non_interactive_run_shows_the_declared_capabilities(
        published: tuple[Any, str, str], start_kernel: Any, registry: Registry) -> None:
    _, ref, pub = published
    b = start_kernel()
    ok(cli(b, "trust", "add", pub, "--for", registry.ref("team/*")))
    p = cli(b, "run", ref)
    assert p.returncode == 2
    assert "file_write: /workspace/out/*" in p.stderr and "--accept" in p.stderr
    assert b.client.list() == []


def test_unsigned_package_allowed_by_policy_runs_and_is_audited(start_kernel: Any, tmp_path: Path) -> None:
    k = start_kernel()
    ctx = make_context(tmp_path / "ctx")
    ok(cli(k, "build", str(ctx), "-t", "local/hello:1.0.0"))
    assert cli(k, "run", "local/hello:1.0.0", "--accept", "all").returncode == 4
    ok(cli(k, "trust", "allow-unsigned", "local/*"))
    out = json.loads(ok(cli(k, "run", "local/hello:1.0.0", "--accept", "all", "--json")))
    assert out["result"]["write"] == "ok" and out["package"]["verdict"]["basis"] == "unsigned_allowed"
    [note] = events(k, "package.unsigned_accepted")
    assert note["data"]["name"] == "local/hello"
    assert k.client.audit_verify()["ok"] is True


def test_a_registry_failure_exits_6_with_a_clear_message(start_kernel: Any) -> None:
    from .conftest import free_port

    k = start_kernel()
    p = cli(k, "pull", f"127.0.0.1:{free_port()}/team/x:1.0.0")
    assert p.returncode == 6, p.stdout + p.stderr
    assert "cannot reach the registry" in p.stderr
    [e] = events(k, "package.pull")
    assert e["data"]["ok"] is False and e["data"]["reason"] == "unreachable"


CHILD_PARENT = """\
import json
from agentix.sdk import agent

k = agent.connect()
out = {}
for label, caps in (("narrower", ["tool: echo"]), ("wider", ["tool: echo", "network: *"])):
    try:
        c = k.spawn({"name": "child", "program": "agent/child.py", "capabilities": caps})
        out[label] = k.wait_child(c.agent_id, timeout=30).reason
    except Exception as err:
        out[label] = getattr(err, "code", repr(err))
k.exit(out)
"""


def test_a_child_of_a_package_agent_never_gets_more_than_the_package_was_granted(
        start_kernel: Any, tmp_path: Path) -> None:
    k = start_kernel()
    ctx = make_context(tmp_path / "ctx", program=CHILD_PARENT)
    (ctx / "agent" / "child.py").write_text("from agentix.sdk import agent\nagent.connect().exit('child ran')\n")
    af = (ctx / "Agentfile").read_text().replace('  - "tool: echo"\n', '  - "tool: echo"\n  - "spawn_child: child"\n')
    (ctx / "Agentfile").write_text(af)
    ok(cli(k, "build", str(ctx), "-t", "local/parent:1.0.0"))
    ok(cli(k, "trust", "allow-unsigned", "local/*"))
    out = json.loads(ok(cli(k, "run", "local/parent:1.0.0", "--accept", "tool: echo", "--accept",
                           "spawn_child: child", "--json")))
    assert out["result"]["narrower"] == "completed"
    assert out["result"]["wider"] in ("handoff_escalation_denied", "capability_denied")
    assert out["package"]["granted"] == ["tool: echo", "spawn_child: child"]


def test_built_on_one_kernel_it_runs_on_another_that_shares_only_the_registry_and_a_public_key_file(
        start_kernel: Any, registry: Registry, tmp_path: Path) -> None:
    """Issue #15's "done when", exactly: two kernels with separate $AGENTIX_HOMEs. A builds,
    signs and pushes; all B ever gets is the loopback registry and A's public key exported to
    a file (B holds no signing key). B pulls on `run`, verifies the signature under its own
    trust policy, and the agent holds exactly declared ∩ accepted — even accepting "all", a
    capability the package never declared is denied."""
    a, b = start_kernel(), start_kernel()
    assert not set(a.home.resolve().parents) & {b.home.resolve()} and a.home.resolve() != b.home.resolve()
    ctx = make_context(tmp_path / "ctx")
    ref = registry.ref("team/done-when:1.0.0")
    ok(cli(a, "build", str(ctx), "-t", ref))
    ok(cli(a, "keys", "generate", "publisher"))
    ok(cli(a, "sign", ref, "--key", "publisher"))
    ok(cli(a, "push", ref))
    [key] = json.loads(ok(cli(a, "keys", "list", "--json")))
    exported = tmp_path / "publisher.pub"
    exported.write_text(key["public_key"] + "\n")

    assert json.loads(ok(cli(b, "keys", "list", "--json"))) == []      # B signs nothing, holds no key
    assert json.loads(ok(cli(b, "packages", "ls", "--json"))) == []    # and has no package yet
    p = cli(b, "run", ref, "--accept", "all", "--json")
    assert p.returncode == 4, p.stdout + p.stderr                      # no trust policy yet: refused
    ok(cli(b, "trust", "add", str(exported), "--for", registry.ref("team/*")))
    out = json.loads(ok(cli(b, "run", ref, "--accept", "all", "--json")))
    assert out["package"]["verdict"]["basis"] == "signed" and out["package"]["verdict"]["keyid"] == key["keyid"]
    assert [x["ref"] for x in json.loads(ok(cli(b, "packages", "ls", "--json")))] == [ref]  # pulled by the run
    assert out["package"]["granted"] == ["tool: echo", "file_write: /workspace/out/*"]
    res = out["result"]
    assert res["echo"] == "ok" and res["write"] == "ok"    # declared and accepted
    assert res["fetch"] == "capability_denied"             # never declared: the ceiling holds
    [acc] = events(b, "package.accepted")
    assert acc["data"]["accepted"] == "all" and acc["data"]["granted"] == acc["data"]["declared"]
    assert b.client.audit_verify()["ok"] is True
