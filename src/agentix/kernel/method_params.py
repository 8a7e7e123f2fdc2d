"""The params of every operator method as JSON Schema (2020-12), keyed like the method table.

One source for both faces: the HTTP API's OpenAPI document (``/openapi.json``) is generated
from these, and ``tests/http_api/test_openapi.py`` fails when an operator method registered
with the pipeline has no schema here (or a schema names a method that does not exist).
The schemas describe what each handler reads; the handler still validates (and its
``invalid_request`` names the field), so a schema never refuses what the socket accepts.
Unknown extra params are ignored by the handlers, hence no ``additionalProperties: false``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PARAMS", "params_schema"]


def _obj(required: tuple[str, ...] = (), **props: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = list(required)
    return out


_S = {"type": "string"}
_N = {"type": "number", "minimum": 0}
_I = {"type": "integer", "minimum": 0}
_B = {"type": "boolean"}
_ANY: dict[str, Any] = {}
_AGENT = {"type": "string", "description": "an agent id or live name"}
_REF = {"type": "string", "description": "a package reference (NAME:TAG or NAME@DIGEST)"}
_GRANTS = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}],
           "description": "grant strings, e.g. `file_read: /data/*` (docs/manifest.md)"}
_MANIFEST = {"type": "object", "description": "an agent manifest (docs/manifest.md)",
             "properties": {"name": {"type": "string"}, "program": {"type": "string"}}}

PARAMS: dict[str, dict[str, Any]] = {
    # ---- the kernel
    "kernel.info": _obj(),
    "kernel.shutdown": _obj(),
    "session.bind": _obj(("face",), face={**_S, "pattern": "^[a-z0-9_-]{1,32}$",
                                          "description": "the face's name for the audit log, e.g. mcp "
                                                         "(an HTTP caller is bound already: http:<token>)"},
                         read_only={**_B, "default": False,
                                    "description": "refuse every method the table marks `effect`"}),
    "inference.stats": _obj(),
    "events.tail": _obj(after={**_I, "description": "only events with seq > after (0: the last `limit`)"},
                        agent=_S, kind={**_S, "description": "a kind or its dotted prefix"},
                        limit={**_I, "default": 1000, "minimum": 1, "maximum": 10000}, wait={**_N, "description": "seconds to wait "
                                                               "for a new event (at most 60)"}),
    # ---- agents
    "agent.spawn": {**_obj(manifest=_MANIFEST, manifest_path={**_S, "description": "a manifest file on "
                                                              "the kernel's host (instead of manifest)"},
                           manifest_text={**_S, "description": "the manifest as YAML or JSON text "
                                                              "(instead of manifest; program paths absolute)"},
                           base_dir={**_S, "description": "where relative program paths resolve"},
                           name={**_S, "description": "overrides the manifest's name"},
                           message={**_ANY, "description": "the agent's first message"}),
                    "anyOf": [{"required": ["manifest"]}, {"required": ["manifest_text"]},
                              {"required": ["manifest_path"]}]},
    "agent.list": _obj(all={**_B, "default": True, "description": "include exited agents"}),
    "dashboard.agents": _obj(all={**_B, "default": True, "description": "include exited agents"},
                             agents={"type": "array", "items": {"type": "string"}, "maxItems": 1000,
                                     "description": "only these agent ids"}),
    "agent.status": _obj(("agent_id",), agent_id=_AGENT),
    "agent.wait": _obj(("agent_id",), agent_id=_AGENT, timeout=_N),
    "agent.stop": _obj(("agent_id",), agent_id=_AGENT, grace={**_N, "description": "seconds between "
                                                              "SIGTERM and SIGKILL"}),
    "agent.kill": _obj(("agent_id",), agent_id=_AGENT),
    "agent.pause": _obj(("agent_id",), agent_id=_AGENT),
    "agent.resume": _obj(("agent_id",), agent_id=_AGENT),
    "agent.logs": _obj(("agent_id",), agent_id=_AGENT, offset={**_I, "default": 0},
                       wait={**_N, "description": "seconds to wait for more output (at most 60)"},
                       max_bytes=_I),
    "agent.send": _obj(("to", "message"), to=_AGENT, message=_ANY),
    "agent.run": _obj(("agent_id", "message"), agent_id=_AGENT, message=_ANY, timeout=_N),
    "agent.submit_goal": _obj(("goal",), goal={**_S, "minLength": 1},
                              output={**_S, "description": "an absolute directory for the results"},
                              manifest=_MANIFEST),
    # ---- the A2A face's push notifications (kernel/a2a_push.py)
    "a2a.push": _obj(("url",), url={**_S, "description": "the client's webhook (http or https)"},
                     task_id={**_S, "description": "the A2A task (required unless check)"},
                     body={**_S, "description": "the notification as JSON text (required unless check)"},
                     token={**_S, "description": "sent as X-A2A-Notification-Token"},
                     authorization={**_S, "description": "sent as Authorization"},
                     allow_hosts={"type": "array", "items": _S, "description": "hosts a webhook may reach "
                                  "even when loopback or private"},
                     check={**_B, "default": False, "description": "decide the target, send nothing"},
                     timeout={**_N, "default": 10, "maximum": 30},
                     client={**_S, "description": "the A2A client the webhook is for (recorded)"}),
    # ---- capabilities and approvals
    "cap.list": _obj(agent_id=_AGENT),
    "cap.grant": _obj(("agent_id", "grants"), agent_id=_AGENT, grants=_GRANTS,
                      max_invocations={"type": ["integer", "null"], "minimum": 1},
                      expires={"type": ["string", "number", "null"],
                               "description": "a duration such as 1h, or a Unix time"}),
    "cap.revoke": _obj(("token_id",), token_id=_S),
    "cap.check": _obj(("agent_id", "name"), agent_id=_AGENT, name={**_S, "description": "a tool name"},
                      args={"type": "object"}),
    "approval.list": _obj(all={**_B, "default": False}),
    "approval.respond": _obj(("id", "approve"), id=_S, approve=_B, reason=_S),
    # ---- audit
    "audit.tail": _obj(after=_I, agent=_S, kind=_S, limit={"type": "integer", "minimum": 1, "maximum": 10000},
                       wait=_N),
    "audit.verify": _obj(),
    "audit.prove": _obj(("seq",), seq={"type": "integer", "minimum": 1}),
    "audit.head": _obj(sign={**_B, "default": True}),
    # ---- packages (docs/packages.md)
    "package.build": _obj(("context", "tag"), context={**_S, "description": "the build directory (absolute)"},
                          tag={**_S, "description": "NAME:TAG"}, agentfile=_S),
    "package.sign": _obj(("ref", "key"), ref=_REF, key={**_S, "description": "a signing key name"}),
    "package.push": _obj(("ref",), ref=_REF),
    "package.pull": _obj(("ref",), ref=_REF, allow_rollback=_B),
    "package.verify": _obj(("ref",), ref=_REF, allow_rollback=_B),
    "package.run": _obj(("ref",), ref=_REF, accept={"oneOf": [
                            {"const": "all"}, {"type": "array", "items": {"type": "string"}}],
                            "description": "the declared capabilities to grant, or all"},
                        name=_S, message=_ANY, allow_rollback=_B),
    "package.list": _obj(),
    "package.inspect": _obj(("ref",), ref=_REF),
    "package.rm": _obj(("ref",), ref=_REF),
    "package.gc": _obj(),
    "keys.generate": _obj(("name",), name=_S),
    "keys.list": _obj(),
    "trust.add": _obj(("key", "pattern"), key={**_S, "description": "a public key, key file or key name"},
                      pattern={**_S, "description": "a name pattern such as registry.example/team/*"}),
    "trust.allow_unsigned": _obj(("pattern",), pattern=_S),
    "trust.list": _obj(),
    # ---- snapshots (docs/packages.md, "Snapshots")
    "snapshot.create": _obj(("agent",), agent=_AGENT, tag={**_S, "description": "NAME:TAG (optional)"}),
    "snapshot.restore": _obj(("ref",), ref={**_S, "description": "NAME:TAG, NAME@sha256:… or sha256:…"},
                             grants={**_GRANTS, "description": "narrower grant strings (optional)"}, name=_S,
                             accept_all={"type": "boolean", "description": "a snapshot this kernel did not "
                                         "make gets every grant it records (else name them in grants)"},
                             reissue_invocations={"type": "boolean", "description": "mint the snapshot's "
                                                  "recorded invocation counts again, whatever earlier restores "
                                                  "were given (recorded in the audit log)"}),
    "snapshot.fork": _obj(("agent",), agent=_AGENT, grants=_GRANTS, name=_S, tag=_S),
    # ---- tools
    "tool.list": _obj(),
    "tool.invoke": _obj(("name",), name={**_S, "description": "a tool name (tool.list)"},
                        args={"type": "object"},
                        agent_id={**_AGENT, "description": "act as this agent (decided like its tool.call)"},
                        dry_run=_B, approval=_S),
    # ---- HTTP operator tokens (kernel/http_api.py)
    "tokens.create": _obj(("name", "role"), name={"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
                          role={"enum": ["viewer", "operator"]},
                          ttl={"type": ["number", "string", "null"],
                               "description": "until it expires: seconds or a duration such as 12h or "
                                              "7d (none: never)"}),
    "tokens.list": _obj(),
    "tokens.revoke": _obj(("name",), name=_S),
    "tokens.verify": _obj(("token",), token={"type": "string", "description": "a bearer token (agx_...)"}),
    # ---- MCP servers as agent tools (kernel/mcp_tools.py)
    "mcp.servers": _obj(),
    "mcp.tools": _obj(server={"type": "string", "description": "one declared server (default: all)"}),
    "mcp.approve": _obj(("tool",), tool={"type": "string", "description": "SERVER/TOOL or SERVER/*"}),
    "mcp.restart": _obj(("server",), server=_S),
}


def params_schema(name: str) -> dict[str, Any]:
    """The schema of ``name``'s params; a method without one is a start-up error of the HTTP API."""
    try:
        return PARAMS[name]
    except KeyError:
        raise TypeError(f"operator method {name} has no params schema: add it to "
                        "kernel/method_params.py") from None
