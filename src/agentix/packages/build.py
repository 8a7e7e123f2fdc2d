"""Build an Agentfile into a package: reproducible tar+gzip layers, a config blob, a manifest.
(Over 400 lines: one reproducible build: layers, config and manifest must agree byte for byte,
so they are made in one place.)

Reproducible bit for bit: entries sorted by path; mtime 0; uid/gid 0 and empty owner
names; modes fixed (directories 0755, files 0644, or 0755 when the source is executable);
PAX format; gzip with mtime 0, no file name and a fixed compression level. The config blob
and the manifest are canonical JSON built from the *parsed* Agentfile, so the same
Agentfile written as JSON or YAML gives the same digest.

The build context is read by one safe walker: directory fds, ``O_NOFOLLOW``, regular files
and directories only (a symlink, device or FIFO in what a step copies is refused, naming the
path). Each step's layer is cached under a key computed from its inputs (the step itself and
the path, mode and content hash of every file it copies), so an unchanged rebuild re-hashes
the inputs but compresses nothing.

Stages: each stage's steps make its own layers; ``copy: … from: STAGE`` copies from an
earlier stage's result (its layers unpacked into a scratch tree, walked by the same safe
walker); only the last stage's layers are the package.

``run`` steps run inside the agentix sandbox, never on the host: the builder is given a
``Runner`` (the kernel's: the same substrate as agents, the build tree as ``/workspace``,
strict isolation only; no network, or — for a step declaring ``network:`` hosts — only
those hosts, through the kernel's build proxy). Before a run step the stage's layers so far are
unpacked into a scratch tree; the command runs there; the step's layer holds what it added
or changed (deleting a file is refused: layers carry no whiteouts). A run step's cache key
covers its argv, its timeout, its declared hosts and the digests of every layer before it.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
import shutil
import sys
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentix.core.agentfile import Agentfile, CopyStep, RunStep
from agentix.core.canonical import canonical_json
from agentix.core.errors import InvalidRequest, LimitExceeded
from agentix.core.package import MAX_LAYERS, Ref
from agentix.packages.layout import CHUNK, MANIFEST_TYPE, Descriptor, Layout, image_manifest
from agentix.packages.unpack import unpack_layers

__all__ = ["BuildResult", "PackageDep", "Runner", "WalkOptions", "build", "CONFIG_TYPE", "LAYER_TYPE", "ARTIFACT_TYPE"]

#: runs ``argv`` sandboxed with ``workdir`` as /workspace, reaching only ``hosts`` (host patterns;
#: empty: no network at all); returns (exit code or None, output)
Runner = Callable[[list[str], Path, float, tuple[str, ...]], tuple["int | None", str]]
#: downloads the wheels of pinned requirements into a directory (the kernel's host side: wheels
#: only, so no code of a dependency runs outside the sandbox)
WheelFetcher = Callable[[list[str], Path, float], None]
#: how long resolving the Python dependencies (download, then the sandboxed install) may take
DEPENDENCY_TIMEOUT = 600.0


@dataclass(frozen=True)
class Base:
    """A verified base package (the Agentfile's top-level ``from:``)."""

    ref: str
    digest: str
    name: str
    version: str
    layers: tuple[Descriptor, ...]
    manifest: dict[str, Any]   # the base's agent manifest (its agent is the default one)

    def describe(self) -> dict[str, Any]:
        return {"ref": self.ref, "digest": self.digest, "name": self.name, "version": self.version}


#: where a package dependency's files land in the dependent package (reserved, like deps/python)
PACKAGE_DEPS_DIR = "deps/packages"


@dataclass(frozen=True)
class PackageDep:
    """A verified package dependency (``dependencies.packages``): its files go, as one layer,
    under ``deps/packages/NAME`` (NAME: its metadata name); its capabilities are *not* the
    dependent's (a package declares its own ceiling)."""

    ref: str
    digest: str
    name: str                      # the full package name, as signed
    version: str
    local_name: str                # its metadata name: the directory under deps/packages
    layers: tuple[Descriptor, ...]
    requires: tuple[dict[str, Any], ...] = ()   # its own recorded dependencies (nested)

    @property
    def path(self) -> str:
        return f"{PACKAGE_DEPS_DIR}/{self.local_name}"

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"ref": self.ref, "digest": self.digest, "name": self.name,
                             "version": self.version, "path": self.path}
        if self.requires:
            d["packages"] = list(self.requires)
        return d


ARTIFACT_TYPE = "application/vnd.agentix.package.v1"
CONFIG_TYPE = "application/vnd.agentix.package.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
GZIP_LEVEL = 6
MAX_CONTEXT_FILES = 100_000
MAX_DEPTH = 64


@dataclass(frozen=True)
class BuildResult:
    ref: Ref
    digest: str
    size: int
    layers: tuple[str, ...]
    cached: tuple[bool, ...]
    config: dict[str, Any]
    #: the trust decisions on the base and the package dependencies (the kernel audits an
    #: unsigned one accepted by policy, as for `run`)
    verdicts: tuple[Any, ...] = ()


@dataclass(frozen=True)
class _Entry:
    path: str           # inside the package, no leading '/'
    is_dir: bool
    mode: int
    size: int
    sha256: str | None  # files only
    src: tuple[str, ...]  # path parts below the context root (to reopen safely)


def _open_below(root_fd: int, parts: tuple[str, ...]) -> int:
    """Open ``parts`` below ``root_fd`` without following any symlink."""
    fd = os.dup(root_fd)
    try:
        for i, name in enumerate(parts):
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                raise InvalidRequest(f"{'/'.join(parts[:i + 1])}: only regular files and directories can "
                                     "be copied into a package (symlinks, devices and FIFOs are refused)",
                                     field="copy", path="/".join(parts[:i + 1]))
            if i < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
                raise InvalidRequest(f"{'/'.join(parts[:i + 1])} is not a directory", field="copy")
            nfd = os.open(name, flags | (os.O_DIRECTORY if stat.S_ISDIR(st.st_mode) else 0), dir_fd=fd)
            os.close(fd)
            fd = nfd
        return fd
    except FileNotFoundError:
        os.close(fd)
        raise InvalidRequest(f"{'/'.join(parts)}: no such file in the build context", field="copy") from None
    except BaseException:
        os.close(fd)
        raise


def _hash_fd(fd: int) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    while chunk := os.read(fd, CHUNK):
        h.update(chunk)
        n += len(chunk)
    return h.hexdigest(), n


def _walk_step(root_fd: int, step: CopyStep) -> list[_Entry]:
    """Every entry a copy step puts in the package, sorted, with content hashes."""
    src = tuple(p for p in step.source.split("/") if p)
    return _walk(root_fd, src, [p for p in step.destination().split("/") if p], step.source)


@dataclass
class WalkOptions:
    """How ``_walk`` treats what it meets. The build's defaults refuse anything but regular
    files and directories; a snapshot skips them (naming each in ``skipped``), keeps
    bytecode, hashes nothing ahead (the agent is frozen; there is no cache key to compute)
    and bounds the total bytes."""

    special: str = "refuse"             # "refuse" | "skip"
    skipped: list[str] | None = None    # filled with the paths skipped
    hash_files: bool = True
    skip_bytecode: bool = True
    max_bytes: int | None = None
    max_entries: int = MAX_CONTEXT_FILES


def _walk(root_fd: int, src: tuple[str, ...], dparts: list[str], what: str,
          opts: WalkOptions | None = None) -> list[_Entry]:
    opts = opts or WalkOptions()
    out: dict[str, _Entry] = {}
    total = [0]
    for i in range(1, len(dparts)):  # the parent directories of the destination
        p = "/".join(dparts[:i])
        out[p] = _Entry(p, True, 0o755, 0, None, ())

    def visit(fd: int, parts: tuple[str, ...], where: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise InvalidRequest(f"{'/'.join(parts)}: directories nested deeper than {MAX_DEPTH}", field="copy")
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            if where:
                out[where] = _Entry(where, True, 0o755, 0, None, parts)
            names = sorted(os.listdir(fd))
            for name in names:
                if opts.skip_bytecode and (name in ("__pycache__",) or name.endswith(".pyc")):
                    continue
                if opts.special == "skip":
                    try:  # look before opening: a FIFO or device is never opened
                        cst = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if not (stat.S_ISDIR(cst.st_mode) or stat.S_ISREG(cst.st_mode)):
                        if opts.skipped is not None:
                            opts.skipped.append(f"{where}/{name}" if where else name)
                        continue
                cfd = _open_below(fd, (name,))
                try:
                    visit(cfd, (*parts, name), f"{where}/{name}" if where else name, depth + 1)
                finally:
                    os.close(cfd)
                if len(out) > opts.max_entries:
                    raise LimitExceeded(f"at most {opts.max_entries} entries can be packed", limit="entries",
                                        max_entries=opts.max_entries)
        elif stat.S_ISREG(st.st_mode):
            if not where:
                raise InvalidRequest(f"copy {what!r}: give a destination file name with `to:`",
                                     field="to")
            if opts.hash_files:
                digest, size = _hash_fd(fd)
            else:
                digest, size = None, st.st_size
            total[0] += size
            if opts.max_bytes is not None and total[0] > opts.max_bytes:
                raise LimitExceeded(f"more than {opts.max_bytes} bytes to pack ({where})", limit="bytes",
                                    max_bytes=opts.max_bytes)
            mode = 0o755 if st.st_mode & 0o111 else 0o644
            out[where] = _Entry(where, False, mode, size, digest, parts)

    fd = _open_below(root_fd, src) if src else os.dup(root_fd)
    try:
        visit(fd, src, "/".join(dparts), 0)
    finally:
        os.close(fd)
    return [out[k] for k in sorted(out)]


def _tar_info(e: _Entry) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(e.path + ("/" if e.is_dir else ""))
    ti.type = tarfile.DIRTYPE if e.is_dir else tarfile.REGTYPE
    ti.mode = e.mode
    ti.size = 0 if e.is_dir else e.size
    ti.mtime = 0
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


def _write_layer(root_fd: int, entries: list[_Entry], out: io.BufferedWriter,
                 compresslevel: int = GZIP_LEVEL) -> tuple[str, int]:
    """Write the gzip'd tar of ``entries`` to ``out``; return (digest, compressed size)."""

    class _Hashing(io.RawIOBase):
        def __init__(self) -> None:
            self.h = hashlib.sha256()
            self.n = 0

        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            mv = memoryview(b)
            self.h.update(mv)
            out.write(mv)
            self.n += len(mv)
            return len(mv)

    sink = _Hashing()
    with gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=0, compresslevel=compresslevel) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT, copybufsize=CHUNK) as tar:
            for e in entries:
                ti = _tar_info(e)
                if e.is_dir:
                    tar.addfile(ti)
                    continue
                fd = _open_below(root_fd, e.src)
                with os.fdopen(fd, "rb") as f:
                    if e.sha256 is None:  # nothing to compare with (a frozen agent's snapshot)
                        tar.addfile(ti, f)
                        continue
                    h = hashlib.sha256()

                    class _Check(io.RawIOBase):
                        def readable(self) -> bool:
                            return True

                        def readinto(self, b: Any) -> int:
                            n = f.readinto(b)
                            h.update(memoryview(b)[:n])
                            return n

                    tar.addfile(ti, io.BufferedReader(_Check(), CHUNK))
                    if e.sha256 is not None and h.hexdigest() != e.sha256:
                        raise InvalidRequest(f"{e.path} changed while the package was being built; "
                                             "build again", field="copy")
    return "sha256:" + sink.h.hexdigest(), sink.n


def _cache_key(step: CopyStep, entries: list[_Entry]) -> str:
    doc = {"v": 1, "gzip": GZIP_LEVEL, "step": step.describe(),
           "entries": [[e.path, e.is_dir, e.mode, e.size, e.sha256] for e in entries]}
    return hashlib.sha256(canonical_json(doc)).hexdigest()


def _check_layer_count(agentfile: Agentfile, base_layers: int, dep_layers: int) -> None:
    """Refuse, before anything is built, an Agentfile whose stages would make more than
    ``MAX_LAYERS`` layers (a stage's: its start's — the base package's and the dependency
    layers, or its ``from:`` stage's — plus one per step)."""
    counts: dict[str, int] = {}
    for si, stage in enumerate(agentfile.stages):
        start = counts[stage.from_stage] if stage.from_stage is not None else base_layers + dep_layers
        counts[stage.name] = start + len(stage.steps)
        if counts[stage.name] > MAX_LAYERS:
            raise InvalidRequest(
                f"stages.{si} ({stage.name}) would make {counts[stage.name]} layers ({start} it starts "
                f"from, one per step); a package has at most {MAX_LAYERS}: merge copy steps, or run "
                "several commands in one run step", field=f"stages.{si}.steps")


def build(context: Path, agentfile: Agentfile, ref: Ref, layout: Layout,
          runner: Runner | None = None, base: Base | None = None,
          fetch_wheels: WheelFetcher | None = None, packages: tuple[PackageDep, ...] = ()) -> BuildResult:
    """Build the package; store its blobs in ``layout``; tag ``ref`` last.

    Layers, in order: the base package's (``from:``), one layer of Python dependencies
    (``dependencies.python``: wheels fetched by ``fetch_wheels`` on the host side, installed
    by pip *inside the sandbox* under ``deps/python``), one layer per package dependency
    (``dependencies.packages``, verified by the caller: its files under
    ``deps/packages/NAME``), then each stage's steps. A stage with ``from: STAGE`` starts
    from that stage's layers instead of base + dependencies."""
    if ref.tag is None:
        raise InvalidRequest("build needs -t NAME:TAG (a digest is what a build produces)", field="tag")
    if (base is None) != (agentfile.base is None):
        raise InvalidRequest("the Agentfile's `from:` base package must be resolved before building",
                             field="from")
    python_deps = list(agentfile.dependencies.python)
    if sorted(p.ref for p in packages) != list(agentfile.dependencies.packages):
        raise InvalidRequest("the Agentfile's dependencies.packages must be resolved before building",
                             field="dependencies.packages")
    if python_deps and (runner is None or fetch_wheels is None):
        raise InvalidRequest("dependencies.python: Python dependencies are installed inside the agentix "
                             "sandbox: build through the kernel (`agentix build`)", field="dependencies.python")
    for si, stage in enumerate(agentfile.stages):
        for i, step in enumerate(stage.steps):
            if isinstance(step, RunStep) and runner is None:
                raise InvalidRequest(
                    f"stages.{si}.steps.{i}.run: `run` build steps run only inside the agentix sandbox: "
                    "build through the kernel (`agentix build`); they never run on the host",
                    field=f"stages.{si}.steps.{i}.run")
    _check_layer_count(agentfile, len(base.layers) if base is not None else 0,
                       (1 if python_deps else 0) + len(packages))
    layout.init()
    cache_dir = layout.root / "cache"
    cache_dir.mkdir(exist_ok=True, mode=0o700)
    try:
        root_fd = os.open(context, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise InvalidRequest(f"build context {context}: {err.strerror}", field="context") from None
    cached: list[bool] = []
    steps_doc: list[dict[str, Any]] = []
    start: list[Descriptor] = list(base.layers) if base is not None else []
    if python_deps:
        assert runner is not None and fetch_wheels is not None
        deps, was_cached = _python_layer(python_deps, start, layout, cache_dir, runner, fetch_wheels)
        start.append(deps)
        cached.append(was_cached)
        steps_doc.append({"dependencies": {"python": python_deps}, "layer": deps.digest})
    for dep in packages:
        layer, was_cached = _package_layer(dep, layout, cache_dir)
        start.append(layer)
        cached.append(was_cached)
        steps_doc.append({"dependencies": {"package": dep.ref, "digest": dep.digest, "path": dep.path},
                          "layer": layer.digest})
    layers: list[Descriptor] = list(start)
    stage_layers: dict[str, list[Descriptor]] = {}
    trees: dict[str, tuple[Path, int]] = {}  # earlier stages unpacked for `copy: … from:`
    try:
        for si, stage in enumerate(agentfile.stages):
            layers = list(stage_layers[stage.from_stage] if stage.from_stage is not None else start)
            for i, step in enumerate(stage.steps):
                if isinstance(step, RunStep):
                    assert runner is not None
                    hit, was_cached = _run_step(step, f"stages.{si}.steps.{i}.run", layers, layout,
                                                cache_dir, runner)
                    cached.append(was_cached)
                    layers.append(hit)
                    steps_doc.append({"stage": stage.name, **step.describe(), "layer": hit.digest})
                    continue
                src_fd = root_fd
                if step.from_stage is not None:
                    if step.from_stage not in trees:
                        tree = layout.temp_path("stage")
                        with contextlib.ExitStack() as stack:
                            files = [stack.enter_context(layout.open_verified(d.digest))
                                     for d in stage_layers[step.from_stage]]
                            unpack_layers(files, tree)
                        trees[step.from_stage] = (tree, os.open(tree, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
                    src_fd = trees[step.from_stage][1]
                entries = _walk_step(src_fd, step)
                key = _cache_key(step, entries)
                hit = _cache_get(cache_dir / key, layout)
                if hit is None:
                    hit = _store_layer(layout, src_fd, entries)
                    layout._write_atomic(cache_dir / key, canonical_json(hit.to_data()))
                    cached.append(False)
                else:
                    cached.append(True)
                layers.append(hit)
                steps_doc.append({"stage": stage.name, **step.describe(), "layer": hit.digest})
            stage_layers[stage.name] = layers
    finally:
        os.close(root_fd)
        for tree, fd in trees.values():
            os.close(fd)
            shutil.rmtree(tree, ignore_errors=True)
    config = {
        "apiVersion": agentfile.apiVersion,
        "metadata": agentfile.metadata.model_dump(mode="json", exclude_none=True),
        "manifest": agentfile.manifest_data(base.manifest if base is not None else None),
        "capabilities": list(agentfile.capabilities),
        "config": agentfile.config,
        "steps": steps_doc,
    }
    if base is not None:   # absent keys keep the digests of packages without them unchanged
        config["from"] = base.describe()
    if python_deps or packages:
        config["dependencies"] = {}
        if python_deps:
            config["dependencies"]["python"] = python_deps
        if packages:  # pinned by digest: the same refs resolving elsewhere give another package
            config["dependencies"]["packages"] = [p.describe() for p in packages]
    mdesc = layout.put_json(MANIFEST_TYPE, image_manifest(
        ARTIFACT_TYPE, layout.put_json(CONFIG_TYPE, config), layers,
        annotations={"org.opencontainers.image.title": agentfile.metadata.name,
                     "org.opencontainers.image.version": agentfile.metadata.version}))
    layout.tag(ref, mdesc)
    return BuildResult(ref, mdesc.digest, mdesc.size, tuple(d.digest for d in layers), tuple(cached), config)


def _run_step(step: RunStep, field: str, before: list[Descriptor], layout: Layout, cache_dir: Path,
              runner: Runner) -> tuple[Descriptor, bool]:
    """Run one build command in the sandbox over the layers so far; its layer is what changed."""
    key = hashlib.sha256(canonical_json({"v": 1, "gzip": GZIP_LEVEL, "step": step.describe(),
                                         "parents": [d.digest for d in before]})).hexdigest()
    hit = _cache_get(cache_dir / key, layout)
    if hit is not None:
        return hit, True
    desc = _command_layer(list(step.run), step.timeout, field, before, layout, runner, hosts=tuple(step.network))
    layout._write_atomic(cache_dir / key, canonical_json(desc.to_data()))
    return desc, False


def _package_layer(dep: PackageDep, layout: Layout, cache_dir: Path) -> tuple[Descriptor, bool]:
    """One reproducible layer of a package dependency's files under ``deps/packages/NAME``:
    its layers (verified blobs) unpacked by the package unpacker into a scratch tree, then
    packed again below the new path by the builder's walker."""
    key = hashlib.sha256(canonical_json({"v": 1, "gzip": GZIP_LEVEL, "package": dep.digest,
                                         "path": dep.path})).hexdigest()
    hit = _cache_get(cache_dir / key, layout)
    if hit is not None:
        return hit, True
    tree = layout.temp_path("dep")
    tmp = layout.temp_path("layer")
    try:
        with contextlib.ExitStack() as stack:
            files = [stack.enter_context(layout.open_verified(d.digest)) for d in dep.layers]
            unpack_layers(files, tree)
        fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            entries = _walk(fd, (), dep.path.split("/"), f"dependency {dep.ref}", WalkOptions(skip_bytecode=False))
            with open(tmp, "wb") as f:
                digest, size = _write_layer(fd, entries, f)  # type: ignore[arg-type]
        finally:
            os.close(fd)
        layout.commit_file(tmp, digest)
    finally:
        tmp.unlink(missing_ok=True)
        shutil.rmtree(tree, ignore_errors=True)
    desc = Descriptor(LAYER_TYPE, digest, size)
    layout._write_atomic(cache_dir / key, canonical_json(desc.to_data()))
    return desc, False


def _python_layer(reqs: list[str], before: list[Descriptor], layout: Layout, cache_dir: Path,
                  runner: Runner, fetch: WheelFetcher) -> tuple[Descriptor, bool]:
    """One layer of the pinned Python dependencies under ``deps/python``: the wheels are
    downloaded on the host side (wheels only: nothing of theirs runs there), then pip installs
    them inside the sandbox with no index and no network."""
    key = hashlib.sha256(canonical_json({
        "v": 1, "gzip": GZIP_LEVEL, "python": reqs, "parents": [d.digest for d in before],
        "interpreter": [sys.implementation.cache_tag, sysconfig.get_platform()]})).hexdigest()
    hit = _cache_get(cache_dir / key, layout)
    if hit is not None:
        return hit, True
    field = "dependencies.python"

    def fetch_into(scratch: Path) -> None:
        wheels = scratch / ".wheels"
        wheels.mkdir()
        fetch(reqs, wheels, DEPENDENCY_TIMEOUT)
        got = sorted(os.listdir(wheels))
        if len(got) != len(reqs) or not all(n.endswith(".whl") for n in got):
            raise InvalidRequest(f"{field}: expected one wheel per requirement, got {got[:10]}", field=field)

    argv = [sys.executable, "-m", "pip", "install", "--isolated", "--no-index", "--no-deps", "--no-cache-dir",
            "--no-compile", "--disable-pip-version-check", "--no-warn-script-location", "--find-links",
            ".wheels", "--target", "deps/python", *reqs]
    desc = _command_layer(argv, DEPENDENCY_TIMEOUT, field, before, layout, runner, prepare=fetch_into,
                          keep=lambda path: path == "deps" or path.startswith("deps/"))
    layout._write_atomic(cache_dir / key, canonical_json(desc.to_data()))
    return desc, False


def _command_layer(argv: list[str], timeout: float, field: str, before: list[Descriptor], layout: Layout,
                   runner: Runner, prepare: Callable[[Path], None] | None = None,
                   keep: Callable[[str], bool] | None = None, hosts: tuple[str, ...] = ()) -> Descriptor:
    """Run ``argv`` in the sandbox over the layers ``before`` (unpacked into a scratch tree,
    which ``prepare`` may add inputs to); the layer is what the command added or changed
    (only the paths ``keep`` accepts, when given)."""
    scratch = layout.temp_path("build")
    try:
        with contextlib.ExitStack() as stack:
            files = [stack.enter_context(layout.open_verified(d.digest)) for d in before]
            unpack_layers(files, scratch)
        if prepare is not None:
            prepare(scratch)
        old = {e.path: e for e in _tree(scratch)}
        code, output = runner(argv, scratch, timeout, hosts)
        if code != 0:
            raise InvalidRequest(f"{field}: {Path(argv[0]).name} exited with {code}: {output[-2000:]}",
                                 field=field, exit_code=code)
        new = _tree(scratch)
        gone = sorted(set(old) - {e.path for e in new})
        if gone:
            raise InvalidRequest(f"{field}: the command deleted {gone[0]}; run steps may add and change "
                                 "files, not delete them", field=field, deleted=gone[:20])
        changed = [e for e in new if e.path not in old or (old[e.path].sha256, old[e.path].mode, old[e.path].is_dir)
                   != (e.sha256, e.mode, e.is_dir)]
        if keep is not None:
            changed = [e for e in changed if keep(e.path)]
        # the parent directories of what changed, so the layer unpacks on its own
        dirs = {"/".join(e.path.split("/")[:n]) for e in changed for n in range(1, e.path.count("/") + 1)}
        entries = sorted([e for e in new if e.path in dirs and e.is_dir and e not in changed] + changed,
                         key=lambda e: e.path)
        fd = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            desc = _store_layer(layout, fd, entries)
        finally:
            os.close(fd)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return desc


def _tree(root: Path) -> list[_Entry]:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return _walk(fd, (), [], "the build tree")
    finally:
        os.close(fd)


def _cache_get(path: Path, layout: Layout) -> Descriptor | None:
    try:
        d = Descriptor.from_data(json.loads(path.read_bytes()))
    except (OSError, ValueError, Exception):
        return None
    return d if layout.has_blob(d.digest) else None


def iter_entries(context: Path, step: CopyStep) -> Iterator[str]:  # for tests and `inspect`
    fd = os.open(context, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for e in _walk_step(fd, step):
            yield e.path
    finally:
        os.close(fd)


def _store_layer(layout: Layout, root_fd: int, entries: list[_Entry], compresslevel: int = GZIP_LEVEL) -> Descriptor:
    """Write the layer of ``entries`` (below ``root_fd``) into the store. It is hashed as it is
    written, by us, into the store's private tmp/ and fsynced: committed with no second read."""
    tmp = layout.temp_path("layer")
    try:
        with open(tmp, "wb", buffering=CHUNK) as f:
            digest, size = _write_layer(root_fd, entries, f, compresslevel)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        layout.commit_file(tmp, digest, hashed=True)
    finally:
        tmp.unlink(missing_ok=True)
    return Descriptor(LAYER_TYPE, digest, size)
