"""CrewAI on agentix: a real two-agent ``Crew`` runs in a sandboxed agent process, each crew
agent's model calls and tools made by a child agentix agent of its own (its own grants), the
model ``think`` (the scripted provider through a real kernel).

CrewAI is not an extra of agentix (its pins clash with the mcp and openai-agents extras), so
this test runs only where crewai is installed: ``make test`` runs it after the main suite in
CrewAI's own environment, ``.venv-crewai`` (built from ``requirements-crewai.lock``; ``make
test-crewai`` for this part alone), where the in-process kernel's sandboxed agents run that
venv's Python and so import crewai. In the main venv it is skipped, saying why
(docs/integrations.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("crewai", reason="crewai is not installed (not an agentix extra: it pins mcp<2 and "
                                     "openai<3); `make test-crewai` runs this test in .venv-crewai "
                                     "(docs/integrations.md)")

from tests.adapters._harness import needs_bwrap, run_example  # noqa: E402

pytestmark = needs_bwrap


def test_a_two_agent_crew_runs_with_each_crew_agent_an_agentix_agent(tmp_path):
    run = run_example(tmp_path, "crewai_team", "pond frogs", manifest="crew.yaml", timeout=300)
    rec = run.rec
    assert rec.exit.reason == "completed", run.log
    out = rec.result
    assert out["tasks"] == ["frogs croak", "report.md is written"]
    members = {r.name: r for r in run.k.table if r.parent == rec.agent_id}
    assert set(members) == {"researcher", "writer"}
    # each member held its own grants, not the crew's
    assert out["grants"]["researcher"] == ["model: sim:engine", "tool: echo", "message_send: crew"]
    assert out["grants"]["writer"] == ["model: sim:engine", "file_write: /workspace/*", "message_send: crew"]
    # the tools ran as the member that owned them
    ok = [(e["agent"], e["data"]["tool"]) for e in run.of("tool.result") if e["data"]["ok"]]
    assert ok == [(members["researcher"].agent_id, "echo"), (members["writer"].agent_id, "file_write")]
    assert (members["writer"].workspace / "report.md").read_text() == "# Frogs\nfrogs croak"
    # the write outside the writer's grant was refused by the kernel, and nothing was written
    denied = run.of("capability.denied")
    assert [e["agent"] for e in denied] == [members["writer"].agent_id]
    assert not Path("/etc/crew-was-here").exists()
    # every model call was a think charged to the member that made it, none to the crew
    by = [e["agent"] for e in run.of("usage.reported")]
    assert by.count(members["researcher"].agent_id) == 2 and by.count(members["writer"].agent_id) == 3
    assert rec.agent_id not in by
