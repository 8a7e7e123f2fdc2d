"""`run` build steps: executed inside the agentix sandbox by the kernel (never on the host),
their layer is what they added or changed, reproducible, cached, and confined."""

from __future__ import annotations

import gzip
import io
import json
import secrets
import tarfile
from pathlib import Path
from typing import Any

import pytest

from agentix.core.errors import InvalidRequest
from agentix.core.package import parse_ref
from agentix.packages.service import PackageStore
from agentix.sdk.errors import AgentixError

from .conftest import make_context

GEN = "open('agent/generated.txt', 'w').write('made in the sandbox\\n')"


def with_run(ctx: Path, *argv: str) -> Path:
    af = (ctx / "Agentfile").read_text()
    step = "      - run: [" + ", ".join(json.dumps(a) for a in argv) + "]\n"
    (ctx / "Agentfile").write_text(af.replace("      - copy: data/notes.txt\n", step + "      - copy: data/notes.txt\n"))
    return ctx


def layer_files(home: Path, ref: str, index: int) -> dict[str, bytes]:
    store = PackageStore(home)
    m = json.loads(store.layout.read_blob(store.layout.resolve(parse_ref(ref)).digest))
    raw = store.layout.read_blob(m["layers"][index]["digest"], 1 << 30)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(raw))) as tar:
        return {t.name: (tar.extractfile(t).read() if t.isfile() else b"<dir>") for t in tar.getmembers()}


def test_a_run_step_runs_in_the_sandbox_and_its_layer_is_what_it_made(start_kernel: Any, tmp_path: Path) -> None:
    k = start_kernel()
    ctx = with_run(make_context(tmp_path / "ctx"), "python3", "-c", GEN)
    r = k.client.call("package.build", context=str(ctx), tag="team/hello:1.0.0")
    assert r["cached"] == [False, False, False]
    files = layer_files(k.home, "team/hello:1.0.0", 1)
    assert files == {"agent": b"<dir>", "agent/generated.txt": b"made in the sandbox\n"}
    again = k.client.call("package.build", context=str(ctx), tag="team/hello:1.0.0")
    assert again["digest"] == r["digest"] and again["cached"] == [True, True, True]
    # another kernel, another directory, later: the same digest
    k2 = start_kernel()
    ctx2 = with_run(make_context(tmp_path / "other" / "ctx"), "python3", "-c", GEN)
    assert k2.client.call("package.build", context=str(ctx2), tag="team/hello:1.0.0")["digest"] == r["digest"]


def test_a_run_step_has_no_network(start_kernel: Any, tmp_path: Path) -> None:
    k = start_kernel()
    ctx = with_run(make_context(tmp_path / "ctx"), "python3", "-c",
                   "import socket; socket.create_connection(('1.1.1.1', 53), timeout=3)")
    with pytest.raises(AgentixError) as exc:
        k.client.call("package.build", context=str(ctx), tag="team/hello:1.0.0")
    assert exc.value.data["field"] == "stages.0.steps.1.run" and exc.value.data["exit_code"] != 0
    assert k.client.call("package.list")["packages"] == []


def test_a_run_step_cannot_write_outside_its_build_tree(start_kernel: Any, tmp_path: Path) -> None:
    k = start_kernel()
    target = tmp_path / f"escape-{secrets.token_hex(4)}"
    ctx = with_run(make_context(tmp_path / "ctx"), "python3", "-c", f"open({str(target)!r}, 'w').write('x')")
    with pytest.raises(AgentixError):
        k.client.call("package.build", context=str(ctx), tag="team/hello:1.0.0")
    assert not target.exists()
    assert k.client.call("package.list")["packages"] == []


def test_a_run_step_that_deletes_a_file_is_refused(start_kernel: Any, tmp_path: Path) -> None:
    k = start_kernel()
    ctx = with_run(make_context(tmp_path / "ctx"), "rm", "agent/util.py")
    with pytest.raises(AgentixError, match="deleted agent/util.py"):
        k.client.call("package.build", context=str(ctx), tag="team/hello:1.0.0")
    assert (ctx / "agent" / "util.py").exists()  # the build context is never touched
    assert k.client.call("package.list")["packages"] == []


def test_a_run_step_path_as_program_is_refused(tmp_path: Path) -> None:
    ctx = with_run(make_context(tmp_path / "ctx"), "/bin/sh", "-c", "true")
    with pytest.raises(InvalidRequest) as exc:
        PackageStore(tmp_path / "h").build(ctx, "team/hello:1.0.0")
    assert exc.value.data["field"] == "stages.0.steps.1.run"


def test_without_the_kernel_run_steps_are_refused_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    ctx = with_run(make_context(tmp_path / "ctx"), "touch", str(marker))
    store = PackageStore(tmp_path / "h")
    with pytest.raises(InvalidRequest, match="only inside the agentix sandbox"):
        store.build(ctx, "team/hello:1.0.0")
    assert not marker.exists() and store.list() == []


MULTI = """\
apiVersion: agentix/v1
metadata: {name: multi, version: 1.0.0}
stages:
  - name: builder
    steps:
      - copy: src
      - run: [python3, -c, "open('src/out.txt', 'w').write(open('src/in.txt').read().upper())"]
  - name: final
    steps:
      - copy: agent
      - copy: src/out.txt
        from: builder
        to: agent/out.txt
agent: {program: agent}
"""


def test_multi_stage_ships_only_the_last_stage(start_kernel: Any, tmp_path: Path) -> None:
    k = start_kernel()
    ctx = make_context(tmp_path / "ctx")
    (ctx / "src").mkdir()
    (ctx / "src" / "in.txt").write_text("built in stage one\n")
    (ctx / "Agentfile").write_text(MULTI)
    r = k.client.call("package.build", context=str(ctx), tag="team/multi:1.0.0")
    assert len(r["layers"]) == 2  # the final stage's two copies; the builder's layers are not shipped
    assert layer_files(k.home, "team/multi:1.0.0", 1) == {"agent": b"<dir>", "agent/out.txt": b"BUILT IN STAGE ONE\n"}
    assert "src/in.txt" not in layer_files(k.home, "team/multi:1.0.0", 0)
    again = k.client.call("package.build", context=str(ctx), tag="team/multi:1.0.0")
    assert again["digest"] == r["digest"] and all(again["cached"])


def test_copy_from_a_later_or_unknown_stage_names_the_line(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx")
    (ctx / "Agentfile").write_text(MULTI.replace("from: builder", "from: final"))
    with pytest.raises(InvalidRequest) as exc:
        PackageStore(tmp_path / "h").build(ctx, "team/multi:1.0.0")
    assert exc.value.data["field"] == "stages.1.steps.1.from" and exc.value.data["line"] == 12
