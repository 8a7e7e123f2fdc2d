"""The agent seccomp filter, compiled by the system libseccomp (PyPI ``pyseccomp``).

Rule: the filter allows by default and refuses a documented list of system calls with
``EPERM`` (not a kill), so an attack is visible to the attacker's own code and in its
output. System calls of a foreign architecture (e.g. ``int 0x80`` on x86_64) kill the
process (libseccomp's bad-arch action).

Refused with EPERM:

- sockets: ``socket``/``socketpair`` of any family but ``AF_UNIX`` (no inet, inet6,
  packet, netlink, vsock, bluetooth ... sockets; with ``network=True`` inet and inet6 stay
  allowed and packet/netlink are still refused)
- debugging other processes: ``ptrace``, ``process_vm_readv``, ``process_vm_writev``,
  ``kcmp``, ``pidfd_getfd``
- mounts and roots: ``mount``, ``umount2``, ``pivot_root``, ``chroot``, ``open_tree``,
  ``move_mount``, ``fsopen``, ``fsconfig``, ``fsmount``, ``fspick``, ``mount_setattr``
- namespaces: ``unshare``, ``setns``, ``clone`` with any ``CLONE_NEW*`` flag;
  ``clone3`` returns ENOSYS (its flags are behind a pointer; libc falls back to ``clone``)
- kernel attack surface: ``bpf``, ``perf_event_open``, ``userfaultfd``,
  ``io_uring_setup``/``_enter``/``_register`` (io_uring bypasses this filter),
  ``keyctl``, ``add_key``, ``request_key``, ``personality``, ``uselib``, ``ustat``,
  ``sysfs``, ``lookup_dcookie``, ``fanotify_init``, ``name_to_handle_at``,
  ``open_by_handle_at``, ``ioctl(TIOCSTI)``, ``ioctl(TIOCLINUX)``
- host administration: ``kexec_load``, ``kexec_file_load``, ``init_module``,
  ``finit_module``, ``delete_module``, ``reboot``, ``swapon``, ``swapoff``, ``acct``,
  ``quotactl``, ``quotactl_fd``, ``syslog``, ``iopl``, ``ioperm``, ``settimeofday``,
  ``clock_settime``, ``clock_adjtime``, ``adjtimex``, ``sethostname``,
  ``setdomainname``, ``vhangup``, ``nfsservctl``, ``pciconfig_*``
"""

from __future__ import annotations

import errno
import os
import tempfile
from functools import lru_cache

from agentix.core.errors import LayerError

__all__ = ["DENY", "SeccompError", "bpf_program", "load"]

DENY: tuple[str, ...] = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "mount", "umount2", "pivot_root", "chroot", "open_tree", "move_mount", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr",
    "unshare", "setns",
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "keyctl", "add_key", "request_key", "personality", "uselib",
    "ustat", "sysfs", "lookup_dcookie", "fanotify_init", "name_to_handle_at",
    "open_by_handle_at",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd", "syslog", "iopl",
    "ioperm", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "sethostname", "setdomainname", "vhangup", "nfsservctl", "pciconfig_read",
    "pciconfig_write", "pciconfig_iobase",
)

_AF_UNIX, _AF_INET, _AF_INET6 = 1, 2, 10
_CLONE_NS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
             0x40000000, 0x00000080)
_TIOCSTI, _TIOCLINUX = 0x5412, 0x541C
_M32 = 0xFFFFFFFF


class SeccompError(LayerError):
    """The filter could not be built or loaded."""

    layer = "seccomp"


def _build(network: bool):  # -> pyseccomp.SyscallFilter
    try:
        import pyseccomp as sc
    except (ImportError, RuntimeError) as err:  # RuntimeError: libseccomp not found
        raise SeccompError(f"pyseccomp/libseccomp unavailable: {err}") from None
    eperm = sc.ERRNO(errno.EPERM)
    f = sc.SyscallFilter(sc.ALLOW)
    for name in DENY:
        try:
            f.add_rule(eperm, name)
        except (OSError, ValueError, RuntimeError):
            continue  # not a system call on this architecture / libseccomp version
    for call in ("socket", "socketpair"):
        if network:
            # refuse every family but unix, inet, inet6 (compare the low 32 bits: int arg)
            f.add_rule(eperm, call, sc.Arg(0, sc.MASKED_EQ, _M32, 0))
            for fam in range(3, 10):
                f.add_rule(eperm, call, sc.Arg(0, sc.MASKED_EQ, _M32, fam))
            f.add_rule(eperm, call, sc.Arg(0, sc.GT, _AF_INET6))
        else:
            f.add_rule(eperm, call, sc.Arg(0, sc.NE, _AF_UNIX))
    for flag in _CLONE_NS:
        f.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    for req in (_TIOCSTI, _TIOCLINUX):
        f.add_rule(eperm, "ioctl", sc.Arg(1, sc.MASKED_EQ, _M32, req))
    return f


@lru_cache(maxsize=4)
def bpf_program(network: bool = False) -> bytes:
    """The compiled BPF program (for ``bwrap --seccomp FD``); cached per process."""
    f = _build(network)
    with tempfile.TemporaryFile() as tmp:
        f.export_bpf(tmp)
        tmp.seek(0)
        data = tmp.read()
    if not data or len(data) % 8:
        raise SeccompError("libseccomp exported an empty or malformed BPF program")
    return data


def load(network: bool = False) -> None:
    """Install the filter on the calling process (needs no_new_privs first)."""
    try:
        _build(network).load()
    except SeccompError:
        raise
    except OSError as err:
        raise SeccompError(f"seccomp load failed: {os.strerror(err.errno or 0)}", errno=err.errno or 0) from None
