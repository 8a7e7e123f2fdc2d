"""The cache of unpacked packages (``registry/unpacked/<key>``): the first run of a package's
content unpacks its layers straight into the run's directory (verified as they stream, nothing
kept, nothing copied); the second run unpacks them once more into a kept, sealed tree; later
runs copy the kept tree. Each attack on it asserts the refusal and that nothing was left: no
run directory, no half-made cache entry."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agentix.core.errors import PackageRejected
from agentix.core.package import parse_ref
from agentix.packages import service as service_mod
from agentix.packages.service import PackageStore

from .conftest import make_context

REF = "team/hello:1.0.0"


def _cache(store: PackageStore) -> Path:
    return store.layout.root / "unpacked"


def _kept_entries(store: PackageStore) -> list[Path]:
    """What ``registry/unpacked/`` holds (nothing at all before a tree was first kept)."""
    return list(_cache(store).iterdir()) if _cache(store).exists() else []


def _tree(root: Path) -> dict[str, tuple[int, bytes | None]]:
    return {str(p.relative_to(root)): (stat.S_IMODE(p.lstat().st_mode), p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def _layer_blob(store: PackageStore) -> Path:
    m = store.layout.read_json(store.layout.resolve(parse_ref(REF)).digest)
    return store.layout.blob_path(m["layers"][0]["digest"])


def keep(store: PackageStore) -> Path:
    """Run the package until its tree is kept (the second run of its content keeps it); the
    kept tree."""
    for i in range(2):
        store.prepare(REF, "all", store.home / f"keep-{os.urandom(4).hex()}")
    [kept] = [p / "tree" for p in _cache(store).iterdir()]
    return kept


def test_the_first_run_unpacks_into_its_directory_the_second_keeps_the_tree_later_runs_copy_it(
        signed: PackageStore, monkeypatch: pytest.MonkeyPatch) -> None:
    unpacked: list[Path] = []
    copied: list[Path] = []
    real_unpack, real_copy = service_mod.unpack_layers, service_mod.copy_tree
    monkeypatch.setattr(service_mod, "unpack_layers", lambda files, dest, *a, **kw: unpacked.append(dest)
                        or real_unpack(files, dest, *a, **kw))
    monkeypatch.setattr(service_mod, "copy_tree", lambda src, dest, *a, **kw: copied.append(dest)
                        or real_copy(src, dest, *a, **kw))
    one = signed.prepare(REF, "all", signed.home / "run1").program_dir
    # the first run: the layers went straight into the run's directory; nothing kept or copied
    assert unpacked == [signed.home / "run1"] and copied == []
    assert _kept_entries(signed) == []
    two = signed.prepare(REF, "all", signed.home / "run2").program_dir
    # the second: unpacked once more, into the kept tree, and copied from it
    assert len(unpacked) == 2 and unpacked[1].parent.parent == _cache(signed) and copied == [two]
    three = signed.prepare(REF, "all", signed.home / "run3").program_dir
    assert len(unpacked) == 2 and copied == [two, three]  # the third: a copy only
    assert _tree(one) == _tree(two) == _tree(three) and "agent/__main__.py" in _tree(one)
    # each run gets its own writable tree with normalised modes; the kept tree is read-only
    for run in (one, two, three):
        assert all(mode in (0o644, 0o755) for mode, _ in _tree(run).values())
    (one / "agent" / "util.py").write_text("changed by run 1\n")
    (two / "agent" / "util.py").write_text("changed by run 2\n")
    assert (three / "agent" / "util.py").read_text() == "X = 1\n"
    [kept] = [p / "tree" for p in _cache(signed).iterdir()]
    assert (kept / "agent" / "util.py").read_text() == "X = 1\n"
    assert {mode for p, (mode, body) in _tree(kept).items() if body is not None} <= {0o444, 0o555}


def test_a_store_remembers_a_bounded_number_of_first_runs(signed: PackageStore, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_mod, "MAX_RAN_ONCE", 1)
    signed.prepare(REF, "all", signed.home / "run1")
    # another content's first run pushes this one's out: its next run is a first run again
    signed.build(make_context(tmp_path / "other", version="2.0.0", program="print('other')\n"),
                 "team/hello:2.0.0")
    signed.sign("team/hello:2.0.0", "publisher")
    signed.prepare("team/hello:2.0.0", "all", signed.home / "run2")
    assert len(signed._ran_once) == 1
    signed.prepare(REF, "all", signed.home / "run3", allow_rollback=True)
    assert _kept_entries(signed) == []
    assert (signed.home / "run3" / "agent" / "util.py").read_text() == "X = 1\n"


def test_a_tampered_layer_is_refused_on_the_first_run_and_nothing_is_kept(signed: PackageStore) -> None:
    blob = _layer_blob(signed)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    with pytest.raises(PackageRejected) as ei:
        signed.prepare(REF, "all", signed.home / "run1")
    assert ei.value.data["reason"] == "digest_mismatch"
    assert not (signed.home / "run1").exists()
    assert _kept_entries(signed) == []  # no half-made or unverified tree is kept
    assert signed.trust.highest("team/hello") is None


@pytest.mark.parametrize("plant", ["symlink", "fifo"])
def test_an_altered_kept_tree_is_refused_and_the_run_leaves_nothing(signed: PackageStore, tmp_path: Path,
                                                                     plant: str) -> None:
    kept = keep(signed)
    os.chmod(kept / "agent", 0o755)
    secret = tmp_path / "secret"
    secret.write_text("host secret\n")
    if plant == "symlink":
        os.symlink(secret, kept / "agent" / "zz-link")
    else:
        os.mkfifo(kept / "agent" / "zz-fifo")
    with pytest.raises(PackageRejected) as ei:
        signed.prepare(REF, "all", signed.home / "run2")
    assert ei.value.data["reason"] == "corrupt"
    assert not (signed.home / "run2").exists()
    assert not [p for p in signed.home.iterdir() if p.name.startswith(".copy-")]


def test_removing_the_package_removes_its_kept_tree(signed: PackageStore) -> None:
    keep(signed)
    assert len(_kept_entries(signed)) == 1
    signed.remove(REF)
    assert _kept_entries(signed) == []
