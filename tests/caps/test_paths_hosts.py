"""Path and host matching: SCENARIOS 13, 14 and the host half of 26, plus an attack catalogue."""

from __future__ import annotations

import pytest

from agentix.core.errors import InvalidRequest
from agentix.core.hosts import is_public_address, normalize_host, parse_host_pattern
from agentix.core.paths import normalize_path, parse_path_pattern, path_matches, resolve_request


def test_s13_project_grant_allows_inside_and_denies_etc_passwd():
    assert path_matches("/data/project/*", "/data/project/foo.txt")
    assert not path_matches("/data/project/*", "/etc/passwd")


@pytest.mark.parametrize("path", ["/data", "/data/a/b/c", "/data/x", "/data//a", "/data/./a"])
def test_s14_tree_grant_allows(path):
    assert path_matches("/data/*", path)


@pytest.mark.parametrize(
    "path",
    [
        "/data/../etc/passwd",
        "/data/x/../../etc/shadow",
        "/data-foo/x",
        "/data-x",
        "/datax",
        "/dat",
        "/",
        "data/x",
        "/data/\x00/x",
        "/data/..",
        "/data/x/..",
        "",
    ],
)
def test_s14_tree_grant_denies(path):
    assert not path_matches("/data/*", path)


def test_dotdot_is_refused_not_collapsed():
    with pytest.raises(InvalidRequest, match="'..'"):
        normalize_path("/data/x/../y")


def test_exact_path_grant_matches_only_itself():
    assert path_matches("/data/report.txt", "/data/report.txt")
    assert not path_matches("/data/report.txt", "/data/report.txt/x")
    assert not path_matches("/data/report.txt", "/data/report.txt.bak")


def test_root_tree_matches_everything_normalised():
    assert path_matches("/*", "/etc/passwd")
    assert not path_matches("/*", "/etc/../x")


def test_relative_request_resolves_against_workspace_only():
    assert resolve_request("notes/a.txt", "/ws/agent1") == "/ws/agent1/notes/a.txt"
    with pytest.raises(InvalidRequest):
        resolve_request("notes/a.txt", None)
    with pytest.raises(InvalidRequest):
        resolve_request("../agent2/secret", "/ws/agent1")


@pytest.mark.parametrize("bad", ["data/*", "/data/*.txt", "/da*ta/x", "/data/", "/data/../x/*", "/a/?"])
def test_bad_path_patterns_are_rejected_with_a_reason(bad):
    with pytest.raises(InvalidRequest) as info:
        parse_path_pattern(bad)
    assert info.value.message


def test_pattern_covers_is_boundary_aware():
    P = parse_path_pattern
    assert P("/data/*").covers(P("/data/a/*"))
    assert P("/data/*").covers(P("/data/x.txt"))
    assert P("/data/*").covers(P("/data/*"))
    assert not P("/data/*").covers(P("/data-x/*"))
    assert not P("/data/a/*").covers(P("/data/*"))
    assert not P("/data/x.txt").covers(P("/data/x.txt/*"))


# ------------------------------------------------------------------ hosts


@pytest.mark.parametrize("host", ["a.x.com", "b.a.x.com", "A.X.COM", "a.x.com."])
def test_s26_suffix_matches_subdomains(host):
    assert parse_host_pattern("*.x.com").matches(normalize_host(host))


@pytest.mark.parametrize("host", ["x.com", "evilx.com", "x.com.evil.net", "ax.com", "x.co", "1.2.3.4"])
def test_s26_suffix_does_not_match_lookalikes(host):
    assert not parse_host_pattern("*.x.com").matches(normalize_host(host))


def test_idna_and_case_are_normalised():
    assert normalize_host("BÜCHER.de") == "xn--bcher-kva.de"
    assert parse_host_pattern("*.bücher.de").matches(normalize_host("shop.BÜCHER.de"))
    assert normalize_host("[::1]") == "::1"
    assert normalize_host("::ffff:127.0.0.1") == "::ffff:7f00:1"


@pytest.mark.parametrize("bad", ["", "a..b", "-a.com", "a b.com", "a/b", "x.com:80", "*x.com", "*.*.x.com",
                                 "http://x.com", "*.1.2.3.4", "*.com"])
def test_bad_host_patterns_are_rejected(bad):
    with pytest.raises(InvalidRequest):
        parse_host_pattern(bad)


@pytest.mark.parametrize(
    "addr",
    ["127.0.0.1", "10.1.2.3", "192.168.1.1", "172.16.0.1", "169.254.169.254", "0.0.0.0", "::1", "::",
     "fe80::1", "fc00::1", "224.0.0.1", "100.64.0.1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
     "2002:7f00:1::", "255.255.255.255", "not-an-ip"],
)
def test_non_public_addresses(addr):
    assert not is_public_address(addr)


@pytest.mark.parametrize("addr", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses(addr):
    assert is_public_address(addr)


def test_only_explicit_patterns_reach_private_addresses():
    assert not parse_host_pattern("*").permits("intranet.corp", "10.0.0.5")
    assert not parse_host_pattern("*.corp.example").permits("intranet.corp.example", "10.0.0.5")
    assert parse_host_pattern("intranet.corp").permits("intranet.corp", "10.0.0.5")
    assert parse_host_pattern("127.0.0.1").permits("127.0.0.1", "127.0.0.1")
    assert parse_host_pattern("*").permits("example.com", "93.184.216.34")
