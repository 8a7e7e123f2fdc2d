"""The programs the demo spawns. They run inside sandboxed agent processes and use only the
SDK; to the demo they are files (``PROGRAMS / "team"``), copied into workspaces, never imported."""

from __future__ import annotations

from pathlib import Path

__all__ = ["PROGRAMS"]

PROGRAMS = Path(__file__).resolve().parent
