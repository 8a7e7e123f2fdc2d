"""Signing and trust (SCENARIO 53): each test is an attack; it asserts the refusal and that
nothing moved (no tag, no unpacked files, no change to the highest version seen)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentix.core.errors import HandoffEscalationDenied, InvalidRequest, PackageRejected
from agentix.core.package import (Signature, SignedStatement, TrustPolicy, capability_ceiling, decide,
                                  parse_ref)
from agentix.packages.layout import MANIFEST_TYPE, Descriptor
from agentix.packages.service import PackageStore
from agentix.packages.trust import add_signature, read_signatures, signature_ref

from .conftest import make_context

REF = "team/hello:1.0.0"


def run_dir(store: PackageStore) -> Path:
    return store.home / "unpacked"


def assert_nothing_moved(store: PackageStore, highest: str | None = None) -> None:
    assert not run_dir(store).exists()
    assert store.trust.highest("team/hello") == highest


def test_signed_by_a_trusted_key_runs(signed: PackageStore) -> None:
    p = signed.prepare(REF, "all", run_dir(signed))
    assert p.verdict.basis == "signed"
    assert (p.program_dir / "agent" / "__main__.py").is_file()
    assert signed.trust.highest("team/hello") == "1.0.0"


def test_unsigned_package_is_refused(store: PackageStore, context: Path) -> None:
    store.build(context, REF)
    store.keys.generate("publisher")
    store.trust_add("publisher", "team/*")
    with pytest.raises(PackageRejected) as exc:
        store.prepare(REF, "all", run_dir(store))
    assert exc.value.data["reason"] == "unsigned"
    assert_nothing_moved(store)


def test_unsigned_is_accepted_only_where_the_policy_allows_it(store: PackageStore, context: Path) -> None:
    store.build(context, REF)
    store.trust_allow_unsigned("other/*")
    with pytest.raises(PackageRejected):
        store.prepare(REF, "all", run_dir(store))
    store.trust_allow_unsigned("team/hello")
    assert store.prepare(REF, "all", run_dir(store)).verdict.basis == "unsigned_allowed"


def test_package_signed_by_an_untrusted_key_is_refused(signed: PackageStore) -> None:
    signed.trust.save_policy(TrustPolicy())
    signed.keys.generate("stranger")
    signed.trust_add("stranger", "other/*")  # trusted, but not for this name
    with pytest.raises(PackageRejected) as exc:
        signed.prepare(REF, "all", run_dir(signed))
    assert exc.value.data["reason"] == "untrusted_key"
    assert_nothing_moved(signed)


def test_tampered_layer_is_refused_before_anything_is_written(signed: PackageStore) -> None:
    m = json.loads(signed.layout.read_blob(signed.layout.resolve(parse_ref(REF)).digest))
    layer = signed.layout.blob_path(m["layers"][0]["digest"])
    data = bytearray(layer.read_bytes())
    data[-10] ^= 0xFF
    layer.write_bytes(bytes(data))
    with pytest.raises(PackageRejected) as exc:
        signed.prepare(REF, "all", run_dir(signed))
    assert exc.value.data["reason"] == "digest_mismatch"
    assert not run_dir(signed).exists()
    assert not list(signed.home.glob(".unpack-*"))


def test_tampered_config_widening_capabilities_is_refused(signed: PackageStore) -> None:
    desc = signed.layout.resolve(parse_ref(REF))
    m = json.loads(signed.layout.read_blob(desc.digest))
    cfg = json.loads(signed.layout.read_blob(m["config"]["digest"]))
    cfg["capabilities"].append("file_read: /*")
    # rewrite config and manifest consistently: the manifest digest changes, the signature no longer matches
    body = json.dumps(cfg).encode()
    m["config"] = Descriptor(m["config"]["mediaType"], signed.layout.put_bytes(body), len(body)).to_data()
    mbytes = json.dumps(m).encode()
    new = Descriptor(MANIFEST_TYPE, signed.layout.put_bytes(mbytes), len(mbytes))
    signed.layout.tag(parse_ref(REF), new)
    with pytest.raises(PackageRejected) as exc:
        signed.prepare(REF, "all", run_dir(signed))
    assert exc.value.data["reason"] in ("unsigned", "wrong_statement")
    assert_nothing_moved(signed)


def test_forged_signature_bytes_are_refused(signed: PackageStore) -> None:
    ref = parse_ref(REF)
    desc = signed.layout.resolve(ref)
    [sig] = read_signatures(signed.layout, ref, desc.digest)
    forged = Signature(sig.keyid, sig.statement, bytes(64))
    signed.layout.untag(signature_ref(ref, desc.digest))
    add_signature(signed.layout, ref, desc, forged)
    with pytest.raises(PackageRejected) as exc:
        signed.prepare(REF, "all", run_dir(signed))
    assert exc.value.data["reason"] == "bad_signature"
    assert_nothing_moved(signed)


def test_forged_signature_is_refused_even_where_unsigned_packages_are_allowed(signed: PackageStore) -> None:
    """Allowing unsigned packages for a name does not make a trusted key's failed signature
    count as "unsigned": it is evidence of tampering, and refused."""
    ref = parse_ref(REF)
    desc = signed.layout.resolve(ref)
    [sig] = read_signatures(signed.layout, ref, desc.digest)
    signed.trust_allow_unsigned("team/*")
    signed.layout.untag(signature_ref(ref, desc.digest))
    add_signature(signed.layout, ref, desc, Signature(sig.keyid, sig.statement, bytes(64)))
    with pytest.raises(PackageRejected) as exc:
        signed.prepare(REF, "all", run_dir(signed))
    assert exc.value.data["reason"] == "bad_signature"
    assert_nothing_moved(signed)
    signed.layout.untag(signature_ref(ref, desc.digest))  # the same package with no signature at all
    assert signed.prepare(REF, "all", run_dir(signed)).verdict.basis == "unsigned_allowed"


def test_signature_for_1_0_replayed_on_2_0_is_refused(tmp_path: Path, signed: PackageStore) -> None:
    ctx2 = make_context(tmp_path / "ctx2", version="2.0.0")
    signed.build(ctx2, "team/hello:2.0.0")
    ref1, ref2 = parse_ref(REF), parse_ref("team/hello:2.0.0")
    d1, d2 = signed.layout.resolve(ref1), signed.layout.resolve(ref2)
    [sig] = read_signatures(signed.layout, ref1, d1.digest)
    add_signature(signed.layout, ref2, d2, sig)  # the 1.0 signature beside the 2.0 package
    with pytest.raises(PackageRejected) as exc:
        signed.prepare("team/hello:2.0.0", "all", run_dir(signed))
    assert exc.value.data["reason"] == "wrong_statement"
    assert_nothing_moved(signed)


def test_tag_2_0_pointing_at_the_signed_1_0_package_is_refused(signed: PackageStore) -> None:
    ref1 = parse_ref(REF)
    d1 = signed.layout.resolve(ref1)
    signed.layout.tag(parse_ref("team/hello:2.0.0"), d1)
    add_signature(signed.layout, parse_ref("team/hello:2.0.0"), d1,
                  read_signatures(signed.layout, ref1, d1.digest)[0])
    with pytest.raises(PackageRejected) as exc:
        signed.prepare("team/hello:2.0.0", "all", run_dir(signed))
    assert exc.value.data["reason"] == "wrong_statement"


def test_signature_replayed_on_another_name_is_refused(signed: PackageStore) -> None:
    ref1 = parse_ref(REF)
    d1 = signed.layout.resolve(ref1)
    other = parse_ref("team/evil:1.0.0")
    signed.layout.tag(other, d1)
    add_signature(signed.layout, other, d1, read_signatures(signed.layout, ref1, d1.digest)[0])
    with pytest.raises(PackageRejected) as exc:
        signed.prepare("team/evil:1.0.0", "all", run_dir(signed))
    assert exc.value.data["reason"] == "wrong_statement"


def test_rollback_is_refused_unless_allowed(tmp_path: Path, signed: PackageStore) -> None:
    ctx2 = make_context(tmp_path / "ctx2", version="2.0.0")
    signed.build(ctx2, "team/hello:2.0.0")
    signed.sign("team/hello:2.0.0", "publisher")
    signed.prepare("team/hello:2.0.0", "all", tmp_path / "run2")
    assert signed.trust.highest("team/hello") == "2.0.0"
    with pytest.raises(PackageRejected) as exc:
        signed.prepare(REF, "all", run_dir(signed))
    assert exc.value.data["reason"] == "rollback"
    assert_nothing_moved(signed, highest="2.0.0")
    p = signed.prepare(REF, "all", run_dir(signed), allow_rollback=True)
    assert p.verdict.rollback_allowed and signed.trust.highest("team/hello") == "2.0.0"


# ---------------------------------------------------------------- the capability ceiling
def test_accepting_all_gives_exactly_what_was_declared(signed: PackageStore) -> None:
    p = signed.prepare(REF, "all", run_dir(signed))
    assert p.manifest["capabilities"] == p.declared == ["tool: echo", "file_write: /workspace/out/*"]


def test_accepting_part_gives_only_that_part(signed: PackageStore) -> None:
    p = signed.prepare(REF, ["tool: echo"], run_dir(signed))
    assert p.manifest["capabilities"] == ["tool: echo"]


def test_accepting_more_than_declared_is_refused(signed: PackageStore) -> None:
    with pytest.raises(HandoffEscalationDenied) as exc:
        signed.prepare(REF, ["tool: echo", "network: *"], run_dir(signed))
    assert exc.value.data["missing"] == ["network: *"]
    assert_nothing_moved(signed)


def test_accepting_a_narrower_grant_is_allowed() -> None:
    assert capability_ceiling(["file_write: /workspace/out/*"], ["file_write: /workspace/out/a/*"]) == \
        ["file_write: /workspace/out/a/*"]
    with pytest.raises(HandoffEscalationDenied):
        capability_ceiling(["file_write: /workspace/out/*"], ["file_write: /workspace/*"])


GRANTS = st.sampled_from(["tool: echo", "tool: *", "file_read: /data/*", "file_read: /data/a/*",
                          "file_write: /out/*", "network: *.x.com", "network: a.x.com", "exec: git"])


@settings(max_examples=200, deadline=None)
@given(st.lists(GRANTS, max_size=5), st.lists(GRANTS, max_size=5))
def test_the_ceiling_is_never_wider_than_declared(declared: list[str], accepted: list[str]) -> None:
    from agentix.core.grants import parse_grants

    try:
        got = capability_ceiling(declared, accepted)
    except HandoffEscalationDenied:
        return
    d = parse_grants(declared)
    assert all(d.covers(g) for g in parse_grants(got))


# ---------------------------------------------------------------- the pure decision
def test_decide_is_pure_and_binds_all_three_fields() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from agentix.core.package import key_id

    k = Ed25519PrivateKey.generate()
    raw = k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    st_ = SignedStatement("r.example/team/x", "1.0.0", "sha256:" + "a" * 64)
    sig = Signature(key_id(raw), st_, k.sign(st_.payload()))
    policy = TrustPolicy().with_key(raw, "r.example/team/*")
    assert decide(policy, st_, [sig], None).basis == "signed"
    for other in (SignedStatement("r.example/team/y", "1.0.0", st_.digest),
                  SignedStatement(st_.name, "1.0.1", st_.digest),
                  SignedStatement(st_.name, "1.0.0", "sha256:" + "b" * 64)):
        with pytest.raises(PackageRejected) as exc:
            decide(policy, other, [sig], None)
        assert exc.value.data["reason"] == "wrong_statement"
    # 'team/*' never matches 'teamx/...' ; a pattern is checked when added
    assert TrustPolicy().with_key(raw, "r.example/team/*").keys_for("r.example/teamx/y") == {}
    with pytest.raises(InvalidRequest):
        TrustPolicy().with_key(raw, "r.example/../*")


def test_a_signed_package_cannot_choose_its_own_isolation_or_lifecycle(store: PackageStore, context: Path) -> None:
    store.build(context, REF)
    ref = parse_ref(REF)
    desc = store.layout.resolve(ref)
    m = json.loads(store.layout.read_blob(desc.digest))
    cfg = json.loads(store.layout.read_blob(m["config"]["digest"]))
    cfg["manifest"].update(isolation="degraded", lifecycle="persistent", priority=1000)
    body = json.dumps(cfg).encode()
    m["config"] = Descriptor(m["config"]["mediaType"], store.layout.put_bytes(body), len(body)).to_data()
    mbytes = json.dumps(m).encode()
    store.layout.tag(ref, Descriptor(MANIFEST_TYPE, store.layout.put_bytes(mbytes), len(mbytes)))
    store.keys.generate("publisher")
    store.sign(REF, "publisher")  # even signed by a trusted key
    store.trust_add("publisher", "team/*")
    p = store.prepare(REF, "all", run_dir(store))
    assert not {"isolation", "lifecycle", "priority"} & set(p.manifest)
