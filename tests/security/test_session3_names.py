"""The trailing-newline class: a validator anchored with ``$`` accepts ``"name\\n"``.

Python's ``$`` also matches just before a final newline, so ``re.compile(r"^[a-z]+$").match``
accepts ``"ok\\n"``. Every name this project validates with a regex (agent, tool, MCP server and
tool, program, secret, model, host label, package repository, tag, digest, version, pinned
requirement, env name, plan id, skill name, HTTP token) then flows into grants, tool lists,
paths, audit records and argv. Found through an MCP server listing a tool named ``ok\\n``
(tests/security/test_session3_mcp.py). The shape is fixed, not the example: every anchored
validator in src/ ends with ``\\Z``, and a test fails when a new one ends with ``$``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentix.core import agentfile, grants, hosts, manifest, package, plan, refs, skill_rules as skills
from agentix.core.errors import InvalidRequest

SRC = Path(__file__).resolve().parents[2] / "src" / "agentix"

VALIDATORS = {
    "grants._NAME_RE": grants._NAME_RE, "grants._AGENT_RE": grants._AGENT_RE,
    "grants._PROGRAM_RE": grants._PROGRAM_RE, "grants._SECRET_RE": grants._SECRET_RE,
    "grants.MCP_SERVER_RE": grants.MCP_SERVER_RE, "grants.MCP_TOOL_RE": grants.MCP_TOOL_RE,
    "grants._MCP_RE": grants._MCP_RE, "grants._MODEL_RE": grants._MODEL_RE,
    "hosts._LABEL_RE": hosts._LABEL_RE, "manifest.NAME_RE": manifest.NAME_RE,
    "manifest.ENV_NAME_RE": manifest.ENV_NAME_RE, "package.DIGEST_RE": package.DIGEST_RE,
    "refs._TAG_RE": refs._TAG_RE, "refs._PATH_RE": refs._PATH_RE,
    "refs._HOST_RE": refs._HOST_RE, "agentfile.PINNED_REQUIREMENT": agentfile.PINNED_REQUIREMENT,
    "agentfile.SEMVER_RE": agentfile.SEMVER_RE, "agentfile._REL_PART": agentfile._REL_PART,
    "plan.ID_RE": plan.ID_RE, "skills.SKILL_NAME_RE": skills.SKILL_NAME_RE,
}


def _dollar_anchored(pattern: str) -> bool:
    """Ends with a bare ``$`` (not ``\\s*$``, which eats the newline itself)."""
    return pattern.startswith("^") and pattern.endswith("$") and not pattern.endswith(r"\s*$")


def test_no_validator_in_the_tree_is_anchored_with_dollar() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("compile", "match", "fullmatch") and node.args):
                continue
            arg = node.args[0]
            if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[-1], ast.Constant):
                text = "^" + str(arg.values[-1].value)
            elif isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                text = arg.value
            else:
                continue
            if _dollar_anchored(text):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not offenders, f"anchor these with \\Z, not $ ($ accepts a trailing newline): {offenders}"


@pytest.mark.parametrize("name", sorted(VALIDATORS))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_no_validator_accepts_a_line_break(name: str, data: st.DataObject) -> None:
    pat = VALIDATORS[name]
    s = data.draw(st.from_regex(pat))
    assert pat.match(s) and "\n" not in s, (name, s)
    assert pat.match(s + "\n") is None, (name, s)


@settings(max_examples=300, deadline=None)
@given(server=st.text(min_size=1, max_size=12), tool=st.text(min_size=1, max_size=12))
def test_mcp_tool_names_round_trip_or_are_refused(server: str, tool: str) -> None:
    """``mcp__SERVER__TOOL`` -> ``SERVER/TOOL`` is unambiguous: whatever an agent or a server
    writes either is refused or names exactly one server and tool, in printable ASCII."""
    name = grants.mcp_tool_name(server, tool)
    try:
        res = grants.mcp_resource(name)
    except InvalidRequest:
        return
    assert res == f"{server}/{tool}"
    assert res.isascii() and res.isprintable() and " " not in res
    assert grants.mcp_tool_name(*res.split("/", 1)) == name


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(["tool", "spawn_child", "exec", "message_send", "secret", "model", "mcp"]),
       value=st.text(max_size=20))
def test_every_parsed_name_grant_is_printable(kind: str, value: str) -> None:
    try:
        gs = grants.parse_grant(f"{kind}: [{value}]")
    except InvalidRequest:
        return
    for g in gs:
        assert g.value.isprintable() and g.value == g.value.strip(), g


@pytest.mark.parametrize("bad", ["ok\n", "a\n.example.com"])
def test_concrete_trailing_newline_names_are_refused(bad: str) -> None:
    assert grants.MCP_TOOL_RE.match(bad) is None
    with pytest.raises(InvalidRequest):
        grants.requests_for_tool("mcp__srv__" + bad, {})
    if "." in bad:
        with pytest.raises(InvalidRequest):
            hosts.normalize_host(bad)
