"""agentix — an operating-system layer for AI agents.

Layers (imports point down only; tests/test_layering.py enforces it)::

    cli/ web/ mcp/        faces: talk to the kernel through sdk/
    agents/               programs that run INSIDE agent processes; use only sdk/
    sdk/                  client library for agent programs and operators
    kernel/               the daemon: composition root, process table, syscall dispatch
    sandbox/ store/ rpc/ llm/ tools/   edges: processes, SQLite, sockets, providers, tools
    core/                 pure, synchronous, deterministic rules; no I/O, clock passed in
"""

__version__ = "0.1.0"
