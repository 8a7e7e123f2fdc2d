"""The in-sandbox bootstrap: the first (trusted) code that runs in every agent process.

``python -m agentix.agents.boot TARGET [ARGS...]`` confines the process (when the sandbox
backend asked for it), then runs TARGET — a program file or package directory in the
workspace, or ``module:agentix.agents.NAME`` for a built-in program — as ``__main__``.
"""

from __future__ import annotations

import os
import runpy
import sys


def main() -> None:
    if len(sys.argv) < 2:
        print("usage: python -m agentix.agents.boot TARGET [ARGS...]", file=sys.stderr)
        sys.exit(2)
    if os.environ.get("AGENTIX_CONFINE"):
        from agentix.sandbox import confine  # type: ignore[attr-defined]

        confine.apply_from_env()
    target, args = sys.argv[1], sys.argv[2:]
    sys.argv = [target, *args]
    if target.startswith("module:"):
        runpy.run_module(target[len("module:"):], run_name="__main__", alter_sys=True)
        return
    sys.path.insert(0, os.getcwd())
    deps = os.path.join(os.getcwd(), "deps", "python")  # a package's Python dependencies (docs/packages.md)
    if os.path.isdir(deps):
        sys.path.insert(1, deps)
    runpy.run_path(target, run_name="__main__")


if __name__ == "__main__":
    main()
