"""Confinement verified from outside: what the host can read about an agent process.

The confine step inside the sandbox reports which layers it applied, but that report comes
from the agent's own process, so the kernel checks every layer it can from the host before
it marks the agent running, and a mismatch is ``isolation_failed`` (the agent is killed).

What is read, and from where (all host-side files; nothing the agent writes)::

    layer         read                                  expected
    namespaces    /proc/<pid>/ns/{pid,mnt,uts,ipc,net}  differ from the kernel's own
                                                        (net only without a network grant)
    filesystem    /proc/<pid>/ns/mnt                    differs (the mount view itself is not
                                                        inspected)
    privileges    /proc/<pid>/status Uid, Gid, Groups,  the sandbox uid/gid in all four slots,
                  CapInh/CapPrm/CapEff/CapBnd/CapAmb    no groups, every capability set empty
    no_new_privs  /proc/<pid>/status NoNewPrivs         1
    seccomp       /proc/<pid>/status Seccomp            2 (a filter is loaded)
    rlimits       /proc/<pid>/limits                    hard limit of core, open files and
                                                        file size at most what the policy set
    cgroups       <cgroup dir>/cgroup.procs and         the pid is in every agent cgroup
                  /proc/<pid>/cgroup

Landlock cannot be read from outside (no procfs or syscall interface reports another
process's Landlock domain). It is trusted because no agent-controlled code runs before the
confine step applies it: the interpreter starts isolated (``python -I``: no PYTHONPATH,
no user site, no script directory on ``sys.path``) with a fixed environment, and the
manifest's environment is applied only after confinement.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["NAMESPACES", "check"]

NAMESPACES = ("pid", "mnt", "uts", "ipc", "net")
_LIMIT_ROWS = {"core": "Max core file size", "nofile": "Max open files", "fsize": "Max file size",
               "as": "Max address space"}


class Gone(Exception):
    """The process exited before it could be checked."""


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError):
        raise Gone(path) from None


def _status(pid: int) -> dict[str, str]:
    out = {}
    for line in _read(f"/proc/{pid}/status").splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def _hard_limits(pid: int) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    rows = {v: k for k, v in _LIMIT_ROWS.items()}
    for line in _read(f"/proc/{pid}/limits").splitlines()[1:]:
        for row, name in rows.items():
            if line.startswith(row):
                fields = line[len(row):].split()
                hard = fields[1] if len(fields) > 1 else ""
                out[name] = None if hard == "unlimited" else int(hard) if hard.isdigit() else -1
    return out


def check(pid: int, *, layers: Iterable[str], uid: int | None = None, gid: int | None = None,
          rlimits: dict[str, int] | None = None, cgroup_dirs: Iterable[Path] = (),
          network: bool = False) -> list[dict[str, str]]:
    """Mismatches between what ``layers`` claim and what the host sees of ``pid``.

    Returns ``[{"layer", "why"}, ...]`` (empty when every checkable claim holds). A process
    that has already exited has nothing left to check: ``[]``.
    """
    layers = set(layers)
    bad: list[dict[str, str]] = []

    def fail(layer: str, why: str) -> None:
        bad.append({"layer": layer, "why": why})

    try:
        st = _status(pid)
        if {"namespaces", "filesystem"} & layers:
            wanted = list(NAMESPACES) if "namespaces" in layers else ["mnt"]
            for ns in wanted:
                if ns == "net" and network:
                    continue
                try:
                    theirs = os.readlink(f"/proc/{pid}/ns/{ns}")
                except FileNotFoundError:
                    raise Gone(pid) from None
                if theirs == os.readlink(f"/proc/self/ns/{ns}"):
                    fail("namespaces" if ns != "mnt" or "namespaces" in layers else "filesystem",
                         f"the agent shares the kernel's {ns} namespace ({theirs})")
        if "privileges" in layers:
            for key, want in (("Uid", uid), ("Gid", gid)):
                ids = st.get(key, "").split()
                if want is not None and (len(ids) != 4 or any(int(x) != want for x in ids)):
                    fail("privileges", f"{key} is {st.get(key)!r}, expected {want} in every slot")
                elif want is None and "0" in ids:
                    fail("privileges", f"{key} is {st.get(key)!r}: runs as root")
            if st.get("Groups", ""):
                fail("privileges", f"supplementary groups {st['Groups']!r}, expected none")
            for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
                if int(st.get(cap, "0") or "0", 16):
                    fail("privileges", f"{cap} is {st[cap]}, expected 0")
        if "no_new_privs" in layers and st.get("NoNewPrivs") != "1":
            fail("no_new_privs", f"NoNewPrivs is {st.get('NoNewPrivs')!r}, expected 1")
        if "seccomp" in layers and st.get("Seccomp") != "2":
            fail("seccomp", f"Seccomp is {st.get('Seccomp')!r}, expected 2 (a filter loaded)")
        if "rlimits" in layers:
            hard = _hard_limits(pid)
            for name, want in {"core": 0, **(rlimits or {})}.items():
                got = hard.get(name, -1)
                if got is None or got < 0 or got > want:
                    shown = "unlimited" if got is None else got
                    fail("rlimits", f"hard {name} limit is {shown}, expected at most {want}")
        if "cgroups" in layers:
            dirs = list(cgroup_dirs)
            own = _read(f"/proc/{pid}/cgroup")
            for d in dirs:
                try:
                    members = {int(x) for x in (d / "cgroup.procs").read_text().split()}
                except OSError as err:
                    fail("cgroups", f"cannot read {d}/cgroup.procs: {err.strerror}")
                    continue
                if pid not in members:
                    fail("cgroups", f"pid {pid} is not in {d}")
                elif not any(line.endswith("/" + d.name) for line in own.splitlines()):
                    fail("cgroups", f"/proc/{pid}/cgroup does not name {d.name}: {own!r}")
            if not dirs:
                fail("cgroups", "the agent has no cgroup")
        if bad and _ended(pid):
            return []  # it exited meanwhile (an exiting task leaves its cgroups first)
    except Gone:
        return []
    return bad


_PF_EXITING = 0x4


def _ended(pid: int) -> bool:
    """Dead, a zombie, or exiting (an exiting task is moved to the root cgroups first)."""
    try:
        fields = _read(f"/proc/{pid}/stat").rsplit(")", 1)[1].split()
    except (Gone, IndexError):
        return True
    return fields[0] in ("Z", "X") or bool(int(fields[6]) & _PF_EXITING)
