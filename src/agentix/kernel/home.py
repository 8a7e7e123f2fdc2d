"""The layout of ``$AGENTIX_HOME`` (default ``~/.agentix``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Home", "default_home"]


def default_home() -> Path:
    env = os.environ.get("AGENTIX_HOME")
    return Path(env).expanduser() if env else Path.home() / ".agentix"


#: the layout: each path of a home, by its name, under the root
LAYOUT = {
    "socket": "agentixd.sock",   # the operator socket
    "pidfile": "agentixd.pid",
    "logfile": "agentixd.log",
    "workspaces": "workspaces",  # one per agent
    "logs": "logs",              # agents' output
    "keys": "keys",              # the root key, signing keys (0700)
    "db": "agentix.db",          # the one store
}


def _under_root() -> Path:
    return field(init=False, repr=False)  # type: ignore[no-any-return]  # set from LAYOUT


@dataclass(frozen=True)
class Home:
    """A home's paths: ``root`` and, for each name in ``LAYOUT``, that path under it."""

    root: Path
    socket: Path = _under_root()
    pidfile: Path = _under_root()
    logfile: Path = _under_root()
    workspaces: Path = _under_root()
    logs: Path = _under_root()
    keys: Path = _under_root()
    db: Path = _under_root()

    def __post_init__(self) -> None:
        for name, rel in LAYOUT.items():
            object.__setattr__(self, name, self.root / rel)

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        for d in (self.workspaces, self.logs):
            d.mkdir(exist_ok=True, mode=0o700)
        self.keys.mkdir(exist_ok=True, mode=0o700)
        os.chmod(self.keys, 0o700)
