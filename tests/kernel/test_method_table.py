"""The method table is the policy: every registered method has a row, and nothing else runs.

h11's rule, "a missing key means refuse": a method without a policy cannot be registered, an
unknown method is refused, and an agent method that touches no token-governed resource must
be one of the few listed here as acting on the caller's own state only — so a new agent
method cannot skip authorization by accident.
"""

from __future__ import annotations

import asyncio

import pytest

from agentix.core.errors import AgentixError
from agentix.kernel.config import KernelConfig
from agentix.kernel.dispatch import OPERATOR, Caller, MethodPolicy, MethodSpec, Pipeline
from agentix.kernel.home import Home
from agentix.kernel.kernel import KernelRoot
from agentix.kernel.methods import POLICIES

#: agent methods that act only on the caller's own state (no token governs them)
SELF_ONLY = {"sys.info", "sys.exit", "ipc.recv", "agent.wait_child", "agent.children", "agent.reply",
             "agent.state_save", "agent.state_load", "loop.event", "tool.list"}


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    home = Home(tmp_path_factory.mktemp("table") / "home")
    home.create()
    return KernelRoot(home, KernelConfig(backend="plain", isolation="degraded"))


def test_every_registered_method_has_a_policy(kernel):
    specs = kernel.pipeline.specs()
    assert len(specs) > 30
    for spec in specs:
        pol = spec.policy
        assert isinstance(pol, MethodPolicy), spec.name
        assert pol.durability in ("effect", "no_effect"), spec.name
        assert pol.doc.strip(), spec.name
        assert spec.agent or spec.operator, spec.name


def test_the_table_and_the_registrations_agree(kernel):
    names = {s.name for s in kernel.pipeline.specs()}
    assert names == set(POLICIES), (names ^ set(POLICIES))


def test_agent_methods_without_a_resource_are_only_self_queries(kernel):
    unguarded = {s.name for s in kernel.pipeline.specs() if s.agent and not s.policy.checked}
    assert unguarded <= SELF_ONLY, unguarded - SELF_ONLY


def test_tool_calls_and_side_effects_are_effects(kernel):
    pol = {s.name: s.policy for s in kernel.pipeline.specs()}
    for name in ("tool.call", "tool.invoke", "ipc.send", "ipc.broadcast", "agent.spawn_child", "think",
                 "cap.delegate", "cap.grant", "cap.revoke", "agent.spawn", "agent.stop"):
        assert pol[name].durability == "effect", name
    for name in ("sys.info", "tool.list", "kernel.info", "agent.list", "cap.list", "audit.tail"):
        assert pol[name].durability == "no_effect", name


def test_a_method_without_a_policy_cannot_be_registered():
    async def h(call):
        return None

    with pytest.raises(TypeError, match="no policy"):
        MethodSpec("x.y", h, None, agent=True)  # type: ignore[arg-type]
    from agentix.kernel.methods import method

    with pytest.raises(TypeError, match="no row in the method table"):
        method("not.in.the.table", h, agent=True)


def test_a_method_registered_twice_is_a_start_up_error():
    async def h(call):
        return None

    class Sink:
        async def record(self, *a, **kw):
            return None

    p = Pipeline(Sink())
    spec = MethodSpec("a.b", h, MethodPolicy("no_effect", "test"), agent=True)
    p.register(spec)
    with pytest.raises(ValueError, match="twice"):
        p.register(spec)


def test_unknown_method_is_refused(kernel):
    async def go():
        errs = []
        for caller in (OPERATOR, Caller(agent_id="ag-x", name="x")):
            try:
                await kernel.pipeline.run(caller, "no.such.method", {})
            except AgentixError as err:
                errs.append(err.code)
        # an operator method is unknown to an agent, and the reverse
        try:
            await kernel.pipeline.run(Caller(agent_id="ag-x", name="x"), "cap.grant", {})
        except AgentixError as err:
            errs.append(err.code)
        return errs

    assert asyncio.run(go()) == ["method_not_found"] * 3


def test_docs_security_lists_every_method():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    missing = [name for name in POLICIES if f"| `{name}` |" not in doc]
    assert not missing, f"docs/security.md's method table lacks {missing}"
