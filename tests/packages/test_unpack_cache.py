"""The cache of unpacked packages (``registry/unpacked/<key>``): a package's layers are
verified and inflated once; later runs copy the kept tree. Each attack on it asserts the
refusal and that nothing was left: no run directory, no half-made cache entry."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from agentix.core.errors import PackageRejected
from agentix.core.package import parse_ref
from agentix.packages import service as service_mod
from agentix.packages.service import PackageStore

REF = "team/hello:1.0.0"


def _cache(store: PackageStore) -> Path:
    return store.layout.root / "unpacked"


def _tree(root: Path) -> dict[str, tuple[int, bytes | None]]:
    return {str(p.relative_to(root)): (stat.S_IMODE(p.lstat().st_mode), p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def _layer_blob(store: PackageStore) -> Path:
    m = store.layout.read_json(store.layout.resolve(parse_ref(REF)).digest)
    return store.layout.blob_path(m["layers"][0]["digest"])


def test_a_second_run_copies_the_kept_tree_without_unpacking_again(signed: PackageStore,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    real = service_mod.unpack_layers
    monkeypatch.setattr(service_mod, "unpack_layers", lambda *a, **kw: calls.append(a) or real(*a, **kw))
    one = signed.prepare(REF, "all", signed.home / "run1").program_dir
    two = signed.prepare(REF, "all", signed.home / "run2").program_dir
    assert len(calls) == 1
    assert _tree(one) == _tree(two) and "agent/__main__.py" in _tree(one)
    # each run gets its own writable copy with normalised modes; the kept tree is read-only
    assert all(mode in (0o644, 0o755) for mode, _ in _tree(one).values())
    (one / "agent" / "util.py").write_text("changed by run 1\n")
    assert (two / "agent" / "util.py").read_text() == "X = 1\n"
    [kept] = [p / "tree" for p in _cache(signed).iterdir()]
    assert (kept / "agent" / "util.py").read_text() == "X = 1\n"
    assert {mode for p, (mode, body) in _tree(kept).items() if body is not None} <= {0o444, 0o555}


def test_a_tampered_layer_is_refused_on_the_first_run_and_nothing_is_kept(signed: PackageStore) -> None:
    blob = _layer_blob(signed)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    with pytest.raises(PackageRejected) as ei:
        signed.prepare(REF, "all", signed.home / "run1")
    assert ei.value.data["reason"] == "digest_mismatch"
    assert not (signed.home / "run1").exists()
    assert list(_cache(signed).iterdir()) == []  # no half-made or unverified tree is kept
    assert signed.trust.highest("team/hello") is None


@pytest.mark.parametrize("plant", ["symlink", "fifo"])
def test_an_altered_kept_tree_is_refused_and_the_run_leaves_nothing(signed: PackageStore, tmp_path: Path,
                                                                     plant: str) -> None:
    signed.prepare(REF, "all", signed.home / "run1")
    [kept] = [p / "tree" for p in _cache(signed).iterdir()]
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
    signed.prepare(REF, "all", signed.home / "run1")
    assert len(list(_cache(signed).iterdir())) == 1
    signed.remove(REF)
    assert list(_cache(signed).iterdir()) == []
