"""Skills: SKILL.md parsing, discovery precedence, confinement of skill_read (scenario 49)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentix.core.errors import CapabilityDenied, InvalidRequest, NotFound
from agentix.core.skill_rules import narrow_tools, parse_skill_md
from agentix.tools.skills import SHIPPED_SKILLS, SkillCatalog, default_skill_dirs


def write_skill(root, name, front, body="Do the thing.\n", folder=None):
    d = root / (folder or name)
    d.mkdir(parents=True)
    (d / "SKILL.md").write_text(f"---\n{front}\n---\n{body}")
    return d


def test_parse_valid_with_allowed_tools():
    s = parse_skill_md("---\nname: pdf-tools\ndescription: Work with PDFs.\nallowed-tools: file_read, echo\n"
                       "license: MIT\n---\n# Body\n", folder="pdf-tools")
    assert (s.name, s.description, s.allowed_tools, s.body) == ("pdf-tools", "Work with PDFs.",
                                                                ("file_read", "echo"), "# Body\n")
    assert s.extra == {"license": "MIT"}
    assert s.catalogue_line() == "- pdf-tools: Work with PDFs."


@pytest.mark.parametrize("text,field", [
    ("---\ndescription: no name\n---\nx", "name"),
    ("---\nname: nodesc\n---\nx", "description"),
    ("---\nname: nodesc\ndescription: '  '\n---\nx", "description"),
    ("no frontmatter at all", "frontmatter"),
    ("---\nname: [unclosed\n---\n", "frontmatter"),
    ("---\nname: Bad_Name\ndescription: d\n---\n", "name"),
    ("---\nname: a--b\ndescription: d\n---\n", "name"),
    ("---\nname: ok\ndescription: " + "x" * 1025 + "\n---\n", "description"),
    ("---\nname: ok\ndescription: d\nallowed-tools: {a: 1}\n---\n", "allowed-tools"),
])
def test_invalid_skill_md_is_refused(text, field):
    with pytest.raises(InvalidRequest) as ei:
        parse_skill_md(text, folder="ok" if "name: ok" in text else None)
    assert ei.value.data["field"] == field


def test_name_must_match_folder():
    with pytest.raises(InvalidRequest):
        parse_skill_md("---\nname: alpha\ndescription: d\n---\n", folder="beta")


def test_discovery_skips_invalid_and_later_dirs_win(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_skill(a, "shared", "name: shared\ndescription: from a")
    write_skill(b, "shared", "name: shared\ndescription: from b")
    write_skill(b, "broken", "name: broken")                       # no description
    write_skill(b, "noname", "description: x")                      # no name
    cat = SkillCatalog.discover([a, b])
    assert sorted(cat.skills) == ["shared"]
    assert cat.skills["shared"].description == "from b"
    assert sorted(os.path.basename(e["path"]) for e in cat.errors) == ["broken", "noname"]
    assert "broken" not in cat.catalogue()


def test_default_dirs_order(tmp_path):
    dirs = default_skill_dirs({"AGENTIX_SKILLS_DIR": f"{tmp_path}/x:{tmp_path}/y"}, project=tmp_path)
    assert dirs == [SHIPPED_SKILLS, tmp_path / ".agents/skills", tmp_path / "x", tmp_path / "y"]


def test_shipped_skills_are_valid():
    cat = SkillCatalog.discover([SHIPPED_SKILLS])
    assert cat.errors == []
    assert {"research-report", "code-review", "summarise-files"} <= set(cat.skills)
    assert "Findings" in cat.read("research-report", "template.md")["content"]


@pytest.fixture
def confined(tmp_path):
    root = tmp_path / "skills"
    d = write_skill(root, "demo", "name: demo\ndescription: demo skill\nallowed-tools: [file_read]")
    (d / "refs").mkdir()
    (d / "refs" / "guide.md").write_text("guide text")
    (tmp_path / "secret.txt").write_text("TOP SECRET")
    os.symlink(tmp_path / "secret.txt", d / "link.md")
    os.symlink(tmp_path, d / "refs" / "up")
    return SkillCatalog.discover([root]), tmp_path


def test_skill_read_body_and_reference(confined):
    cat, _ = confined
    assert cat.read("demo")["content"] == "Do the thing.\n"
    assert cat.read("demo")["allowed_tools"] == ["file_read"]
    assert cat.read("demo", "refs/guide.md")["content"] == "guide text"
    with pytest.raises(NotFound):
        cat.read("demo", "refs/missing.md")
    with pytest.raises(NotFound):
        cat.read("nosuch")


@pytest.mark.parametrize("path", ["../secret.txt", "refs/../../secret.txt", "../../../../etc/passwd",
                                  "/etc/passwd", "link.md", "refs/up/secret.txt", "./../secret.txt",
                                  "..\\secret.txt"])
def test_skill_read_refuses_escape(confined, path):
    cat, _ = confined
    with pytest.raises(CapabilityDenied):
        cat.read("demo", path)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # read-only fixture
@given(st.lists(st.sampled_from(["..", ".", "refs", "up", "link.md", "secret.txt", "", "SKILL.md"]),
                min_size=1, max_size=6))
def test_skill_read_never_returns_outside_content(confined, parts):
    cat, _ = confined
    try:
        out = cat.read("demo", "/".join(parts))
    except (CapabilityDenied, NotFound, InvalidRequest):
        return
    assert "TOP SECRET" not in out["content"]


def test_narrow_tools_never_widens():
    s = parse_skill_md("---\nname: s\ndescription: d\nallowed-tools: file_read shell\n---\n")
    assert narrow_tools(["file_read", "file_write", "skill_read"], s) == ["file_read", "skill_read"]
    assert narrow_tools(["file_write"], None) == ["file_write"]
