"""Properties of the operator tokens (kernel/http_api.py) on a real store, and of the role rule
over real HTTP: only the exact token authenticates; a viewer reaches exactly the no_effect
methods of the table."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentix.core.errors import Unauthenticated
from agentix.kernel.http_api import HttpTokens
from agentix.kernel.methods import POLICIES
from agentix.core.hosts import parse_listen_address
from agentix.store.db import Database


@pytest.fixture(scope="module")
def issued(tmp_path_factory):
    db = Database(tmp_path_factory.mktemp("tok") / "agentix.db")
    clock = [1000.0]
    tokens = HttpTokens(db, clock=lambda: clock[0])

    async def make():
        return (await tokens.create("real", "operator", None))[1], (await tokens.create("brief", "viewer", 10))[1]

    real, brief = asyncio.run(make())
    yield tokens, real, brief, clock
    db.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(guess=st.one_of(st.text(max_size=120), st.from_regex(r"agx_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", fullmatch=True)))
def test_no_other_string_authenticates(issued, guess):
    tokens, real, brief, _clock = issued
    if guess in (real, brief):
        return
    with pytest.raises(Unauthenticated):
        tokens.authenticate(guess)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_one_character_change_of_a_real_token_fails(issued, data):
    tokens, real, _brief, _clock = issued
    i = data.draw(st.integers(0, len(real) - 1))
    c = data.draw(st.characters(codec="ascii").filter(lambda ch: ch != real[i]))
    with pytest.raises(Unauthenticated):
        tokens.authenticate(real[:i] + c + real[i + 1:])
    assert tokens.authenticate(real).name == "real"


def test_expiry_follows_the_clock_passed_in(issued):
    tokens, _real, brief, clock = issued
    assert tokens.authenticate(brief).role == "viewer"
    clock[0] += 10
    with pytest.raises(Unauthenticated) as info:
        tokens.authenticate(brief)
    assert info.value.data["reason"] == "expired"
    clock[0] -= 10


def test_tokens_survive_a_reopen_and_revocation_is_durable(tmp_path):
    path = tmp_path / "agentix.db"

    async def first():
        db = Database(path)
        t = HttpTokens(db)
        _rec, tok = await t.create("keep", "operator", None)
        _rec, gone = await t.create("gone", "viewer", None)
        await t.revoke("gone")
        db.close()
        return tok, gone

    tok, gone = asyncio.run(first())
    db = Database(path)
    t = HttpTokens(db)
    assert t.authenticate(tok).name == "keep"
    with pytest.raises(Unauthenticated):
        t.authenticate(gone)
    db.close()


def test_a_viewer_reaches_exactly_the_no_effect_methods(api):
    """Every operator method, by the viewer: refused for its role iff the table says effect."""
    doc = api.http().get("/openapi.json").json()
    methods = sorted(p.removeprefix("/v1/call/") for p in doc["paths"] if p.startswith("/v1/call/"))
    for name in methods:
        seq = api.audit_size()
        r = api.post(name, {}, token="viewer")
        role_refused = r.status_code == 403 and r.json()["error"]["data"].get("reason") == "role"
        assert role_refused == (POLICIES[name].durability == "effect"), (name, r.status_code, r.text)
        if role_refused:
            assert [e["kind"] for e in api.audit_after(seq)] == ["http.refused"], name
    assert api.daemon.proc.poll() is None


@pytest.mark.parametrize("addr", ["0.0.0.0:8470", "192.168.1.10:80", "example.com:8080"])
def test_a_non_loopback_address_needs_allow_remote(addr):
    from agentix.core.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match="--http-allow-remote"):
        parse_listen_address(addr, allow_remote=False, option="--http", remote_option="--http-allow-remote")
    assert parse_listen_address(addr, allow_remote=True, option="--http", remote_option="--http-allow-remote")[1] == int(addr.rsplit(":", 1)[1])


@pytest.mark.parametrize("addr", ["8470", "127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000", ":8470"])
def test_a_malformed_address_is_refused(addr):
    from agentix.core.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match="HOST:PORT"):
        parse_listen_address(addr, allow_remote=True, option="--http", remote_option="--http-allow-remote")


def test_the_daemon_refuses_a_public_address_and_starts_nothing(tmp_path):
    home = tmp_path / "h"
    r = subprocess.run([sys.executable, "-m", "agentix.kernel.daemon", "--home", str(home),
                        "--http", "0.0.0.0:8470"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "--http-allow-remote" in r.stderr
    assert not (home / "agentixd.sock").exists()


def test_a_busy_port_stops_the_start_with_a_clear_error_and_no_socket_left(tmp_path):
    import socket

    home = tmp_path / "h"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "agentix.kernel.daemon", "--home", str(home), "--isolation",
                            "degraded", "--http", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert f"127.0.0.1:{port}: cannot listen there" in r.stderr
    assert not (home / "agentixd.sock").exists()
