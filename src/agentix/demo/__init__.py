"""``agentix demo``: the show, not the runtime.

Nothing in the kernel, the SDK or the CLI's other commands imports this package. It holds
the demo's sections (each ``(kernel, console) -> dict`` of figures it measured) and the
agent programs they spawn (``agents/``: data to the demo, located on disk and copied into
sandboxed workspaces, never imported here).

    run.py        run_demo(): a kernel (started if none runs), the sections in order, the account
    team.py       1. a coordinator and three workers, one of which crashes
    isolation.py  2. four misbehaving agents beside a well-behaved one, measured via cgroups
    llm.py        3. ten agents share one model with weighted fair shares

The CLI's ``agentix demo`` command passes in how to start a kernel and probe the host, so
this package sits above the SDK and below nothing: ``cli -> demo -> sdk``, no way back.
"""

from agentix.demo.run import Host, run_demo

__all__ = ["Host", "run_demo"]
