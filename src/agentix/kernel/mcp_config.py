"""MCP servers as agent tools, part 1: the operator's declarations (``[mcp.servers.NAME]``).

The operator declares servers in ``$AGENTIX_HOME/config.toml``::

    [mcp.servers.notes]                       # a local stdio server (the name: a-z, 0-9, -)
    command = ["/usr/bin/python3", "/opt/notes/server.py"]
    read_only_paths = ["/opt/notes"]          # bound read-only into its sandbox
    env = { NOTES_DIR = "/workspace" }        # set inside the sandbox, after confinement
    network = false                           # true: the server's sandbox keeps the host network
    limits = { memory = "256M", pids = 32 }   # the agent limits' syntax; the kernel's defaults fill in
    approve = "first_use"                     # or "operator": every tool waits for `agentix mcp approve`
    call_timeout = 30                         # seconds one tool call may take
    max_message_bytes = 1048576               # the largest message the server may send
    max_notifications_per_s = 100             # more is a flood: the server is stopped
    max_concurrent = 8                        # calls in flight at once
    max_restarts = 5                          # crashes in a row before the server is left failed
    read_only_tools = ["search*"]             # the operator's word that these only read: their
                                              # audit records are committed asynchronously (no_effect)

    [mcp.servers.search]                      # a remote server (streamable HTTP), called by the kernel
    url = "https://mcp.example.com/mcp"

A declaration is validated once, when the kernel starts: a bad one stops the kernel naming the
key (``load_mcp_config``). The rest of the MCP machinery is mapped in ``kernel/mcp_tools.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentix.core.errors import InvalidRequest
from agentix.core.toml_text import parse_toml
from agentix.core.grants import MCP_SERVER_RE
from agentix.core.manifest import Limits

__all__ = ["McpServerConfig", "load_mcp_config"]


class McpServerConfig(BaseModel):
    """One ``[mcp.servers.NAME]`` table (validated when the kernel starts)."""

    model_config = ConfigDict(extra="forbid")

    command: list[str] | None = Field(default=None, min_length=1)
    url: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    read_only_paths: list[str] = Field(default_factory=list)
    network: bool = False
    limits: Limits = Field(default_factory=Limits)
    approve: Literal["first_use", "operator"] = "first_use"
    call_timeout: float = Field(default=30.0, gt=0, le=3600)
    start_timeout: float = Field(default=20.0, gt=0, le=600)
    max_message_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024**2)
    max_notifications_per_s: int = Field(default=100, ge=1, le=100_000)
    max_concurrent: int = Field(default=8, ge=1, le=1024)
    max_restarts: int = Field(default=5, ge=0, le=1000)
    #: tools the operator knows only read (names, a trailing ``*`` allowed): their audit records
    #: are committed asynchronously (``no_effect``); every other tool is an ``effect``, whose
    #: intent record is durable before the server gets the call (docs/audit.md)
    read_only_tools: list[str] = Field(default_factory=list)

    def durability(self, tool: str) -> Literal["effect", "no_effect"]:
        for p in self.read_only_tools:
            if tool == p or (p.endswith("*") and tool.startswith(p[:-1])):
                return "no_effect"
        return "effect"

    def model_post_init(self, _ctx: Any) -> None:
        if (self.command is None) == (self.url is None):
            raise ValueError("give exactly one of command (a local stdio server) or url (a remote one)")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError("url must be http:// or https://")
        for p in self.read_only_paths:
            if not os.path.isabs(p):
                raise ValueError(f"read_only_paths: {p!r} is not an absolute path")

    @property
    def kind(self) -> str:
        return "stdio" if self.command is not None else "http"


def load_mcp_config(home: Path) -> dict[str, McpServerConfig]:
    """The ``[mcp.servers.*]`` tables of config.toml; a bad one stops the kernel at start."""
    path = home / "config.toml"
    if not path.exists():
        return {}
    data = parse_toml(path.read_bytes(), str(path), "config.toml").get("mcp", {})
    servers = data.get("servers", {}) if isinstance(data, dict) else None
    if not isinstance(servers, dict) or set(data) - {"servers"}:
        raise InvalidRequest(f"{path}: [mcp] holds only [mcp.servers.NAME] tables", field="mcp")
    out: dict[str, McpServerConfig] = {}
    for name, raw in servers.items():
        if not MCP_SERVER_RE.match(name):
            raise InvalidRequest(f"{path}: [mcp.servers.{name}]: a server name is 1-63 lowercase letters, "
                                 "digits and '-' (it becomes part of tool names)", field=f"mcp.servers.{name}")
        if not isinstance(raw, dict):
            raise InvalidRequest(f"{path}: [mcp.servers.{name}] must be a table", field=f"mcp.servers.{name}")
        try:
            out[name] = McpServerConfig(**raw)
        except ValidationError as err:
            e = err.errors()[0]
            key = ".".join(str(x) for x in e["loc"])
            where = f"mcp.servers.{name}" + (f".{key}" if key else "")
            raise InvalidRequest(f"{path}: [{where}] {e['msg']}", field=where) from None
    return out

