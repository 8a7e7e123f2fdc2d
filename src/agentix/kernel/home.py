"""The layout of ``$AGENTIX_HOME`` (default ``~/.agentix``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Home", "default_home"]


def default_home() -> Path:
    env = os.environ.get("AGENTIX_HOME")
    return Path(env).expanduser() if env else Path.home() / ".agentix"


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def socket(self) -> Path:
        return self.root / "agentixd.sock"

    @property
    def pidfile(self) -> Path:
        return self.root / "agentixd.pid"

    @property
    def logfile(self) -> Path:
        return self.root / "agentixd.log"

    @property
    def workspaces(self) -> Path:
        return self.root / "workspaces"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def db(self) -> Path:
        return self.root / "agentix.db"

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        for d in (self.workspaces, self.logs):
            d.mkdir(exist_ok=True, mode=0o700)
        self.keys.mkdir(exist_ok=True, mode=0o700)
        os.chmod(self.keys, 0o700)
