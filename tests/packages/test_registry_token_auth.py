"""Bearer-token registries (Docker Hub, GHCR, Harbor, GitLab, distribution with ``auth:
token``): the registry answers 401 with ``WWW-Authenticate: Bearer realm=…,service=…,scope=…``
and the client fetches a token for that scope from the realm, with the username and password
of ``registry/credentials.json``, or sends the ``token`` the credentials file holds.

The registry is the real one (Debian's docker-registry) configured with ``auth: token``; the
realm is ``TokenService``: a small loopback token server (what Docker Hub's auth.docker.io or
GitLab's /jwt/auth is) that checks a username and password and issues the JWT the registry
verifies (RS256, its self-signed certificate in the registry's ``rootcertbundle``, ``x5c``),
granting what the scope asked for. Scopes are per repository and per action (a HEAD asks for
``pull``, an upload for ``pull,push``): a token for one scope does not serve another."""

from __future__ import annotations

import base64
import datetime
import http.server
import json
import secrets
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from agentix.core.errors import RegistryError
from agentix.core.package import parse_ref
from agentix.packages.remote import Credentials, RemoteRegistry
from agentix.packages.registry_auth import Challenges, parse_challenge
from agentix.packages.service import PackageStore

from .conftest import Registry, free_port, start_registry, stop_registry

USER, PASSWORD, SERVICE, ISSUER = "ci", "s3cret", "agentix-test-registry", "agentix-test-issuer"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService:
    """The registry's token realm on loopback: ``GET /token?service=&scope=`` with Basic
    credentials answers ``{"token": JWT}`` granting the scope asked for; wrong or no
    credentials answer 401. ``asked`` lists the scopes tokens were issued for."""

    def __init__(self, cert_path: Path) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agentix test token issuer")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.asked: list[str] = []
        self.refused = 0
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                q = parse_qs(urlsplit(self.path).query)
                want = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                if urlsplit(self.path).path != "/token" or self.headers.get("Authorization") != want:
                    service.refused += 1
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                scopes = q.get("scope", [])
                service.asked.extend(scopes)
                body = json.dumps({"token": service.issue(scopes)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.port = free_port()
        self.server = Server(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def issue(self, scopes: list[str]) -> str:
        """A token the registry accepts, granting exactly ``scopes``
        (``repository:NAME:ACTIONS`` each)."""
        access = []
        for s in scopes:
            kind, name, actions = s.split(":", 2) if s.count(":") >= 2 else (s, "", "")
            access.append({"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]})
        header = {"typ": "JWT", "alg": "RS256",
                  "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()]}
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": USER, "aud": SERVICE, "exp": now + 300, "nbf": now - 10, "iat": now,
                  "jti": secrets.token_hex(8), "access": access}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        sig = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64(sig)}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def token_registry(tmp_path: Path) -> Iterator[tuple[Registry, TokenService]]:
    tokens = TokenService(tmp_path / "issuer.pem")
    reg = start_registry(tmp_path / "reg", extra=(
        f"auth:\n  token:\n    realm: {tokens.realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n"
        f"    rootcertbundle: {tmp_path / 'issuer.pem'}\n"))
    try:
        yield reg, tokens
    finally:
        stop_registry(reg)
        tokens.close()


def _actions(scopes: list[str]) -> set[str]:
    return {",".join(sorted(s.rsplit(":", 1)[1].split(","))) for s in scopes}


def _built(token_registry: tuple[Registry, TokenService], store: PackageStore,
           context: Path) -> tuple[Registry, TokenService, str]:
    reg, tokens = token_registry
    ref = reg.ref("team/hello:1.0.0")
    store.build(context, ref)
    return reg, tokens, ref


def _credentials(store: PackageStore, host: str, entry: dict[str, Any]) -> None:
    (store.layout.root / "credentials.json").write_text(json.dumps({host: entry}))


def test_push_and_pull_fetch_a_token_per_scope_with_the_credentials_files_password(
        token_registry: tuple[Registry, TokenService], store: PackageStore, other_store: PackageStore,
        context: Path) -> None:
    reg, tokens, ref = _built(token_registry, store, context)
    _credentials(store, reg.host, {"username": USER, "password": PASSWORD})
    pushed = store.push(ref)
    assert pushed["blobs_sent"] == 3
    assert "pull,push" in _actions(tokens.asked)              # an upload's scope
    assert len(tokens.asked) == len(set(tokens.asked))        # each scope asked for once: clients share it
    n = len(tokens.asked)
    _credentials(other_store, reg.host, {"username": USER, "password": PASSWORD})
    other_store.trust_allow_unsigned(reg.ref("team/*"))
    assert other_store.pull(ref)["digest"] == pushed["digest"]
    assert _actions(tokens.asked[n:]) == {"pull"}             # a pull asks for no more than it needs
    assert len(tokens.asked[n:]) == 1  # once: its parallel clients (signatures, layers) share the login
    assert store.push(ref)["blobs_sent"] == 0                  # a repush: HEADs under a pull token
    assert all(s.startswith("repository:team/hello:") for s in tokens.asked)


def test_without_credentials_or_with_a_wrong_password_it_is_unauthorized_and_nothing_is_sent(
        token_registry: tuple[Registry, TokenService], store: PackageStore, context: Path) -> None:
    reg, tokens, ref = _built(token_registry, store, context)
    for entry in (None, {"username": USER, "password": "wrong"}):
        if entry is not None:
            _credentials(store, reg.host, entry)
        for op in (store.push, store.pull):
            with pytest.raises(RegistryError) as exc:
                op(ref)
            assert exc.value.data["reason"] == "unauthorized", exc.value.message
            assert reg.host in exc.value.message and "credentials" in exc.value.message
    assert tokens.asked == [] and reg.files() == []


def test_a_token_from_the_credentials_file_is_sent_as_a_bearer_token(
        token_registry: tuple[Registry, TokenService], store: PackageStore, other_store: PackageStore,
        context: Path) -> None:
    reg, tokens, ref = _built(token_registry, store, context)
    _credentials(store, reg.host, {"username": USER, "password": PASSWORD})
    digest = store.push(ref)["digest"]
    asked = list(tokens.asked)
    # a CI job's token, issued elsewhere for this repository: sent as it is, no realm asked
    _credentials(other_store, reg.host, {"token": tokens.issue(["repository:team/hello:pull"])})
    other_store.trust_allow_unsigned(reg.ref("team/*"))
    assert other_store.pull(ref)["digest"] == digest
    assert tokens.asked == asked


class _Answer:
    """A registry's 401: only its ``WWW-Authenticate`` is read."""

    def __init__(self, challenge: str) -> None:
        self.headers = {"WWW-Authenticate": challenge}


def test_an_answer_that_repeats_what_was_refused_is_no_answer() -> None:
    """No loop: a wrong password, a token the realm keeps issuing, a static token — once refused,
    the caller reports unauthorized."""
    asked: list[str] = []

    def realm(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
        asked.append(url)
        return 200, b'{"token": "t1"}'

    bearer = 'Bearer realm="http://127.0.0.1:9/token",service="s",scope="repository:a:pull"'
    c = Challenges("u", "p", None, realm)
    basic = c.up_front()["Authorization"]
    assert c.answer(_Answer('Basic realm="r"'), {"Authorization": basic}) == ({"Authorization": basic}, False)
    h, again = c.answer(_Answer(bearer), {"Authorization": basic})
    assert again and h["Authorization"] == "Bearer t1" and c.up_front() == h
    assert asked == ["http://127.0.0.1:9/token?service=s&scope=repository%3Aa%3Apull"]
    assert c.answer(_Answer(bearer), h) == (h, False)          # fetched again, the same token: refused
    static = Challenges(None, None, "ci-token", realm)
    sent = static.up_front()
    assert sent == {"Authorization": "Bearer ci-token"} and static.answer(_Answer(bearer), sent)[1] is False
    assert Challenges(None, None, None, realm).answer(_Answer('Basic realm="r"'), {})[1] is False


@pytest.mark.parametrize("answer", [(401, b""), (200, b"not json"), (200, b'{"token": ""}'),
                                    (200, b'{"token": "a b"}'), (200, b'{"token": "a\\r\\nX-Injected: 1"}'),
                                    (200, b"[]"), (200, b'{"token": "' + b"x" * (1 << 20) + b'"}')])
def test_a_realm_answer_that_is_not_a_usable_token_is_no_answer(answer: tuple[int, bytes]) -> None:
    c = Challenges("u", "p", None, lambda url, headers: answer)
    h, again = c.answer(_Answer('Bearer realm="http://127.0.0.1:9/t",scope="repository:a:pull"'), {})
    assert again is False and "Authorization" not in h


def test_parse_challenge() -> None:
    assert parse_challenge('Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push"') \
        == ("bearer", {"realm": "https://auth.example/token", "service": "reg", "scope": "repository:a/b:pull,push"})
    assert parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})
    assert parse_challenge("") == ("", {})


def test_a_sibling_fetches_its_token_on_its_own_clock_not_its_creators(
        token_registry: tuple[Registry, TokenService]) -> None:
    """Siblings share one ``Challenges``; a sibling answering a new challenge fetches the token
    through itself: the creator's request in flight stays on its clock (once, the fetch ran on
    the creator's clock: its ``start`` cancelled the creator's watchdog, its ``stop`` left the
    creator's request unwatched, for a registry to drip)."""
    reg, tokens = token_registry
    creator = RemoteRegistry(reg.host, Credentials(USER, PASSWORD))
    side = creator.sibling()
    creator.clock.start()  # the creator's request, in flight on another thread
    try:
        assert side.has_blob(parse_ref(reg.ref("team/hello:1.0.0")), "sha256:" + "0" * 64) is False
        assert tokens.asked  # the sibling did fetch a token
        assert creator.clock.armed()  # and the creator's request is still watched
    finally:
        creator.clock.stop()
    assert not creator.clock.armed()
