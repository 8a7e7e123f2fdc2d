"""Attack round 4: DNS rebinding against every outbound request the kernel makes on an agent's
or a remote's behalf (web_fetch, a2a_call, a2a.push, the build proxy, the registry client with
its redirects and token realms).

The attack: a name answers a checked address on the first lookup and another one afterwards
(a service inside, the metadata address). A check that resolves and a connection that resolves
again are told two different things. Before, the registry client (packages/registry_urls.py)
checked one answer and requests/urllib3 connected to the next; now every fetcher resolves once
(net/pinned.py) and connects to the address it checked.

The DNS fake here answers at the bottom (``socket.getaddrinfo``), so each fetcher's own lookup
path is what is attacked, with no seam the fetcher could be told about: ``*.rebind.test``
answers ``127.0.0.1`` (the checked server) first, then ``127.0.0.2`` (the service inside, on
the same port). The world check: the service inside saw nothing, and each name was looked
up once."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CHECKED, INSIDE = "127.0.0.1", "127.0.0.2"


class _Seen(http.server.BaseHTTPRequestHandler):
    """Records each request (Host, path); ``/r/N/K`` redirects to ``hN.rebind.test`` for K more
    hops (to ``/r/N+1/K-1``), anything else answers 404 (the fetch fails: where it went is what
    counts)."""

    hits: list[tuple[str, str]]

    def log_message(self, *a: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.hits.append((self.headers.get("Host", ""), self.path))
        parts = self.path.split("/")
        if len(parts) == 4 and parts[1] == "r" and int(parts[3]) > 0:
            n, k = int(parts[2]), int(parts[3])
            port = self.server.server_address[1]
            self.send_response(302)
            self.send_header("Location", f"http://h{n + 1}.rebind.test:{port}/r/{n + 1}/{k - 1}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"here"
        self.send_response(404 if parts[1] != "ok" else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET


def _serve(addr: str, port: int) -> tuple[http.server.ThreadingHTTPServer, list[tuple[str, str]]]:
    hits: list[tuple[str, str]] = []
    srv = http.server.ThreadingHTTPServer((addr, port), type("S", (_Seen,), {"hits": hits}))
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, hits


@contextlib.contextmanager
def _two_servers() -> Iterator[tuple[int, list, list]]:
    """The checked server on 127.0.0.1:P and the service inside on 127.0.0.2:P."""
    for _ in range(20):
        checked, seen = _serve(CHECKED, 0)
        port = checked.server_address[1]
        try:
            inside, inside_seen = _serve(INSIDE, port)
        except OSError:
            checked.shutdown()
            checked.server_close()
            continue
        break
    else:
        pytest.skip("no port free on both 127.0.0.1 and 127.0.0.2")
    try:
        yield port, seen, inside_seen
    finally:
        for s in (checked, inside):
            s.shutdown()
            s.server_close()


@pytest.fixture
def rebinding(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """``*.rebind.test``: the checked address on the first lookup, the inside one afterwards.
    Returns the count of lookups by name."""
    real = socket.getaddrinfo
    asked: dict[str, int] = {}
    lock = threading.Lock()

    def getaddrinfo(host, port, *a, **kw):  # noqa: ANN001, ANN002, ANN003
        name = host.decode() if isinstance(host, bytes) else str(host)
        if not name.endswith(".rebind.test"):
            return real(host, port, *a, **kw)
        with lock:
            asked[name] = asked.get(name, 0) + 1
            addr = CHECKED if asked[name] == 1 else INSIDE
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (addr, int(port or 0)))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def _web_fetch(port: int) -> None:
    from agentix.tools.web_fetch import web_fetch

    asyncio.run(web_fetch(f"http://a.rebind.test:{port}/ok", permits=lambda h, a: h == "a.rebind.test"))


def _a2a_call(port: int) -> None:
    from agentix.tools.a2a_call import a2a_call

    asyncio.run(a2a_call(f"http://a.rebind.test:{port}/", "hi", permits=lambda h, a: h == "a.rebind.test",
                         timeout=10))


def _a2a_push(port: int) -> None:
    from agentix.kernel.a2a_push import push

    asyncio.run(push(f"http://a.rebind.test:{port}/ok", allow_hosts=frozenset({"a.rebind.test"}), body=b"{}",
                     headers={}, timeout=10, record={}))


def _build_proxy(port: int, tmp: Path) -> None:
    from agentix.kernel.build_proxy import BuildProxy

    async def main() -> None:
        async with BuildProxy(("a.rebind.test",), tmp / "p.sock") as proxy:
            proxy.serve_only(os.getpid())
            reader, writer = await asyncio.open_unix_connection(str(proxy.path))
            writer.write(f"GET http://a.rebind.test:{port}/ok HTTP/1.1\r\nHost: a.rebind.test\r\n\r\n".encode())
            await writer.drain()
            await asyncio.wait_for(reader.read(), 10)
            writer.close()

    asyncio.run(main())


def _registry(port: int, tmp: Path, registry: str) -> None:
    from agentix.packages.service import PackageStore

    PackageStore(tmp / "h", timeout=5.0).pull(f"{registry}/team/x:1.0.0")


def _redirecting_registry(to: str) -> contextlib.AbstractContextManager[str]:
    """A loopback registry whose every answer is a redirect to ``to`` (round 3's hostile one)."""
    from security.test_attack3_registry import _Hostile, _serving

    return _serving(type("R", (_Hostile,), {"answer": (302, {"Location": to}, b""), "seen": []}))


FETCHERS = ["web_fetch", "a2a_call", "a2a.push", "build_proxy", "registry_redirect"]


@pytest.mark.parametrize("fetcher", FETCHERS)
def test_a_name_that_rebinds_after_the_check_reaches_only_the_checked_address(
        fetcher: str, rebinding: dict[str, int], tmp_path: Path) -> None:
    with _two_servers() as (port, seen, inside_seen):
        with contextlib.ExitStack() as stack:
            try:
                if fetcher == "web_fetch":
                    _web_fetch(port)
                elif fetcher == "a2a_call":
                    _a2a_call(port)
                elif fetcher == "a2a.push":
                    _a2a_push(port)
                elif fetcher == "build_proxy":
                    _build_proxy(port, Path(stack.enter_context(_short_dir())))
                else:
                    registry = stack.enter_context(_redirecting_registry(f"http://a.rebind.test:{port}/blob"))
                    _registry(port, tmp_path, registry)
            except Exception:  # noqa: BLE001 - the fetch may fail (404, not an A2A agent): where it went counts
                pass
    assert inside_seen == [], f"{fetcher} connected to the rebound address"
    assert seen and all(h.startswith("a.rebind.test") for h, _ in seen), seen   # Host: the name
    assert rebinding == {"a.rebind.test": 1}


@contextlib.contextmanager
def _short_dir() -> Iterator[str]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="rb", dir="/tmp") as d:
        yield d


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hops=st.integers(min_value=0, max_value=4), via=st.sampled_from(["web_fetch", "registry"]))
def test_every_hop_of_a_redirect_chain_goes_to_its_first_checked_answer(
        rebinding: dict[str, int], tmp_path_factory: pytest.TempPathFactory, hops: int, via: str) -> None:
    """Property: whatever the chain of names (each rebinding after its first answer), every
    connection goes to the address its name first resolved to, and no name is looked up twice
    (at most 4 hops: with the registry's own redirect, 5 is the most a fetch follows)."""
    rebinding.clear()
    with _two_servers() as (port, seen, inside_seen):
        start = f"http://h0.rebind.test:{port}/r/0/{hops}"
        try:
            if via == "web_fetch":
                from agentix.tools.web_fetch import web_fetch

                asyncio.run(web_fetch(start, permits=lambda h, a: h.endswith(".rebind.test")))
            else:
                with _redirecting_registry(start) as registry:
                    _registry(port, tmp_path_factory.mktemp("reg"), registry)
        except Exception:  # noqa: BLE001 - the end of the chain is a 404
            pass
    assert inside_seen == []
    assert [p for _, p in seen] == [f"/r/{n}/{hops - n}" for n in range(hops + 1)]
    assert rebinding == {f"h{n}.rebind.test": 1 for n in range(hops + 1)}


# ------------------------------------------------------------------ one address rule
# Before, packages/registry_urls.py had a classification of its own that did not unwrap 6to4
# (2002:AABB:CCDD::, the IPv4 address AA.BB.CC.DD carried in IPv6), so a public registry could
# send the kernel to 2002:a9fe:a9fe:: (169.254.169.254) or 2002:7f00:1:: (127.0.0.1), which
# web_fetch's rule (core/hosts.is_public_address) already refused. Now both use
# core/hosts.address_zone.

def _wrapped(v4: str) -> list[str]:
    import ipaddress

    n = int(ipaddress.IPv4Address(v4))
    return [f"::ffff:{v4}", str(ipaddress.IPv6Address((0x2002 << 112) | (n << 80)))]


@settings(max_examples=300, deadline=None)
@given(v4=st.ip_addresses(v=4).map(str), via_name=st.booleans())
def test_an_ipv4_address_wrapped_in_ipv6_is_judged_as_the_address_it_carries(v4: str, via_name: bool) -> None:
    from agentix.core.errors import RegistryError
    from agentix.packages.registry_urls import check_url

    def verdict(addr: str) -> bool:
        url = "http://blobs.example/x" if via_name else f"http://[{addr}]/x" if ":" in addr else f"http://{addr}/x"
        answers = {"registry.example": ["93.184.216.34"], "blobs.example": [addr]}
        try:
            check_url("registry.example", "http", url, resolve=lambda h: answers.get(h, []))
            return True
        except RegistryError:
            return False

    plain = verdict(v4)
    for w in _wrapped(v4):
        assert verdict(w) == plain, (v4, w)


@pytest.mark.parametrize("url", ["http://[2002:a9fe:a9fe::]/latest/meta-data/", "http://[2002:7f00:1::]:5000/x",
                                 "http://[2002:a00:1::]/x", "http://[::ffff:169.254.169.254]/x"])
def test_a_public_registry_cannot_send_the_kernel_to_an_inside_address_carried_in_ipv6(url: str) -> None:
    from agentix.core.errors import RegistryError
    from agentix.packages.registry_urls import check_url

    with pytest.raises(RegistryError) as err:
        check_url("registry.example", "https", url.replace("http://", "https://"),
                  resolve=lambda h: ["93.184.216.34"])
    assert err.value.data["reason"] == "redirect"


def test_a_pinned_registry_connection_keeps_the_name_for_tls(tmp_path: Path) -> None:
    """The registry session connects to the checked address but speaks TLS to the name: SNI is
    the name and the certificate is verified against it (``reg.rebind.test`` resolves only
    through the session's resolver, so reaching it at all shows the pin)."""
    import shutil
    import ssl
    import subprocess

    import requests

    from agentix.packages.registry_urls import pin_session

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / "k.pem"),
                    "-out", str(tmp_path / "c.pem"), "-days", "1", "-subj", "/CN=reg.rebind.test",
                    "-addext", "subjectAltName=DNS:reg.rebind.test"], check=True, capture_output=True)
    names: list[str | None] = []
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    ctx.sni_callback = lambda sock, name, c: names.append(name)
    srv, seen = _serve(CHECKED, 0)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    port = srv.server_address[1]
    try:
        s = requests.Session()
        asked: list[str] = []
        pin_session(s, f"reg.rebind.test:{port}", "https", resolve=lambda h: asked.append(h) or [CHECKED])
        r = s.get(f"https://reg.rebind.test:{port}/ok", verify=str(tmp_path / "c.pem"), timeout=10)
        r2 = s.get(f"https://reg.rebind.test:{port}/ok", verify=str(tmp_path / "c.pem"), timeout=10)
    finally:
        srv.shutdown()
        srv.server_close()
    assert r.status_code == r2.status_code == 200 and r.text == "here"
    assert names and set(names) == {"reg.rebind.test"}
    assert seen[0] == (f"reg.rebind.test:{port}", "/ok")
    assert asked == ["reg.rebind.test"]     # one lookup for the session's life
