"""Landlock through ctypes: restate the sandbox's filesystem view inside the kernel.

Rule: once ``restrict`` returns, the calling thread (and everything it later starts) can
read and execute only below the read-only paths, read and write only below the writable
paths, and nothing else; with ABI >= 4 TCP bind/connect are refused; with ABI >= 6
signals and abstract Unix sockets are scoped to the Landlock domain (no signal can reach
a process outside the sandbox, not even one sharing the uid).

Paths that do not exist or cannot be reached are skipped (the mount namespace may not
contain them); skipping a rule only ever grants less. The
ruleset handles every access right the running ABI knows, so a right added by a newer
kernel is never silently left open by an old rule set.

x86_64 system call numbers; other architectures raise ``LandlockError``.
"""

# imported before every agent's first system call: keep it to ctypes and os
import ctypes
import os

from agentix.core.errors import LayerError

__all__ = ["LandlockError", "abi_version", "restrict"]

_NR = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}

_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

# filesystem access rights by ABI version
_FS = {
    "execute": 1 << 0,
    "write_file": 1 << 1,
    "read_file": 1 << 2,
    "read_dir": 1 << 3,
    "remove_dir": 1 << 4,
    "remove_file": 1 << 5,
    "make_char": 1 << 6,
    "make_dir": 1 << 7,
    "make_reg": 1 << 8,
    "make_sock": 1 << 9,
    "make_fifo": 1 << 10,
    "make_block": 1 << 11,
    "make_sym": 1 << 12,
    "refer": 1 << 13,       # ABI 2
    "truncate": 1 << 14,    # ABI 3
    "ioctl_dev": 1 << 15,   # ABI 5
}
_ABI1_FS = (1 << 13) - 1
_NET_BIND_TCP = 1 << 0     # ABI 4
_NET_CONNECT_TCP = 1 << 1  # ABI 4
_SCOPE_ABSTRACT_UNIX = 1 << 0  # ABI 6
_SCOPE_SIGNAL = 1 << 1         # ABI 6

_READ = _FS["execute"] | _FS["read_file"] | _FS["read_dir"]
_DEV_RW = _FS["read_file"] | _FS["write_file"] | _FS["ioctl_dev"] | _FS["truncate"]


class LandlockError(LayerError):
    """Landlock could not be applied; the message says which step failed."""

    layer = "landlock"


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _nrs() -> tuple[int, int, int]:
    try:
        return _NR[os.uname().machine]
    except KeyError:
        raise LandlockError(f"Landlock syscall numbers unknown for {os.uname().machine}") from None


def abi_version() -> int:
    """The Landlock ABI the running kernel offers; 0 when Landlock is unavailable."""
    try:
        create, _, _ = _nrs()
    except LandlockError:
        return 0
    v = _libc.syscall(create, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(int(v), 0)


def _handled_fs(abi: int) -> int:
    fs = _ABI1_FS
    if abi >= 2:
        fs |= _FS["refer"]
    if abi >= 3:
        fs |= _FS["truncate"]
    if abi >= 5:
        fs |= _FS["ioctl_dev"]
    return fs


def restrict(
    ro,
    rw,
    dev_rw=(),
    *,
    deny_tcp: bool = True,
    scope: bool = True,
    min_abi: int = 1,
) -> int:
    """Apply the ruleset to the calling thread; return the ABI used.

    ``ro``: read + execute below; ``rw``: everything below; ``dev_rw``: read/write/ioctl of
    existing device files (``/dev/null`` ...). Requires no_new_privs (or CAP_SYS_ADMIN).
    """
    abi = abi_version()
    if abi < max(min_abi, 1):
        raise LandlockError(f"Landlock ABI {abi} available, {max(min_abi, 1)} required")
    create, add_rule, restrict_self = _nrs()
    handled = _handled_fs(abi)
    attr = _RulesetAttr(handled_access_fs=handled)
    size = 8
    if abi >= 4:
        size = 16
        if deny_tcp:
            attr.handled_access_net = _NET_BIND_TCP | _NET_CONNECT_TCP
    if abi >= 6:
        size = 24
        if scope:
            attr.scoped = _SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL
    fd = _libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if fd < 0:
        err = ctypes.get_errno()
        raise LandlockError(f"landlock_create_ruleset: {os.strerror(err)}", errno=err)
    try:
        for paths, access in ((ro, _READ), (rw, handled), (dev_rw, _DEV_RW & handled)):
            for path in paths:
                _add_path(fd, add_rule, path, access)
        rc = _libc.syscall(restrict_self, ctypes.c_int(fd), ctypes.c_uint32(0))
        if rc < 0:
            err = ctypes.get_errno()
            raise LandlockError(f"landlock_restrict_self: {os.strerror(err)}", errno=err)
    finally:
        os.close(fd)
    return abi


def _add_path(ruleset_fd: int, add_rule: int, path: str, access: int) -> None:
    try:
        pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except (FileNotFoundError, PermissionError):
        return  # not reachable from here: skipping a rule only ever grants less
    try:
        if not os.path.isdir(path):
            # rights that only make sense on directories are refused on files
            access &= _FS["execute"] | _FS["write_file"] | _FS["read_file"] | _FS["truncate"] | _FS["ioctl_dev"]
        rule = _PathBeneathAttr(allowed_access=access, parent_fd=pfd)
        rc = _libc.syscall(add_rule, ctypes.c_int(ruleset_fd), ctypes.c_int(_RULE_PATH_BENEATH),
                           ctypes.byref(rule), ctypes.c_uint32(0))
        if rc < 0:
            err = ctypes.get_errno()
            raise LandlockError(f"landlock_add_rule {path}: {os.strerror(err)}", errno=err)
    finally:
        os.close(pfd)
