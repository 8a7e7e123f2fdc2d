"""One rule for the address an HTTP face listens on (``core.hosts.parse_listen_address``): the
kernel's HTTP API (``agentixd --http``) and ``agentix mcp --http`` accept and refuse exactly the
same inputs, and differ only in the flags their errors name. Attacks: a public bind without the
allow-remote flag, an IPv6 literal without brackets, ports 0 / 65536 / non-numeric, an empty host."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings, strategies as st

from agentix.core.errors import InvalidRequest
from agentix.core.hosts import parse_listen_address
from agentix.mcp.http import parse_address as mcp_parse_address


def api_face(addr: str, allow_remote: bool) -> tuple[str, int]:
    """What ``agentixd`` (kernel/daemon.py) calls."""
    return parse_listen_address(addr, allow_remote=allow_remote, option="--http", remote_option="--http-allow-remote")


def mcp_face(addr: str, allow_remote: bool) -> tuple[str, int]:
    """What ``agentix mcp --http`` (cli/mcp_cmd.py, mcp/http.serve_http) calls."""
    return mcp_parse_address(addr, allow_remote=allow_remote)


FACES = {"api": (api_face, "--http-allow-remote"), "mcp": (mcp_face, "--allow-remote")}


def outcome(face, addr: str, allow_remote: bool) -> tuple[str, object]:
    try:
        return "ok", face(addr, allow_remote)
    except InvalidRequest as err:
        assert err.data.get("field") == "http"
        return ("remote" if "not a loopback address" in err.message else "malformed"), None


hosts = st.one_of(
    st.sampled_from(["127.0.0.1", "localhost", "LOCALHOST", "[::1]", "::1", "0.0.0.0", "[::]", "::",
                     "127.0.0.2", "10.0.0.1", "192.168.1.10", "example.com", "[127.0.0.1]",
                     "[::ffff:127.0.0.1]", "", "[]", "[localhost]", "bad host", "a..b", "127.1"]),
    st.ip_addresses().map(lambda ip: f"[{ip}]" if ip.version == 6 else str(ip)),
    st.text(max_size=20),
)
ports = st.one_of(st.sampled_from(["0", "1", "8470", "65535", "65536", "70000", "", "http", "+80", "-1",
                                   " 80", "٣"]), st.integers(-10, 70000).map(str), st.text(max_size=6))


@settings(max_examples=400, deadline=None)
@given(host=hosts, port=ports, allow_remote=st.booleans(), sep=st.sampled_from([":", ""]))
def test_both_faces_accept_and_refuse_the_same_addresses(host, port, allow_remote, sep):
    addr = f"{host}{sep}{port}"
    api = outcome(FACES["api"][0], addr, allow_remote)
    mcp = outcome(FACES["mcp"][0], addr, allow_remote)
    assert api == mcp, addr
    verdict, parsed = api
    if verdict == "ok":
        h, p = parsed
        assert 1 <= p <= 65535 and p == int(port) and sep == ":"
        if not allow_remote:  # the one loopback rule
            assert h == "localhost" or ipaddress.ip_address(h).is_loopback, addr
    if verdict == "remote":
        assert not allow_remote  # only the flag's absence refuses a well-formed public address
        assert outcome(FACES["api"][0], addr, True)[0] == "ok"


@pytest.mark.parametrize("face", sorted(FACES))
@pytest.mark.parametrize("addr", ["0.0.0.0:8470", "[::]:8470", "192.168.1.10:80", "example.com:8080",
                                  "[2001:db8::1]:443"])
def test_a_public_bind_without_the_flag_is_refused_naming_the_flag(face, addr):
    parse, flag = FACES[face]
    with pytest.raises(InvalidRequest, match=flag):
        parse(addr, False)
    assert parse(addr, True)[1] == int(addr.rsplit(":", 1)[1])


@pytest.mark.parametrize("face", sorted(FACES))
@pytest.mark.parametrize("addr", ["127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:http", "127.0.0.1:", "127.0.0.1",
                                  ":8470", "::1:8470", "[127.0.0.1]:8470", "[::1]8470", "[]:8470", "8470",
                                  "bad host:80", "127.0.0.1:٣"])
def test_a_malformed_address_is_refused_even_with_the_flag(face, addr):
    parse, _ = FACES[face]
    with pytest.raises(InvalidRequest, match="HOST:PORT"):
        parse(addr, True)


@pytest.mark.parametrize("face", sorted(FACES))
@pytest.mark.parametrize(("addr", "want"), [("127.0.0.1:8470", ("127.0.0.1", 8470)),
                                            ("localhost:1", ("localhost", 1)),
                                            ("LocalHost.:65535", ("localhost", 65535)),
                                            ("[::1]:8470", ("::1", 8470)),
                                            ("127.0.0.2:8470", ("127.0.0.2", 8470))])
def test_loopback_needs_no_flag(face, addr, want):
    parse, _ = FACES[face]
    assert parse(addr, False) == want
