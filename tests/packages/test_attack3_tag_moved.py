"""Attack round 3: a tag moved on the registry between verify and run (TOCTOU). ``pull``
verifies digest D1 and tags it locally; the publisher (or an attacker holding the registry)
then points the tag at D2. A run uses the local tag, resolved ONCE to D1: everything after
(signature, trust, manifest, layers, unpack) goes by that digest, so D2 never runs until it is
pulled and verified itself. Held; the test keeps it held."""

from __future__ import annotations

from pathlib import Path

from agentix.core.package import parse_ref
from agentix.packages.service import PackageStore

from .conftest import PROGRAM, Registry, make_context
from .test_registry import publish


def test_a_tag_moved_on_the_registry_after_the_pull_does_not_change_what_runs(
        store: PackageStore, other_store: PackageStore, registry: Registry, tmp_path: Path) -> None:
    ref = registry.ref("team/moving:1.0.0")
    pub = publish(store, make_context(tmp_path / "v1"), ref)
    other_store.trust_add(pub, registry.ref("team/*"))
    d1 = other_store.pull(ref)["digest"]
    # the tag moves on the registry: same name and version, other (also signed) content
    publish(store, make_context(tmp_path / "v2", program=PROGRAM + "\nprint('MOVED')\n"), ref)
    d2 = store.layout.resolve(parse_ref(ref)).digest
    assert d2 != d1
    run = other_store.prepare(ref, "all", tmp_path / "run")
    assert run.digest == d1
    assert "MOVED" not in (run.program_dir / "agent" / "__main__.py").read_text()
    assert other_store.layout.resolve(parse_ref(ref)).digest == d1   # nothing re-tagged locally
