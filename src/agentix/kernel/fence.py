"""The file tools' fence over the kernel's own state, without listing it on every call.

A ``Fence`` (``agentix.tools.safe_fs``) names, by (st_dev, st_ino), what no file tool may open:
``$AGENTIX_HOME`` (denied, with everything below it), the caller's workspace (allowed), and
the protected files -- every file in ``keys/``, ``agentix.db*`` and ``*.json`` in the home --
wherever they are linked. Finding those files takes two directory listings and a stat per
file; ``HomeFence`` keeps the last answer and lists again only when the home or ``keys/``
changed.

Rules:

- A file is created, removed or renamed in a directory only by changing that directory's
  mtime (and ``ctime``), so the listing is reused while both directories' (dev, inode,
  mtime_ns, ctime_ns) are what they were when it was taken.
- File system timestamps are coarse (a clock tick): a file made in the same tick just after
  the listing would leave them unchanged. A listing is therefore reused only when both
  directories' timestamps were already at least ``SETTLE_S`` old when it was taken (the
  "racily clean" rule git uses for its index); until then every call lists again.
- The home and workspace themselves are stat'ed on every call (one stat each).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from agentix.tools.safe_fs import Fence

__all__ = ["HomeFence", "SETTLE_S"]

#: how old the directories' timestamps must be before a listing of them is reused
SETTLE_S = 2.0

_Stamp = tuple[int, int, int, int]


def _stamp(p: Path) -> _Stamp | None:
    try:
        st = os.stat(p)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)


def _key(p: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(p)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _listdir(p: Path) -> list[str]:
    try:
        return os.listdir(p)
    except OSError:
        return []


class HomeFence:
    """``fence(workspace)``: the fence for a call by the agent whose workspace it is."""

    def __init__(self, home: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.home = home
        self.clock = clock  # wall time: compared with file system timestamps
        self._lock = threading.Lock()
        self._cached: tuple[tuple[_Stamp | None, _Stamp | None], frozenset[tuple[int, int]]] | None = None
        self.listings = 0  # how many times the protected files were listed (tests read it)

    def _files(self, home_st: _Stamp | None) -> frozenset[tuple[int, int]]:
        keys_dir = self.home / "keys"
        stamps = (home_st, _stamp(keys_dir))
        with self._lock:
            cached = self._cached
        if cached is not None and cached[0] == stamps and None not in stamps:
            return cached[1]
        now = self.clock()
        self.listings += 1
        files = [keys_dir / n for n in _listdir(keys_dir)]
        files += [self.home / n for n in _listdir(self.home)
                  if n.startswith("agentix.db") or n.endswith(".json")]
        found = frozenset(k for k in map(_key, files) if k is not None)
        settled = None not in stamps and all(
            now - s[2] / 1e9 >= SETTLE_S and now - s[3] / 1e9 >= SETTLE_S
            for s in stamps if s is not None)
        # a listing is reused only if nothing could have changed in the tick it was taken in,
        # and only if the directories did not change while it was being taken
        if settled and (_stamp(self.home), _stamp(keys_dir)) == stamps:
            with self._lock:
                self._cached = (stamps, found)
        return found

    def fence(self, workspace: Path | None) -> Fence:
        home_st = _stamp(self.home)
        denied = {(home_st[0], home_st[1])} if home_st is not None else set()
        allowed = {k for k in [_key(workspace)] if k is not None} if workspace is not None else set()
        return Fence(frozenset(denied), frozenset(allowed), self._files(home_st))
