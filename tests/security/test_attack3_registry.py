"""Attack round 3 on the registry client (packages/remote.py): a hostile registry that sends
the kernel elsewhere — a redirect or a token realm to ``file://``, the cloud metadata address,
a link-local or loopback service, plain HTTP from HTTPS, a redirect loop — and one that lies
about sizes (an endless manifest, a ``Content-Length`` that is not the body's).

Before: requests followed any redirect (up to 30) and oras fetched any realm, so a registry
could walk the kernel to ``169.254.169.254``. Now every URL a registry hands us is checked
(packages/registry_urls.py) and refused with ``registry_error`` ``reason: redirect`` before a
connection is made; nothing is stored."""

from __future__ import annotations

import http.server
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentix.core.errors import PackageRejected, RegistryError
from agentix.packages.registry_urls import check_url
from agentix.packages.service import PackageStore
from tests.fakes.http_serving import serving as _serving


class _Hostile(http.server.BaseHTTPRequestHandler):
    """A registry whose every answer is ``answer`` (status, headers, body)."""

    answer: tuple[int, dict[str, str], bytes] = (200, {}, b"")
    seen: list[str]

    def log_message(self, *a: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.seen.append(self.path)
        status, headers, body = self.answer
        if status == 302 and headers.get("Location") == "SELF":
            headers = {"Location": self.path + "x"}
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if "Content-Length" not in headers and "Transfer-Encoding" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if callable(body):
            body(self.wfile)
        elif self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET


@pytest.fixture
def hostile(request: pytest.FixtureRequest) -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    with _serving(type("H", (_Hostile,), {"answer": request.param, "seen": seen})) as host:
        yield host, seen


def _nothing_stored(s: PackageStore) -> None:
    assert s.list() == []
    blobs = s.layout.root / "blobs"
    assert not blobs.exists() or not [p for p in blobs.rglob("*") if p.is_file()]


ELSEWHERE = ["file:///etc/passwd", "http://169.254.169.254/latest/meta-data/iam/",
             "http://[fe80::1]/x", "http://0.0.0.0/x", "gopher://127.0.0.1/x", "http://224.0.0.1/x",
             "ftp://127.0.0.1/x"]


@pytest.mark.parametrize("hostile", [(302, {"Location": u}, b"") for u in ELSEWHERE], indirect=True,
                         ids=ELSEWHERE)
def test_a_manifest_redirect_off_to_metadata_file_or_link_local_is_refused(tmp_path: Path, hostile) -> None:
    host, seen = hostile
    s = PackageStore(tmp_path / "h", timeout=3.0)
    with pytest.raises(RegistryError) as ei:
        s.pull(f"{host}/team/x:1.0.0")
    assert ei.value.data["reason"] == "redirect", ei.value.message
    assert "refused" in ei.value.message
    assert "latest/meta-data" not in ei.value.message   # the URL's path/query is not echoed
    _nothing_stored(s)


@pytest.mark.parametrize("hostile", [(401, {"WWW-Authenticate": f'Bearer realm="{u}",service="r"'}, b"")
                                     for u in ["http://169.254.169.254/token", "file:///etc/shadow"]],
                         indirect=True, ids=["metadata", "file"])
def test_a_token_realm_pointing_at_metadata_or_a_file_is_refused(tmp_path: Path, hostile) -> None:
    host, _ = hostile
    s = PackageStore(tmp_path / "h", timeout=3.0)
    with pytest.raises(RegistryError) as ei:
        s.pull(f"{host}/team/x:1.0.0")
    assert ei.value.data["reason"] == "redirect", ei.value.message
    _nothing_stored(s)


@pytest.mark.parametrize("hostile", [(302, {"Location": "SELF"}, b"")], indirect=True)
def test_a_redirect_loop_is_cut_short(tmp_path: Path, hostile) -> None:
    host, seen = hostile
    s = PackageStore(tmp_path / "h", timeout=3.0)
    with pytest.raises(RegistryError) as ei:
        s.pull(f"{host}/team/x:1.0.0")
    assert ei.value.data["reason"] == "redirect"
    assert len(seen) <= 1 + 5 + 1   # the request, at most MAX_REDIRECTS more (and no retry storm)
    _nothing_stored(s)


def _endless(w) -> None:
    try:
        for _ in range(1 << 16):
            w.write(b"{" * 65536)
    except OSError:
        pass


@pytest.mark.parametrize("hostile", [
    (200, {"Content-Type": "application/vnd.oci.image.manifest.v1+json", "Connection": "close",
           "Content-Length": str(64 << 30)}, _endless),
    (200, {"Content-Type": "application/vnd.oci.image.manifest.v1+json", "Content-Length": "5"}, b"{}" * 1000),
    (200, {"Content-Type": "application/vnd.oci.image.manifest.v1+json", "Content-Length": "100000",
           "Connection": "close"}, b"{}"),
], indirect=True, ids=["endless-64GiB-claimed", "length-shorter-than-body", "length-longer-than-body"])
def test_a_manifest_of_any_size_or_a_lying_length_is_refused_and_stores_nothing(tmp_path: Path, hostile) -> None:
    """Held: the manifest is read at most 4 MiB (then ``too_large``), a short body is a protocol
    error, a body longer than its length is cut at the length (and then not a manifest)."""
    host, _ = hostile
    s = PackageStore(tmp_path / "h", timeout=5.0)
    with pytest.raises((RegistryError, PackageRejected)) as ei:
        s.pull(f"{host}/team/x:1.0.0")
    assert ei.value.data["reason"] in {"too_large", "protocol", "malformed_manifest", "not_a_package"}, \
        (ei.value.data, ei.value.message)
    _nothing_stored(s)


# ---------------------------------------------------------------------- the rule, as a property
PUBLIC = ["93.184.216.34", "8.8.8.8", "2606:4700::1111"]
PRIVATE = ["10.0.0.7", "192.168.1.9", "172.16.5.5", "fd00::5"]
LOOP = ["127.0.0.1", "127.8.9.1", "::1"]
LOCAL = ["169.254.169.254", "fe80::1", "0.0.0.0", "224.0.0.1", "240.0.0.1"]


def _url(scheme: str, addr: str, port: int | None, path: str) -> str:
    host = f"[{addr}]" if ":" in addr else addr
    return f"{scheme}://{host}{f':{port}' if port else ''}/{path}"


def _fake_dns(table: dict[str, list[str]]):
    return lambda name: table.get(name, [])


@settings(max_examples=300, deadline=None)
@given(reg=st.sampled_from(["registry.example", "10.0.0.5:5000", "127.0.0.1:5055"]),
       reg_scheme=st.sampled_from(["http", "https"]),
       scheme=st.sampled_from(["http", "https", "file", "ftp", "gopher", "HTTP", ""]),
       kind=st.sampled_from(["public", "private", "loopback", "local", "own", "name-to-local"]),
       pick=st.integers(0, 10), port=st.one_of(st.none(), st.integers(1, 65535)),
       path=st.text(alphabet="abc/?=&%", max_size=20))
def test_where_a_registry_may_send_the_kernel(reg, reg_scheme, scheme, kind, pick, port, path):
    """Only http(s), never a downgrade, never link-local/multicast/unspecified, loopback only
    from a loopback registry, private only from a private or loopback one; its own host always."""
    dns = {"registry.example": ["93.184.216.40"], "sneaky.example": [LOCAL[pick % len(LOCAL)]]}
    if kind == "own":   # the registry's own address, as it is spoken to: always fine
        scheme = reg_scheme
        url = f"{reg_scheme}://{reg}/{path}"
    elif kind == "name-to-local":
        url = f"{scheme}://sneaky.example/{path}"
    else:
        pool = {"public": PUBLIC, "private": PRIVATE, "loopback": LOOP, "local": LOCAL}[kind]
        url = _url(scheme, pool[pick % len(pool)], port, path)
    own_zone = {"registry.example": "public", "10.0.0.5": "private", "127.0.0.1": "loopback"}[reg.split(":")[0]]
    s = scheme.lower()
    if kind == "own":
        expect_ok = True
    else:
        expect_ok = (s in ("http", "https") and not (reg_scheme == "https" and s != "https")
                     and (kind == "public"
                          or kind == "private" and own_zone in ("private", "loopback")
                          or kind == "loopback" and own_zone == "loopback"))
    try:
        check_url(reg, reg_scheme, url, resolve=_fake_dns(dns))
        ok = True
    except RegistryError as err:
        assert err.data["reason"] == "redirect"
        assert "?" not in err.data["target"]
        ok = False
    assert ok == expect_ok, (reg, reg_scheme, url)


@settings(max_examples=300, deadline=None)
@given(url=st.text(max_size=60))
def test_any_url_text_is_judged_without_crashing(url):
    """Whatever a registry puts in a Location or realm: accepted or ``reason: redirect``."""
    try:
        check_url("registry.example", "https", url, resolve=lambda _h: ["93.184.216.40"])
    except RegistryError as err:
        assert err.data["reason"] == "redirect"


# ---------------------------------------------------------------------- garbage manifests
class _Garbage(http.server.BaseHTTPRequestHandler):
    manifest: bytes = b""
    config: bytes = b""

    def log_message(self, *a: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        if "/manifests/" in self.path and not self.path.endswith(".sig"):
            body = type(self).manifest
        elif "/blobs/" in self.path:
            body = type(self).config
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET


@pytest.fixture(scope="module")
def garbage() -> Iterator[tuple[str, type]]:
    handler = type("G", (_Garbage,), {})
    with _serving(handler) as host:
        yield host, handler


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                     max_leaves=8)


def _manifest_like(config_bytes: bytes):
    import hashlib
    import json as _j

    good_cfg = {"mediaType": "application/vnd.agentix.package.config.v1+json",
                "digest": "sha256:" + hashlib.sha256(config_bytes).hexdigest(), "size": len(config_bytes)}
    return st.one_of(
        st.binary(max_size=40),
        _json.map(lambda v: _j.dumps(v).encode()),
        st.fixed_dictionaries({"config": st.one_of(_json, st.just(good_cfg)),
                               "layers": st.one_of(_json, st.lists(_json, max_size=2))}).map(lambda v: _j.dumps(v).encode()),
    )


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_garbage_manifest_or_config_is_one_clear_refusal(tmp_path_factory, garbage, data):
    """Held after the fix: the manifest bytes and the config blob a registry sends are parsed
    before any signature is checked; whatever they are, the pull ends in ``PackageRejected`` /
    ``RegistryError`` (before: a non-JSON manifest or config, or a ``layers`` that is not a list,
    escaped as a raw ``JSONDecodeError``/``TypeError``: an internal error), and tags nothing."""
    host, handler = garbage
    handler.config = data.draw(st.one_of(st.binary(max_size=30), _json.map(lambda v: __import__("json").dumps(v).encode())))
    handler.manifest = data.draw(_manifest_like(handler.config))
    s = PackageStore(tmp_path_factory.mktemp("g") / "h", timeout=5.0)
    with pytest.raises((RegistryError, PackageRejected)):
        s.pull(f"{host}/team/x:1.0.0")
    assert s.list() == []
