"""Agentfile -> package: reproducible digests, the layer cache, and malformed Agentfiles."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentix.core.agentfile import parse_agentfile_text
from agentix.core.errors import InvalidRequest
from agentix.packages.service import PackageStore

from .conftest import AGENTFILE, make_context


def test_same_inputs_in_different_dirs_at_different_times_give_identical_digests(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = make_context(tmp_path / "a")
    r1 = PackageStore(tmp_path / "h1").build(a, "team/hello:1.0.0")
    b = make_context(tmp_path / "elsewhere" / "b")
    os.chmod(b / "agent" / "util.py", 0o600)  # permission bits other than exec do not leak
    # every file and directory of b has another mtime than a's (a day apart, each its own)
    for i, p in enumerate(sorted(b.rglob("*"), reverse=True)):
        os.utime(p, (12345 + i, 12345 + i))
    # and the build runs a day later (virtual time: the clock gzip, tarfile and a stray
    # time.time() would read), not after a real one-second sleep
    day_later = time.time() + 86_400
    monkeypatch.setattr(time, "time", lambda: day_later)
    monkeypatch.setattr(time, "time_ns", lambda: int(day_later * 1e9))
    r2 = PackageStore(tmp_path / "h2").build(b, "team/hello:1.0.0")
    assert r1.digest == r2.digest
    assert r1.layers == r2.layers
    blob = (tmp_path / "h1" / "registry" / "blobs" / "sha256" / r1.digest[7:]).read_bytes()
    assert blob == (tmp_path / "h2" / "registry" / "blobs" / "sha256" / r2.digest[7:]).read_bytes()


def test_json_and_yaml_agentfiles_build_byte_identical_packages(tmp_path: Path) -> None:
    y = make_context(tmp_path / "y")
    j = make_context(tmp_path / "j")
    (j / "Agentfile").unlink()
    data = yaml.safe_load(AGENTFILE.format(version="1.0.0"))
    (j / "Agentfile.json").write_text(json.dumps(data, indent=4, sort_keys=False))
    ry = PackageStore(tmp_path / "hy").build(y, "team/hello:1.0.0")
    rj = PackageStore(tmp_path / "hj").build(j, "team/hello:1.0.0")
    assert ry.digest == rj.digest


def test_layers_are_normalised_tar_gzip(store: PackageStore, context: Path) -> None:
    os.chmod(context / "agent" / "__main__.py", 0o775)
    r = store.build(context, "team/hello:1.0.0")
    raw = store.layout.read_blob(r.layers[0], 1 << 30)
    assert raw[3] == 0 and raw[4:8] == b"\0\0\0\0"  # gzip: no FNAME flag, mtime 0
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(raw))) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert names == ["agent", "agent/__main__.py", "agent/util.py"]
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
        assert m.mode == (0o755 if m.isdir() or m.name.endswith("__main__.py") else 0o644)


def test_step_digests_cover_file_contents_and_destinations(tmp_path: Path) -> None:
    a = make_context(tmp_path / "a")
    base = PackageStore(tmp_path / "h").build(a, "team/hello:1.0.0")
    (a / "data" / "notes.txt").write_text("remember the salt\n")  # same size, other content
    changed = PackageStore(tmp_path / "h").build(a, "team/hello:1.0.0")
    assert changed.layers[0] == base.layers[0] and changed.layers[1] != base.layers[1]
    assert changed.digest != base.digest
    # the same bytes copied to another destination give another layer
    af = (a / "Agentfile").read_text().replace("to: agent/notes.txt", "to: agent/notes2.txt")
    (a / "Agentfile").write_text(af)
    moved = PackageStore(tmp_path / "h").build(a, "team/hello:1.0.0")
    assert moved.layers[1] != changed.layers[1]


def test_unchanged_rebuild_uses_the_layer_cache(store: PackageStore, context: Path) -> None:
    cold = store.build(context, "team/hello:1.0.0")
    assert cold.cached == (False, False)
    warm = store.build(context, "team/hello:1.0.0")
    assert warm.cached == (True, True) and warm.digest == cold.digest
    (context / "agent" / "util.py").write_text("X = 2\n")
    third = store.build(context, "team/hello:1.0.0")
    assert third.cached == (False, True) and third.digest != cold.digest


def test_a_deleted_cached_blob_is_rebuilt_not_trusted(store: PackageStore, context: Path) -> None:
    cold = store.build(context, "team/hello:1.0.0")
    store.layout.blob_path(cold.layers[0]).unlink()
    again = store.build(context, "team/hello:1.0.0")
    assert again.cached == (False, True) and again.digest == cold.digest


def test_symlink_in_the_build_context_is_refused_and_nothing_is_tagged(store: PackageStore, context: Path) -> None:
    (context / "agent" / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(InvalidRequest, match="symlinks"):
        store.build(context, "team/hello:1.0.0")
    assert store.list() == []


def test_run_steps_are_refused_not_run_on_the_host(store: PackageStore, context: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    af = (context / "Agentfile").read_text().replace(
        "      - copy: agent\n", f"      - copy: agent\n      - run: [touch, {marker}]\n")
    (context / "Agentfile").write_text(af)
    with pytest.raises(InvalidRequest, match="only inside the agentix sandbox") as exc:
        store.build(context, "team/hello:1.0.0")
    assert exc.value.data["field"] == "stages.0.steps.1.run"
    assert not marker.exists() and store.list() == []


def test_a_tag_that_is_another_version_is_refused(store: PackageStore, context: Path) -> None:
    with pytest.raises(InvalidRequest, match="version"):
        store.build(context, "team/hello:2.0.0")
    assert store.list() == []


# ---------------------------------------------------------------- malformed Agentfiles
GOOD = AGENTFILE.format(version="1.0.0")
BAD = [
    # (description, text transform, expected line, expected field)
    ("unknown top-level field", lambda t: t + "capabilites: []\n", 22, "capabilites"),
    ("bad version", lambda t: t.replace("version: 1.0.0", "version: one"), 4, "metadata.version"),
    ("missing name", lambda t: t.replace("  name: hello\n", ""), 2, "metadata.name"),
    ("copy with ..", lambda t: t.replace("copy: agent\n", "copy: ../../etc\n"), 11, "stages.0.steps.0.copy"),
    ("absolute destination", lambda t: t.replace("to: agent/notes.txt", "to: /etc/cron.d/x"), 13,
     "stages.0.steps.1.to"),
    ("step of no kind", lambda t: t.replace("      - copy: agent\n", "      - cp: agent\n"), 11,
     "stages.0.steps.0"),
    ("unknown step field", lambda t: t.replace("to: agent/notes.txt", "too: agent/notes.txt"), 13,
     "stages.0.steps.1.too"),
    ("wrong apiVersion", lambda t: t.replace("agentix/v1", "agentix/v2"), 1, "apiVersion"),
    ("program and llm", lambda t: t.replace("  program: agent\n", "  program: agent\n  llm: {model: x}\n"),
     14, "agent"),
    ("bad limit", lambda t: t.replace("memory: 256M", "memory: lots"), 21, "limits.memory"),
]


@pytest.mark.parametrize("desc,transform,line,field", BAD, ids=[b[0] for b in BAD])
def test_malformed_agentfile_names_line_and_field(store: PackageStore, context: Path, desc: str,
                                                  transform, line: int, field: str) -> None:
    (context / "Agentfile").write_text(transform(GOOD))
    with pytest.raises(InvalidRequest) as exc:
        store.build(context, "team/hello:1.0.0")
    assert exc.value.data["field"] == field, exc.value.message
    assert exc.value.data["line"] == line, exc.value.message
    assert f"Agentfile:{line}: {field}" in exc.value.message
    assert store.list() == []  # nothing tagged


def test_malformed_json_agentfile_names_line(store: PackageStore, context: Path) -> None:
    (context / "Agentfile").unlink()
    text = json.dumps(yaml.safe_load(GOOD), indent=2).replace('"version": "1.0.0"', '"version": "1.0"')
    (context / "Agentfile.json").write_text(text)
    with pytest.raises(InvalidRequest) as exc:
        store.build(context, "team/hello:1.0.0")
    assert exc.value.data["field"] == "metadata.version"
    expected = next(i for i, l in enumerate(text.splitlines(), 1) if '"version"' in l)
    assert exc.value.data["line"] == expected


def test_not_yaml_at_all_names_the_line() -> None:
    with pytest.raises(InvalidRequest) as exc:
        parse_agentfile_text("apiVersion: agentix/v1\nmetadata: [\n  name: x\n")
    assert exc.value.data["line"] is not None and "not valid YAML" in exc.value.message


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet="abc:/-[]{}\n .'\"#0123456789", max_size=200))
def test_any_text_is_a_model_or_an_invalid_request(text: str) -> None:
    try:
        parse_agentfile_text("apiVersion: agentix/v1\n" + text)
    except InvalidRequest as err:
        assert err.data.get("field")
