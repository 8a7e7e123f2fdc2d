"""Kernel configuration: ``$AGENTIX_HOME/config.toml`` section ``[kernel]``, validated at start.

Bad configuration stops the kernel at start with a message naming the key and saying why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentix.core.errors import InvalidRequest
from agentix.core.toml_text import parse_toml
from agentix.core.manifest import Limits
from agentix.rpc.framing import DEFAULT_FRAME_LIMIT

__all__ = ["KernelConfig", "load_config"]

# the defaults; a manifest overrides any of them, config.toml [kernel.limits] too
DEFAULT_LIMITS = Limits(memory="256M", cpu=0.5, pids=64, wall_clock="10m", nofile=256, disk="100M")


class KernelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_depth: int = Field(default=5, ge=0, le=64)
    max_agents: int = Field(default=100, ge=1, le=100_000)
    #: agents one tree may ever spawn in a kernel run, live or exited (an agent that spawns
    #: short-lived children in a loop leaves a record, a workspace and a log per child)
    max_tree_agents: int = Field(default=1000, ge=1, le=10_000_000)
    frame_limit: int = Field(default=DEFAULT_FRAME_LIMIT, ge=1024, le=256 * 1024**2)
    stop_grace: float = Field(default=5.0, ge=0, le=600)
    mailbox_capacity: int = Field(default=1000, ge=1, le=1_000_000)
    #: bytes of queued messages per agent (JSON size); a send over it is limit_exceeded
    mailbox_bytes: int = Field(default=4 * 1024**2, ge=1024, le=1024**3)
    # JSON-RPC bounds on agent channels (rpc/server.py); batch elements count one each
    in_flight_per_agent: int = Field(default=256, ge=1, le=65_536)
    in_flight_total: int = Field(default=4096, ge=1, le=1_000_000)
    #: of those, at most this many for one agent tree (so one tree cannot lock the others out)
    in_flight_per_tree: int = Field(default=1024, ge=1, le=1_000_000)
    batch_limit: int = Field(default=64, ge=1, le=65_536)
    # exec: concurrent runs per agent and in the whole kernel; timeout ceilings (seconds)
    exec_per_agent: int = Field(default=4, ge=1, le=1024)
    exec_total: int = Field(default=32, ge=1, le=65_536)
    exec_max_timeout: float = Field(default=600.0, gt=0, le=86_400)
    fetch_max_timeout: float = Field(default=120.0, gt=0, le=3600)
    #: bytes of an agent's log kept on disk (the newest; older output is dropped, see agent.logs)
    log_max_bytes: int = Field(default=8 * 1024**2, ge=4096, le=1024**4)
    # quotas on what the kernel stores for an agent outside its workspace (docs/isolation.md)
    archive_quota: int = Field(default=32 * 1024**2, ge=0, le=1024**4)
    state_quota: int = Field(default=16 * 1024**2, ge=0, le=1024**4)
    isolation: Literal["strict", "degraded"] = "strict"
    backend: Literal["auto", "bwrap", "plain"] = "auto"
    # pre-started sandbox launchers (bwrap backend); see docs/isolation.md and bench/spawn.py
    launcher_pool: int = Field(default=2, ge=0, le=64)
    #: pre-confined, single-use agent interpreters kept ready (0: every spawn is cold);
    #: see docs/isolation.md "Warm agents"
    warm_pool: int = Field(default=2, ge=0, le=64)
    limits: Limits = DEFAULT_LIMITS
    #: seconds an approval request waits for the operator before it counts as a deny
    approval_timeout: float = Field(default=3600.0, gt=0, le=7 * 86400)
    #: how long a no-effect call's audit record may wait for a group commit (ms); a kill -9
    #: can lose records acknowledged within this window (docs/audit.md)
    audit_commit_window_ms: float = Field(default=5.0, ge=0, le=10)
    #: records a caller identity may make with calls that change nothing (refusals, reads), at
    #: once and per second after; beyond, they are counted into one `audit.suppressed` record
    #: (core/record_quota.py, docs/audit.md)
    audit_quota_burst: int = Field(default=100, ge=1, le=1_000_000)
    audit_quota_rate: float = Field(default=1.0, gt=0, le=100_000)
    #: the HTTP API's slow-client guard (rpc/slow_clients.py, docs/http.md): seconds a connection
    #: has to send its request head, then its body; connections waiting for a head at once
    http_head_timeout: float = Field(default=10.0, gt=0, le=3600)
    http_body_timeout: float = Field(default=30.0, gt=0, le=3600)
    http_max_pending: int = Field(default=64, ge=1, le=65_536)

    def effective_limits(self, requested: Limits) -> Limits:
        return requested.merged_over(self.limits)


def load_config(home: Path, overrides: dict[str, Any] | None = None) -> KernelConfig:
    path = home / "config.toml"
    data: dict[str, Any] = {}
    if path.exists():
        data = parse_toml(path.read_bytes(), str(path), "config.toml").get("kernel", {})
    if overrides:
        data = {**data, **overrides}
    limits = data.get("limits")
    try:
        if isinstance(limits, dict):
            data["limits"] = Limits(**limits).merged_over(DEFAULT_LIMITS)
        return KernelConfig(**data)
    except ValidationError as err:
        e = err.errors()[0]
        key = "kernel." + ".".join(str(x) for x in e["loc"])
        raise InvalidRequest(f"{path}: [{key}] {e['msg']}", field=key) from None
