"""Grant strings, presets, the narrowing relation and tool requirements."""

from __future__ import annotations

import pytest

from agentix.core.errors import HandoffEscalationDenied, InvalidRequest
from agentix.core.grants import (
    PRESET_DOCS,
    PRESETS,
    Grant,
    Request,
    check_covered,
    covers,
    parse_grant,
    parse_grants,
    requests_for_tool,
)


def test_manifest_syntax_parses_to_typed_grants():
    gs = parse_grants(
        [
            "file_read: /data/*",
            "file_write: /out/*",
            "tool: summarise",
            "network: example.com, *.wikipedia.org",
            "spawn_child: [fetcher, writer]",
            "exec: [git, python3]",
            "message_send: [reviewer]",
            "secret: GITHUB_TOKEN",
            "untaint: fetched_url",
        ]
    )
    assert gs.strings() == [
        "file_read: /data/*", "file_write: /out/*", "tool: summarise", "network: example.com",
        "network: *.wikipedia.org", "spawn_child: fetcher", "spawn_child: writer", "exec: git",
        "exec: python3", "message_send: reviewer", "secret: GITHUB_TOKEN", "untaint: fetched_url",
    ]


def test_manifest_dict_form_feeds_the_same_parser():
    from agentix.core.manifest import parse_manifest

    m = parse_manifest({"name": "a", "capabilities": {"file_read": ["/a/*", "/b/*"], "tool": "x"}})
    assert parse_grants(m.capabilities).strings() == ["file_read: /a/*", "file_read: /b/*", "tool: x"]


def test_zero_grants_by_default_permit_nothing():
    gs = parse_grants([])
    for r in [Request("tool", "x"), Request("file_read", "/"), Request("network", "example.com")]:
        assert not gs.permits(r)


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ("file_read /data/*", "expected 'kind: value'"),
        ("filesystem: /data/*", "unknown kind 'filesystem'"),
        ("file_read: data/*", "must be absolute"),
        ("file_read: /data/*.txt", "only a trailing '/*'"),
        ("exec: ls; cat /etc/shadow", "not a program name"),
        ("exec: /bin/ls", "not a program name"),
        ("spawn_child: Bad Name", "not an agent name"),
        ("secret: *", "no wildcard"),
        ("untaint: everything", "taint label"),
        ("network: https://example.com/", "not a URL"),
        ("tool:", "no value"),
        ("preset: godmode", "unknown preset"),
        ("file_read: {workspace}/*", "no workspace"),
    ],
)
def test_bad_grants_have_clear_errors(bad, fragment):
    with pytest.raises(InvalidRequest) as info:
        parse_grant(bad)
    assert fragment in info.value.message
    assert bad.split(":")[0] in info.value.message or "grant" in info.value.message


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_documented_and_parses(name):
    assert PRESET_DOCS[name]
    gs = parse_grants([f"preset: {name}"], workspace="/home/a/ws")
    assert len(gs) > 0
    assert not any(g.kind in ("secret", "untaint") for g in gs), "no preset hands out secrets or untaint"


def test_presets_are_ordered_by_power():
    ws = "/w"
    sets = {n: parse_grants([f"preset: {n}"], workspace=ws) for n in PRESETS}
    for narrow, wide in [("readonly", "sandboxed"), ("sandboxed", "standard"), ("standard", "unrestricted"),
                         ("minimal", "sandboxed")]:
        assert not missing(sets[wide], sets[narrow]), (narrow, wide)
    assert not sets["standard"].of_kind("exec")
    assert not sets["sandboxed"].of_kind("network")


def missing(parent, child):
    return [g for g in child if not covers(parent, g)]


def test_s21_parent_lacks_names_the_grant():
    parent = parse_grants(["file_write: /data/out/*"])
    with pytest.raises(HandoffEscalationDenied) as info:
        check_covered(parent, parse_grant("file_write: /etc/*"))
    assert info.value.message == "parent lacks file_write: /etc/*"
    check_covered(parent, parse_grant("file_write: /data/out/sub/*"))


def test_s24_spawn_child_list_denies_other_names():
    gs = parse_grants(["spawn_child: [fetcher, writer]"])
    assert gs.permits(Request("spawn_child", "fetcher"))
    assert not gs.permits(Request("spawn_child", "analyzer"))


def test_covers_kinds_do_not_cross():
    gs = parse_grants(["file_write: /*", "tool: *"])
    assert not covers(gs, Grant("file_read", "/x"))
    assert not covers(gs, Grant("exec", "ls"))
    assert not covers(parse_grants(["tool: *"]), Grant("secret", "X"))


def test_tool_star_does_not_cover_resource_tools():
    gs = parse_grants(["tool: *"])
    for tool, args in [("file_read", {"path": "/etc/passwd"}), ("web_fetch", {"url": "https://x.com/"}),
                       ("exec", {"argv": ["ls"]})]:
        reqs = requests_for_tool(tool, args)
        assert not all(gs.permits(r) for r in reqs)
    assert all(gs.permits(r) for r in requests_for_tool("summarise", {}))


def test_s27_exec_takes_argv_never_a_shell_string():
    gs = parse_grants(["exec: ls"])
    assert all(gs.permits(r) for r in requests_for_tool("exec", {"argv": ["ls", "-l", "; cat /etc/shadow"]}))
    assert not all(gs.permits(r) for r in requests_for_tool("exec", {"argv": ["ls; cat /etc/shadow"]}))
    with pytest.raises(InvalidRequest):
        requests_for_tool("exec", {"argv": "ls; cat /etc/shadow"})


def test_s29_file_edit_needs_read_and_write():
    reqs = requests_for_tool("file_edit", {"path": "/data/a"})
    assert {r.kind for r in reqs} == {"file_read", "file_write"}
    assert not all(parse_grants(["file_write: /data/*"]).permits(r) for r in reqs)
    assert not all(parse_grants(["file_read: /data/*"]).permits(r) for r in reqs)
    assert all(parse_grants(["file_read: /data/*", "file_write: /data/*"]).permits(r) for r in reqs)


def test_best_root_is_the_most_specific_match():
    gs = parse_grants(["file_read: /data/*", "file_read: /data/a/*", "file_read: /etc/hosts"])
    assert gs.best_root("file_read", "/data/a/b") == "/data/a"
    assert gs.best_root("file_read", "/data/b") == "/data"
    assert gs.best_root("file_read", "/etc/hosts") == "/etc"
    assert gs.best_root("file_read", "/etc/passwd") is None
