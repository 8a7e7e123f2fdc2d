"""``agentix doctor``: which isolation layers work on this host, and why not.

``report()`` returns one dict per layer, ``{"layer", "ok", "why"}``, in the order the
bwrap backend applies them, followed by the cgroup hierarchy it would use. It probes the
host for real (runs bubblewrap once, asks the kernel for the Landlock ABI, compiles the
seccomp filter, finds the cgroup controllers), so its answer is what a spawn would get.
"""

from __future__ import annotations

from agentix.sandbox import cgroups
from agentix.sandbox.bwrap import ALL_LAYERS, probe

__all__ = ["report"]


def report(bwrap: str = "bwrap", setpriv: str = "setpriv") -> list[dict[str, object]]:
    status = probe(bwrap, setpriv)
    out: list[dict[str, object]] = [status[layer].to_dict() for layer in ALL_LAYERS]
    h = cgroups.detect()
    out.append({**h.describe(), "layer": "cgroup_hierarchy", "ok": not h.missing,
                "why": h.why or f"cgroup v{h.version}"})
    return out


if __name__ == "__main__":
    import json

    for row in report():
        print(json.dumps(row))
