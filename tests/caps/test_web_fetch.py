"""web_fetch against a real HTTP server on 127.0.0.1: SCENARIO 26 and the redirect/rebinding
catalogue. Refusals assert the server saw nothing."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from agentix.core.caps import Authority, generate_root_key
from agentix.core.errors import CapabilityDenied, InvalidRequest, LimitExceeded, Timeout
from agentix.tools.web_fetch import token_permits, web_fetch

NOW = 1_800_000_000.0


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):  # quiet
        pass

    def do_GET(self):
        self.server.hits.append((self.headers.get("Host"), self.path))
        u = urlsplit(self.path)
        q = parse_qs(u.query)
        if u.path == "/ok":
            self._send(200, b"hello world", "text/plain; charset=utf-8")
        elif u.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", q["to"][0])
            self.end_headers()
        elif u.path.startswith("/chain/"):
            n = int(u.path.rsplit("/", 1)[1])
            self.send_response(301)
            self.send_header("Location", f"/chain/{n - 1}" if n > 0 else "/ok")
            self.end_headers()
        elif u.path == "/big":
            self._send(200, b"x" * 100_000, "application/octet-stream")
        elif u.path == "/slow":
            time.sleep(2)
            self._send(200, b"late", "text/plain")
        elif u.path == "/echo":
            self._send(200, json.dumps(dict(self.headers)).encode(), "application/json")
        else:
            self._send(404, b"no", "text/plain")

    def _send(self, code, body, ctype):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except BrokenPipeError:  # the client gave up (the timeout test)
            pass


@pytest.fixture(scope="module")
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.hits = []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def base(server):
    server.hits.clear()
    return f"http://127.0.0.1:{server.server_address[1]}"


def permits(*grants):
    tok = Authority(generate_root_key()).mint("a", [f"network: {g}" for g in grants], now=NOW)
    return token_permits(tok)


def fetch(url, grants, **kw):
    return asyncio.run(web_fetch(url, permits=permits(*grants), **kw))


def test_explicitly_granted_loopback_is_fetched(server, base):
    r = fetch(f"{base}/ok", ["127.0.0.1"])
    assert r["status"] == 200 and r["content"] == "hello world" and r["encoding"] == "text"
    assert r["url"] == f"{base}/ok" and r["content_type"].startswith("text/plain")


def test_s26_no_grant_for_the_host_is_denied_before_connecting(server, base):
    with pytest.raises(CapabilityDenied) as info:
        fetch(f"{base}/ok", ["example.com"])
    assert info.value.data["reason"] == "not_granted"
    assert server.hits == []


@pytest.mark.parametrize("grant", ["*", "*.example.com"])
def test_s26_loopback_is_refused_without_an_explicit_grant(server, base, grant):
    with pytest.raises(CapabilityDenied):
        fetch(f"{base}/ok", [grant])
    assert server.hits == []


def test_s26_name_resolving_to_a_private_address_is_refused_under_a_wildcard(server, base):
    port = server.server_address[1]

    async def resolver(host, port):
        return ["127.0.0.1"]

    with pytest.raises(CapabilityDenied) as info:
        asyncio.run(web_fetch(f"http://rebind.example.com:{port}/ok", permits=permits("*.example.com"),
                              resolve=resolver))
    assert info.value.data["reason"] == "private_address"
    assert server.hits == []


def test_connection_is_pinned_to_the_checked_address_with_the_original_host(server, base):
    port = server.server_address[1]
    calls = []

    async def resolver(host, port):
        calls.append(host)
        return ["127.0.0.1"]

    r = asyncio.run(web_fetch(f"http://svc.internal.test:{port}/ok", permits=permits("svc.internal.test"),
                              resolve=resolver))
    assert r["status"] == 200 and calls == ["svc.internal.test"]
    assert server.hits == [(f"svc.internal.test:{port}", "/ok")]


def test_s26_redirect_to_a_host_off_the_list_is_denied(server, base):
    port = server.server_address[1]
    with pytest.raises(CapabilityDenied):
        fetch(f"{base}/redirect?to=http://localhost:{port}/ok", ["127.0.0.1"])
    assert [p for _, p in server.hits] == [f"/redirect?to=http://localhost:{port}/ok"]


def test_redirect_within_the_grant_is_followed_and_reported(server, base):
    r = fetch(f"{base}/chain/4", ["127.0.0.1"])
    assert r["status"] == 200 and r["content"] == "hello world" and len(r["redirects"]) == 5


def test_more_than_five_redirects_are_refused(server, base):
    with pytest.raises(LimitExceeded):
        fetch(f"{base}/chain/5", ["127.0.0.1"])
    assert len(server.hits) == 6  # the original request and 5 redirects; the 6th never made


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://127.0.0.1/"])
def test_s26_non_http_schemes_are_refused(url):
    with pytest.raises(CapabilityDenied) as info:
        fetch(url, ["*", "127.0.0.1"])
    assert info.value.data["reason"] == "scheme"


def test_redirect_to_file_scheme_is_refused(server, base):
    with pytest.raises(CapabilityDenied):
        fetch(f"{base}/redirect?to=file:///etc/passwd", ["127.0.0.1"])


def test_max_bytes_truncates(server, base):
    r = fetch(f"{base}/big", ["127.0.0.1"], max_bytes=1000)
    assert r["bytes"] == 1000 and r["truncated"]


def test_timeout(server, base):
    # the server answers only after 2 s: a fetch that ignored its timeout would get that answer
    with pytest.raises(Timeout):
        fetch(f"{base}/slow", ["127.0.0.1"], timeout=0.5)


def test_secret_headers_reach_only_the_original_host(server, base):
    port = server.server_address[1]

    async def resolver(host, port):
        return ["127.0.0.1"]

    p = permits("svc.internal.test", "127.0.0.1")
    same = asyncio.run(web_fetch(f"http://svc.internal.test:{port}/redirect?to=/echo", permits=p,
                                 resolve=resolver, secret_headers={"X-Api-Key": "k-123"}))
    assert json.loads(same["content"]).get("X-Api-Key") == "k-123"
    other = asyncio.run(web_fetch(f"http://svc.internal.test:{port}/redirect?to=http://127.0.0.1:{port}/echo",
                                  permits=p, resolve=resolver, secret_headers={"X-Api-Key": "k-123"}))
    assert "X-Api-Key" not in json.loads(other["content"])


def test_secret_headers_do_not_follow_a_redirect_to_another_port_or_scheme_of_the_same_host(server, base):
    """The secret goes to the first request's origin only (scheme, host, port). Before, only the
    host was compared: a redirect to another port of the same host (another service there, or
    a plain-HTTP port after https) carried the secret too."""
    other = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    other.daemon_threads, other.hits = True, []
    t = threading.Thread(target=other.serve_forever, daemon=True)
    t.start()
    try:
        async def resolver(host, port):
            return ["127.0.0.1"]

        port, port2 = server.server_address[1], other.server_address[1]
        r = asyncio.run(web_fetch(f"http://svc.internal.test:{port}/redirect?to=http://svc.internal.test:{port2}/echo",
                                  permits=permits("svc.internal.test"), resolve=resolver,
                                  secret_headers={"X-Api-Key": "k-123"}))
    finally:
        other.shutdown()
        other.server_close()
    assert other.hits == [(f"svc.internal.test:{port2}", "/echo")]  # the hop was made
    assert "X-Api-Key" not in json.loads(r["content"])


def test_bad_url_is_invalid():
    with pytest.raises(InvalidRequest):
        fetch("http://", ["*"])


# ------------------------------------------------------------------ https, pinned address + real name

import shutil
import ssl
import subprocess


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=svc.internal.test",
         "-addext", "subjectAltName=DNS:svc.internal.test", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
        check=True, capture_output=True,
    )
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.hits = []
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv, str(d / "cert.pem")
    srv.shutdown()
    srv.server_close()


async def _to_loopback(host, port):
    return ["127.0.0.1"]


def test_https_connects_to_the_checked_address_and_verifies_the_real_name(tls_server):
    srv, cert = tls_server
    port = srv.server_address[1]
    ctx = ssl.create_default_context(cafile=cert)
    r = asyncio.run(web_fetch(f"https://svc.internal.test:{port}/ok", permits=permits("svc.internal.test"),
                              resolve=_to_loopback, verify=ctx))
    assert r["status"] == 200 and r["content"] == "hello world"


def test_https_certificate_for_another_name_fails(tls_server):
    from agentix.core.errors import ToolError

    srv, cert = tls_server
    port = srv.server_address[1]
    ctx = ssl.create_default_context(cafile=cert)
    with pytest.raises(ToolError):
        asyncio.run(web_fetch(f"https://other.internal.test:{port}/ok", permits=permits("other.internal.test"),
                              resolve=_to_loopback, verify=ctx))
