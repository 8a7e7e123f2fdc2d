"""Per-agent cgroups: memory, CPU and pids limits, OOM detection, stats, freeze, removal.
(Over 400 lines: one cgroup-v2/v1 driver: discovery, limits, OOM, stats, freeze and removal act
on the same tree and its invariants.)

Rule: every agent gets its own cgroup *below the cgroup the kernel itself runs in* (read
from ``/proc/self/cgroup``), in a subtree named by the kernel's home
(``agentix-<12 hex of sha256(realpath(AGENTIX_HOME))>``, see ``subtree_name``), so agentix
never needs, or touches, anything above its own place in the tree, and two kernels with
different homes on one host never touch each other's groups:

- cgroup v2 (``0::/path``) is used when the kernel's cgroup can delegate ``memory``,
  ``pids`` and ``cpu`` to children: ``<mount>/<path>/agentix-<h>/<agent_id>``.
- otherwise each v1 controller (memory, cpu, cpuacct, pids, freezer) mounted at
  ``<mount>`` is used: ``<mount>/<own path for that controller>/agentix-<h>/<agent_id>``.

An agent's ``exec`` runs get groups *nested in the agent's own* (``<agent_id>/ex-…``,
``CgroupSet.create_child``), so the agent's memory, pids and cpu limits bound the agent and
all its execs together. ``sweep_stale`` (at kernel start) kills and removes every group left
in the kernel's own subtree by a previous run of the same home.

A process is placed in the group before it can fork (``procs_files`` are written by a
shell wrapper with its own pid, which then ``exec``s the sandbox). OOM kills are counted
by the memory controller (v1 ``memory.oom_control: oom_kill``, v2 ``memory.events``).
``remove`` kills whatever is left in the group, then removes the directories.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from agentix.core.errors import LayerError

__all__ = ["CgroupError", "CgroupSet", "CgroupSpec", "Hierarchy", "detect", "remove_subtree", "subtree_name",
           "sweep_stale"]

log = logging.getLogger(__name__)

V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "freezer")
REQUIRED = ("memory", "cpu", "pids")
CFS_PERIOD_US = 100_000


def subtree_name(home: str | os.PathLike[str]) -> str:
    """The name of the cgroup subtree of the kernel whose home is ``home``."""
    digest = hashlib.sha256(os.path.realpath(home).encode()).hexdigest()
    return f"agentix-{digest[:12]}"


class CgroupError(LayerError):
    """The cgroup layer is not available or an operation on it failed."""

    layer = "cgroups"


@dataclass(frozen=True)
class CgroupSpec:
    memory: int | None = None     # bytes
    cpu: float | None = None      # CPUs
    pids: int | None = None


@dataclass(frozen=True)
class Hierarchy:
    """Where agent cgroups go on this host."""

    version: int                             # 1 or 2
    bases: dict[str, Path]                   # controller -> parent dir (v2: "unified")
    missing: tuple[str, ...] = ()            # required controllers not available
    why: str = ""

    def describe(self) -> dict[str, object]:
        return {"version": self.version, "bases": {k: str(v) for k, v in self.bases.items()},
                "missing": list(self.missing), "why": self.why}


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fstype, super options) of every cgroup mount."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            parts = left.split()
            fstype, _src, sopts = (right.split() + ["", "", ""])[:3]
            if fstype in ("cgroup", "cgroup2"):
                out.append((parts[4], fstype, set(sopts.split(","))))
    return out


def _own_paths() -> dict[str, str]:
    """controller -> path of this process's cgroup; v2 under the key ''."""
    paths: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            for c in ctrls.split(",") if ctrls else [""]:
                paths[c] = path
    return paths


def _v2(name: str) -> Hierarchy | None:
    own = _own_paths().get("")
    for mnt, fstype, _ in _mounts():
        if fstype != "cgroup2" or own is None:
            continue
        base = Path(mnt) / own.lstrip("/")
        try:
            available = set((base / "cgroup.controllers").read_text().split())
        except OSError:
            continue
        missing = tuple(c for c in REQUIRED if c not in available)
        if missing:
            return Hierarchy(2, {}, missing, f"cgroup2 at {mnt} does not delegate {', '.join(missing)} to {own}")
        return Hierarchy(2, {"unified": base / name})
    return None


def _v1(name: str) -> Hierarchy:
    own = _own_paths()
    bases: dict[str, Path] = {}
    for mnt, fstype, sopts in _mounts():
        if fstype != "cgroup":
            continue
        for c in V1_CONTROLLERS:
            if c in sopts and c not in bases and c in own:
                base = Path(mnt) / own[c].lstrip("/")
                if os.access(base, os.W_OK):
                    bases[c] = base / name
    missing = tuple(c for c in REQUIRED if c not in bases)
    why = f"cgroup v1 controllers not mounted or not writable: {', '.join(missing)}" if missing else ""
    return Hierarchy(1, bases, missing, why)


def detect(name: str = "agentix") -> Hierarchy:
    """The hierarchy to use: v2 if it delegates the required controllers, else v1.

    ``name`` is the kernel's own subtree below its cgroup (``subtree_name(home)``).
    """
    v2 = _v2(name)
    if v2 is not None and not v2.missing:
        return v2
    v1 = _v1(name)
    if v1.missing and v2 is not None:
        return Hierarchy(1, v1.bases, v1.missing, f"{v1.why}; {v2.why}")
    return v1


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _kv(text: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        k, _, v = line.partition(" ")
        if v.strip().lstrip("-").isdigit():
            out[k] = int(v)
    return out


@dataclass
class CgroupSet:
    """The cgroup(s) of one agent."""

    hierarchy: Hierarchy
    dirs: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def create(cls, hierarchy: Hierarchy, agent_id: str, spec: CgroupSpec) -> CgroupSet:
        if hierarchy.missing:
            raise CgroupError(hierarchy.why)
        cg = cls(hierarchy)
        try:
            if hierarchy.version == 2:
                parent = hierarchy.bases["unified"]
                parent.mkdir(exist_ok=True)
                _write(parent / "cgroup.subtree_control", "+memory +pids +cpu")
                d = parent / agent_id
                d.mkdir()
                cg.dirs["unified"] = d
            else:
                for ctrl, parent in hierarchy.bases.items():
                    parent.mkdir(exist_ok=True)
                    d = parent / agent_id
                    d.mkdir()
                    cg.dirs[ctrl] = d
            cg.set_limits(spec)
        except OSError as err:
            cg.remove()
            raise CgroupError(f"cannot set up cgroup for {agent_id}: {err}") from None
        return cg

    def create_child(self, name: str, spec: CgroupSpec | None = None) -> CgroupSet:
        """A group nested in this one (an exec run): this group's limits bound both together.

        On v2 the child gets no controllers of its own (the parent keeps processes, so it
        cannot enable them for children); its processes still count against the parent's
        ``memory.max``, ``pids.max`` and ``cpu.max``. On v1 ``spec`` is also written to it.
        """
        child = CgroupSet(self.hierarchy)
        try:
            for ctrl, d in self.dirs.items():
                c = d / name
                c.mkdir()
                child.dirs[ctrl] = c
            if spec is not None and self.hierarchy.version == 1:
                child.set_limits(spec)
        except OSError as err:
            child.remove()
            raise CgroupError(f"cannot set up cgroup {name} inside {self.name}: {err}") from None
        return child

    @property
    def name(self) -> str:
        d = next(iter(self.dirs.values()), None)
        return d.name if d else ""

    def set_limits(self, spec: CgroupSpec) -> None:
        """Write the limits (also used on a pre-made group before the agent runs)."""
        d = self.dirs
        if self.hierarchy.version == 2:
            u = d["unified"]
            if spec.memory is not None:
                _write(u / "memory.max", str(spec.memory))
                if (u / "memory.swap.max").exists():
                    _write(u / "memory.swap.max", "0")
            if spec.pids is not None:
                _write(u / "pids.max", str(spec.pids))
            if spec.cpu is not None:
                _write(u / "cpu.max", f"{max(int(spec.cpu * CFS_PERIOD_US), 1000)} {CFS_PERIOD_US}")
            return
        if spec.memory is not None:
            mem, memsw = d["memory"] / "memory.limit_in_bytes", d["memory"] / "memory.memsw.limit_in_bytes"
            # v1 refuses (EINVAL) a memory limit above the memory+swap limit: when raising a
            # limit already set (a warm worker given a larger agent), raise memsw first
            pair = [mem, memsw] if memsw.exists() else [mem]
            current = _int(_read(memsw)) if memsw.exists() else None
            if current is not None and spec.memory > current:
                pair.reverse()
            for f in pair:
                _write(f, str(spec.memory))
        if spec.pids is not None:
            _write(d["pids"] / "pids.max", str(spec.pids))
        if spec.cpu is not None:
            _write(d["cpu"] / "cpu.cfs_period_us", str(CFS_PERIOD_US))
            _write(d["cpu"] / "cpu.cfs_quota_us", str(max(int(spec.cpu * CFS_PERIOD_US), 1000)))

    def rename(self, name: str) -> None:
        """Rename the group(s) in place (a pre-made group takes the agent's id)."""
        for ctrl, d in list(self.dirs.items()):
            new = d.parent / name
            os.rename(d, new)
            self.dirs[ctrl] = new

    @property
    def procs_files(self) -> list[str]:
        """Files a process writes its own pid into to join every group."""
        return [str(p / "cgroup.procs") for p in self.dirs.values()]

    def oom_kills(self) -> int:
        if self.hierarchy.version == 2:
            return _kv(_read(self.dirs["unified"] / "memory.events")).get("oom_kill", 0)
        return _kv(_read(self.dirs["memory"] / "memory.oom_control")).get("oom_kill", 0)

    def stats(self) -> dict[str, object]:
        out: dict[str, object] = {"cgroup_version": self.hierarchy.version}
        if self.hierarchy.version == 2:
            u = self.dirs["unified"]
            cpu = _kv(_read(u / "cpu.stat"))
            out.update(
                memory_current=_int(_read(u / "memory.current")),
                memory_peak=_int(_read(u / "memory.peak")),
                cpu_usage_ns=cpu.get("usage_usec", 0) * 1000,
                cpu_nr_periods=cpu.get("nr_periods"),
                cpu_nr_throttled=cpu.get("nr_throttled"),
                cpu_throttled_ns=(cpu.get("throttled_usec") or 0) * 1000,
                pids_current=_int(_read(u / "pids.current")),
                oom_kills=self.oom_kills(),
            )
            return out
        d = self.dirs
        cpu = _kv(_read(d["cpu"] / "cpu.stat")) if "cpu" in d else {}
        out.update(
            memory_current=_int(_read(d["memory"] / "memory.usage_in_bytes")),
            memory_peak=_int(_read(d["memory"] / "memory.max_usage_in_bytes")),
            memory_failcnt=_int(_read(d["memory"] / "memory.failcnt")),
            cpu_usage_ns=_int(_read(d["cpuacct"] / "cpuacct.usage")) if "cpuacct" in d else None,
            cpu_nr_periods=cpu.get("nr_periods"),
            cpu_nr_throttled=cpu.get("nr_throttled"),
            cpu_throttled_ns=cpu.get("throttled_time"),
            pids_current=_int(_read(d["pids"] / "pids.current")),
            oom_kills=self.oom_kills(),
        )
        return out

    def pids(self) -> list[int]:
        d = next(iter(self.dirs.values()), None)
        text = _read(d / "cgroup.procs") if d else None
        return [int(x) for x in (text or "").split()]

    def freeze(self, frozen: bool) -> bool:
        if self.hierarchy.version == 2:
            f = self.dirs["unified"] / "cgroup.freeze"
            value = "1" if frozen else "0"
        elif "freezer" in self.dirs:
            f = self.dirs["freezer"] / "freezer.state"
            value = "FROZEN" if frozen else "THAWED"
        else:
            return False
        try:
            _write(f, value)
        except OSError:
            return False
        return True

    def kill_all(self) -> None:
        """SIGKILL every process left in the group and the groups nested in it (thawing first)."""
        if self.hierarchy.version == 2:
            kill = self.dirs["unified"] / "cgroup.kill"
            if kill.exists():
                try:
                    _write(kill, "1")  # the whole subtree
                    return
                except OSError:
                    pass
        self.freeze(False)
        for d in self.dirs.values():
            for sub in _groups_below(d):
                for pid in _int_list(_read(sub / "cgroup.procs")):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass

    def remove(self) -> None:
        """Kill leftovers and remove the directories (rmdir retried while tasks exit)."""
        if not self.dirs:
            return
        self.kill_all()
        deadline = time.monotonic() + 2.0
        for ctrl, top in list(self.dirs.items()):
            for d in _groups_below(top):  # nested groups first (deepest first)
                while True:
                    try:
                        d.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError as err:
                        if time.monotonic() > deadline:
                            log.warning("cannot remove cgroup %s: %s", d, err)
                            break
                        self.kill_all()
                        time.sleep(0.005)
            self.dirs.pop(ctrl, None)


def sweep_stale(hierarchy: Hierarchy) -> int:
    """Kill and remove every group in this kernel's own subtree; return how many went.

    Called once at start, before any agent runs: whatever is there was left by a previous
    run of the kernel of the same home (``kill -9``). Other kernels' subtrees are never
    looked at.
    """
    n = 0
    for base in hierarchy.bases.values():
        if not base.is_dir():
            continue
        for top in sorted(p for p in base.iterdir() if p.is_dir()):
            cg = CgroupSet(hierarchy, {"_": top})
            if hierarchy.version == 2:
                cg.dirs = {"unified": top}
            before = len(_groups_below(top))
            cg.remove()
            if not top.exists():
                n += before
    return n


def remove_subtree(hierarchy: Hierarchy) -> None:
    """Remove the kernel's own subtree directories if they are empty (at a clean shutdown)."""
    for base in hierarchy.bases.values():
        try:
            base.rmdir()  # refused while any group (a live agent's) is inside
        except OSError:
            pass


def _groups_below(d: Path) -> list[Path]:
    """``d`` and every group nested in it, deepest first."""
    out: list[Path] = []
    try:
        subs = [p for p in d.iterdir() if p.is_dir()]
    except OSError:
        subs = []
    for sub in subs:
        out.extend(_groups_below(sub))
    out.append(d)
    return out


def _int_list(text: str | None) -> list[int]:
    return [int(x) for x in (text or "").split() if x.isdigit()]


def _int(text: str | None) -> int | None:
    try:
        return int((text or "").split()[0])
    except (ValueError, IndexError):
        return None
