"""Attack round 3 on the cache of unpacked packages (``registry/unpacked/<key>/tree``): a kept
tree altered at rest after it was verified — a file rewritten in place (same size), replaced
by another file, a file added or removed, a hard link made to one. Before, only links and
special files were noticed: changed *contents* were copied into the next run's workspace and
ran, though the run "verified the package". Now each kept tree has a seal (each entry's inode,
size, times, link count) made when it was verified; a copy checks every entry against it on
the file actually opened: a mismatch is refused (``corrupt``), no run directory appears, and the
altered tree is removed so the next run unpacks again from the verified blobs.

Not covered (docs/packages.md): a writer holding the kernel's own uid can rewrite the seal too —
as it could the trust policy and the keys. Held: a second package can never share a tree (the
key is the full SHA-256 of the layer digests and limits, never a prefix)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentix.core.errors import PackageRejected
from agentix.packages.service import PackageStore

REF = "team/hello:1.0.0"


def _keep(store: PackageStore) -> Path:
    """Run the package until its tree is kept (the second run of its content keeps it)."""
    for _ in range(2):
        store.prepare(REF, "all", store.home / f"keep-{os.urandom(4).hex()}")
    return _kept(store)


def _kept(store: PackageStore) -> Path:
    [kept] = [p for p in (store.layout.root / "unpacked").iterdir() if not p.name.startswith(".")]
    return kept / "tree"


def _writable(p: Path) -> None:
    os.chmod(p, 0o755 if p.is_dir() else 0o644)


def rewrite_in_place(tree: Path, outside: Path) -> None:
    f = tree / "agent" / "util.py"
    if not f.exists():
        return remove_file(tree, outside)
    _writable(f)
    f.write_text("X = 2\n")          # same size: only the content changed


def replace_file(tree: Path, outside: Path) -> None:
    _writable(tree / "agent")
    (tree / "agent" / "new.py").write_text("import os; os.system('id')\n")
    os.replace(tree / "agent" / "new.py", tree / "agent" / "util.py")


def add_file(tree: Path, outside: Path) -> None:
    _writable(tree / "agent")
    (tree / "agent" / "extra.py").write_text("print('planted')\n")


def remove_file(tree: Path, outside: Path) -> None:
    _writable(tree / "agent")
    (tree / "agent" / "util.py").unlink(missing_ok=True)
    (tree / "agent" / "__main__.py").unlink(missing_ok=True)


def hard_link_out(tree: Path, outside: Path) -> None:
    if not (tree / "agent" / "util.py").exists():
        return add_file(tree, outside)
    os.link(tree / "agent" / "util.py", outside / "handle")   # a handle to write through later


ATTACKS: list[Callable[[Path, Path], None]] = [rewrite_in_place, replace_file, add_file, remove_file, hard_link_out]


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.__name__ for a in ATTACKS])
def test_a_kept_tree_altered_at_rest_is_never_copied_into_a_run(signed: PackageStore, tmp_path: Path, attack) -> None:
    first = signed.prepare(REF, "all", signed.home / "run1").program_dir
    original = (first / "agent" / "util.py").read_bytes()
    attack(_keep(signed), tmp_path)
    with pytest.raises(PackageRejected) as ei:
        signed.prepare(REF, "all", signed.home / "run2")
    assert ei.value.data["reason"] == "corrupt", ei.value.message
    assert "altered" in ei.value.message
    assert not (signed.home / "run2").exists()
    assert not [p for p in signed.home.iterdir() if p.name.startswith(".copy-")]
    assert not list((signed.layout.root / "unpacked").iterdir())   # the altered tree is gone
    # the next run unpacks again from the verified blobs: the original content, nothing planted
    third = signed.prepare(REF, "all", signed.home / "run3").program_dir
    assert (third / "agent" / "util.py").read_bytes() == original
    assert not (third / "agent" / "extra.py").exists()


def test_an_altered_seal_without_the_tree_is_made_again(signed: PackageStore) -> None:
    seal = _keep(signed).parent / "seal.json"
    seal.write_text("not json")
    run = signed.prepare(REF, "all", signed.home / "run2").program_dir   # remade from the blobs
    assert (run / "agent" / "util.py").read_text() == "X = 1\n"
    assert (_kept(signed).parent / "seal.json").read_text() != "not json"


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(picks=st.lists(st.sampled_from(ATTACKS), min_size=1, max_size=3, unique=True))
def test_any_mix_of_alterations_is_refused(signed: PackageStore, tmp_path_factory, picks) -> None:
    tree = _keep(signed)  # the kept tree exists (made again after the last refusal)
    outside = tmp_path_factory.mktemp("o")
    for attack in picks:
        attack(tree, outside)
    dest = signed.home / f"run-{os.urandom(4).hex()}"
    with pytest.raises(PackageRejected) as ei:
        signed.prepare(REF, "all", dest)
    assert ei.value.data["reason"] == "corrupt"
    assert not dest.exists()
