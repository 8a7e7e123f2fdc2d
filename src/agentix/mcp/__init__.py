"""agentix as an MCP server: the operator's work as MCP tools (``agentix mcp``, docs/mcp.md).

A face like the CLI: a separate process that reaches the kernel only through the operator
SDK, on a connection bound to its own identity (``session.bind``: audit records say
``by: mcp``). Needs the optional ``mcp`` extra (``pip install 'agentix[mcp]'``).
"""

__all__: list[str] = []
