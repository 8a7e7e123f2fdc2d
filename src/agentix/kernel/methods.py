"""The method table: every JSON-RPC method of the kernel with its policy, in one place.

A row says who may call the method (agents, the operator, both), which resources it touches
and how each is authorised (a function from the call to the list of resources, each decided
by ``core.authorize`` against the caller's tokens), whether a success is recorded in the
audit log, and its durability class. A method with no row cannot be registered
(``method`` raises at start-up); an unknown method is refused (h11: a missing key means
refuse). Later areas (packages, HTTP, MCP) add rows here.

Authorities, in words (docs/security.md repeats this table):

- operator methods: the operator's socket is the authority (file mode 0600 under
  ``$AGENTIX_HOME``); no token. ``tool.invoke`` with ``agent_id`` acts as that agent and is
  decided exactly like that agent's ``tool.call``. An operator connection may name itself
  as a face once (``session.bind``, e.g. ``mcp``): its ``effect`` calls are then always
  recorded ``by`` that face, and a face bound read-only is refused every ``effect`` row.
- agent methods with ``resources``: one decision over every resource the call touches.
- agent methods without: they read or change only the caller's own state (its mailbox, its
  record, its saved state, its children's exit records).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from agentix.core.errors import CapabilityDenied, InvalidRequest
from agentix.core.grants import Grant, Request, check_secret_host, parse_grants, requests_for_tool
from agentix.kernel.dispatch import Call, Handler, MethodPolicy, MethodSpec
from agentix.kernel.lookup import Lookup

if TYPE_CHECKING:
    from agentix.kernel.process import AgentRecord

__all__ = ["POLICIES", "VIRTUAL_WORKSPACE", "broadcast_targets", "method", "model_of", "policy_for"]

VIRTUAL_WORKSPACE = "/workspace"


# ---------------------------------------------------------------------------- resource functions
def tool_resources(k: Lookup, call: Call, subject: AgentRecord) -> Sequence[Request]:
    """What a tool call touches: each path (every one of ``file_read_many``), the host and the
    ``secret`` of ``web_fetch`` (which must be bound to that host), ``argv[0]`` of ``exec``; any
    other tool: ``tool: NAME``."""
    assert call.tool is not None
    out = requests_for_tool(call.tool, call.args, VIRTUAL_WORKSPACE)
    secret = next((r.value for r in out if r.kind == "secret"), None)
    if secret is not None:  # a secret goes only to the hosts it is bound to (each hop: web_fetch)
        host = next(r for r in out if r.kind == "network")
        check_secret_host(secret, k.secret_hosts.get(secret), host.value)
    return out


def _target_name(k: Lookup, call: Call, key: str = "to") -> AgentRecord:
    to = call.params.get(key)
    if not isinstance(to, str):
        raise InvalidRequest(f'missing parameter "{key}" (an agent id or live name)', field=key)
    return bind(call, key, k.table.find_live(to))


def bind(call: Call, key: str, target: AgentRecord) -> AgentRecord:
    """Pin the agent a name resolved to for the rest of the call: the handler runs after other
    stages (and their awaits), when the same name may belong to another agent; it must act on
    the agent that was decided on, so the parameter becomes that agent's id."""
    call.params = {**call.params, key: target.agent_id}
    return target


def send_resources(k: Lookup, call: Call, subject: AgentRecord) -> Sequence[Request]:
    target = _target_name(k, call)
    return [Request("message_send", target.manifest.name)]


def broadcast_targets(k: Lookup, rec: AgentRecord) -> list[tuple[AgentRecord, Request]]:
    """The agents a broadcast from ``rec`` may reach (live, same tree, not itself), each with
    the resource that authorises it."""
    return [(t, Request("message_send", t.manifest.name)) for t in k.table
            if t.agent_id != rec.agent_id and t.live and t.root == rec.root]


def broadcast_resources(k: Lookup, call: Call, subject: AgentRecord) -> Sequence[Request]:
    """Each recipient's resource; the recipients themselves are bound on the call (like
    ``bind``): the handler delivers to exactly these agents, so one spawned with a granted name
    after the decision receives nothing."""
    targets = broadcast_targets(k, subject)
    call.recipients = tuple((t.agent_id, r) for t, r in targets)
    return [r for _t, r in targets]


def spawn_resources(k: Lookup, call: Call, subject: AgentRecord) -> Sequence[Request]:
    man = call.params.get("manifest")
    name = man.get("name") if isinstance(man, dict) else None
    if not isinstance(name, str):
        raise InvalidRequest('agent.spawn_child needs "manifest" with a "name"', field="manifest")
    return [Request("spawn_child", name)]


def delegate_resources(k: Lookup, call: Call, subject: AgentRecord) -> Sequence[Request | Grant]:
    """``cap.delegate``: the recipient (a ``message_send`` grant must name it) and each
    delegated grant (a token must *cover* it)."""
    target = _target_name(k, call)
    g = call.params.get("grants")
    if isinstance(g, str):
        g = [g]
    if not isinstance(g, list) or not g or not all(isinstance(x, str) for x in g):
        raise InvalidRequest('"grants" must be a non-empty list of grant strings', field="grants")
    return [Request("message_send", target.manifest.name), *parse_grants(g, workspace=VIRTUAL_WORKSPACE)]


def untaint_resources(k: Lookup, call: Call, subject: AgentRecord) -> Sequence[Request]:
    label = call.params.get("label")
    if not isinstance(label, str) or not label:
        raise InvalidRequest('"label" must be a taint source such as fetched_url', field="label")
    return [Request("untaint", label.partition(":")[0])]


def model_of(k: Lookup, rec: AgentRecord, params: dict[str, Any]) -> str:
    """The ``provider:model`` a ``think`` call uses: its ``model``, else the manifest's, else the
    kernel's default."""
    model = params.get("model") or rec.manifest.model or k.default_model()
    if not isinstance(model, str) or not model:
        raise InvalidRequest('"model" must be provider:model, e.g. openai:gpt-4o-mini', field="model")
    return model


def think_resources(k: Lookup, call: Call, subject: AgentRecord) -> Sequence[Request]:
    return [Request("model", model_of(k, subject, call.params))]


def descendant_guard(k: Lookup, call: Call) -> None:
    """``agent.stop_child``/``kill_child``: only the caller's own descendants."""
    assert call.caller.agent_id is not None
    aid = call.params.get("agent_id")
    if not isinstance(aid, str):
        raise InvalidRequest('missing parameter "agent_id"', field="agent_id")
    target = bind(call, "agent_id", k.table.find(aid))
    node = target
    while node.parent is not None:
        if node.parent == call.caller.agent_id:
            return
        node = k.table.get(node.parent)
    rec = k.table.get(call.caller.agent_id)
    raise CapabilityDenied(f"{target.name} is not a descendant of {rec.name}",
                           reason="not_a_descendant", agent_id=target.agent_id)


# ---------------------------------------------------------------------------- the table
def _op(durability: str, doc: str = "the operator's socket", **kw: Any) -> MethodPolicy:
    return MethodPolicy(durability=durability, doc=doc, **kw)  # type: ignore[arg-type]


_SELF = "its own record only (no token)"

POLICIES: dict[str, MethodPolicy] = {
    # ---- operator: the kernel
    "kernel.info": _op("no_effect"),
    "kernel.shutdown": _op("effect"),
    "inference.stats": _op("no_effect"),
    "events.tail": _op("no_effect"),
    "session.bind": _op("no_effect", "the operator's socket; names this connection's face (mcp, ...) and "
                        "may make it read-only: binds once, only narrows", recorded=True),
    # ---- operator: agents
    "agent.spawn": _op("effect", "the operator's socket; the manifest's grants are minted from root"),
    "agent.list": _op("no_effect"),
    "dashboard.agents": _op("no_effect"),  # kernel/dashboard_api.py: the web dashboard's tree
    "agent.status": _op("no_effect"),
    "agent.wait": _op("no_effect"),
    "agent.stop": _op("effect"),
    "agent.kill": _op("effect"),
    "agent.pause": _op("effect"),
    "agent.resume": _op("effect"),
    "agent.logs": _op("no_effect"),
    "agent.send": _op("effect"),
    "agent.run": _op("effect"),
    "agent.submit_goal": _op("effect"),
    # ---- operator: the A2A face's push notifications (kernel/a2a_push.py)
    "a2a.push": _op("effect", "the operator's socket (the A2A face); the webhook's addresses are decided: "
                    "no loopback, private or link-local target unless allow_hosts names it", recorded=True),
    # ---- operator: capabilities and approvals
    "cap.list": _op("no_effect"),
    "cap.grant": _op("effect"),
    "cap.revoke": _op("effect"),
    "cap.check": _op("no_effect", "the operator's socket; answers the same decision as the agent's call, "
                     "charging nothing"),
    "approval.list": _op("no_effect"),
    "approval.respond": _op("effect"),
    # ---- operator: audit
    "audit.tail": _op("no_effect"),
    "audit.verify": _op("no_effect"),
    "audit.prove": _op("no_effect"),
    "audit.head": _op("no_effect"),
    # ---- operator: packages (kernel/packages_api.py, docs/packages.md)
    "package.build": _op("effect", "the operator's socket; `run` steps execute in the sandbox with no network "
                         "but the hosts a step declares (the build proxy); base and dependency packages "
                         "must pass the trust policy", recorded=True),
    "package.sign": _op("effect", "the operator's socket; a signing key under keys/signing", recorded=True),
    "package.push": _op("effect", "the operator's socket; the registry's credentials file", recorded=True),
    "package.pull": _op("effect", "the operator's socket; the package must pass the trust policy",
                        recorded=True),
    "package.verify": _op("no_effect"),
    "package.run": _op("effect", "the operator's socket; the package must pass the trust policy; the agent's "
                       "grants are declared ∩ accepted, minted from root", recorded=True),
    "package.list": _op("no_effect"),
    "package.inspect": _op("no_effect"),
    "package.rm": _op("effect", recorded=True),
    "package.gc": _op("effect", recorded=True),
    "keys.generate": _op("effect", recorded=True),
    "keys.list": _op("no_effect"),
    "trust.add": _op("effect", recorded=True),
    "trust.allow_unsigned": _op("effect", recorded=True),
    "trust.list": _op("no_effect"),
    # ---- operator: snapshots (kernel/snapshots_api.py, docs/packages.md "Snapshots")
    "snapshot.create": _op("effect", "the operator's socket; the agent is frozen while it is read; writes the "
                           "local store", recorded=True),
    "snapshot.restore": _op("effect", "the operator's socket; grants re-minted from root, never wider than the "
                            "snapshot recorded (narrowed by the operator's `grants`)", recorded=True),
    "snapshot.fork": _op("effect", "the operator's socket; as snapshot.create then snapshot.restore; a wider "
                         "grant is refused before anything is written", recorded=True),
    # ---- operator: HTTP API tokens (kernel/http_api.py, docs/http.md); the secret is never recorded
    "tokens.create": _op("effect", recorded=True),
    "tokens.list": _op("no_effect"),
    "tokens.revoke": _op("effect", recorded=True),
    "tokens.verify": _op("no_effect", "the operator's socket; answers which token a bearer secret names "
                         "(a face serving HTTP itself: `agentix mcp --http`); a bad one is recorded (within the "
                         "caller's audit quota: docs/audit.md)"),
    # ---- operator: MCP servers as agent tools (kernel/mcp_tools.py, docs/integrations.md)
    "mcp.servers": _op("no_effect"),
    # an effect: it starts the server's process and pins first-use tools (not for viewers)
    "mcp.tools": _op("effect", "the operator's socket; starts a declared server (sandboxed) to list it"),
    "mcp.approve": _op("effect", "the operator's socket; pins the tool's current description and schema",
                       recorded=True),
    "mcp.restart": _op("effect", "the operator's socket; restarts a declared server (sandboxed)", recorded=True),
    # ---- both
    "tool.list": _op("no_effect", "none: the tool catalogue is public"),
    "tool.call": MethodPolicy(
        "effect", "each resource the tool touches: every path (file tools, each of file_read_many), "
        "the host and each redirect hop and the secret (web_fetch), argv[0] (exec), mcp: SERVER/TOOL "
        "(an MCP server's tool mcp__SERVER__TOOL, enabled only while it matches its pin), else tool: NAME",
        resources=tool_resources, recorded=True, tool_call=True),
    "tool.invoke": MethodPolicy(
        "effect", "the operator's socket; with agent_id, exactly as that agent's tool.call",
        resources=tool_resources, recorded=True, tool_call=True),
    # ---- agent system calls
    "sys.info": _op("no_effect", _SELF),
    "sys.exit": _op("effect", _SELF),
    "ipc.send": MethodPolicy("effect", "message_send naming the recipient", resources=send_resources,
                             recorded=True),
    "ipc.recv": _op("no_effect", "its own mailbox only (no token)"),
    "ipc.broadcast": MethodPolicy(
        "effect", "message_send naming each recipient (one invocation per recipient; recipients "
        "not named are skipped)", resources=broadcast_resources, recorded=True, partial=True,
        charge="per_resource"),
    "agent.spawn_child": MethodPolicy(
        "effect", "spawn_child naming the child; the child's grants must be covered by the caller's "
        "live tokens and its model by a model grant", resources=spawn_resources, recorded=True),
    "agent.wait_child": _op("no_effect", "its own children only (no token)"),
    "agent.children": _op("no_effect", _SELF),
    "agent.stop_child": MethodPolicy("effect", "its own descendants only", guard=descendant_guard,
                                     recorded=True),
    "agent.kill_child": MethodPolicy("effect", "its own descendants only", guard=descendant_guard,
                                     recorded=True),
    "agent.reply": _op("effect", _SELF),
    "agent.state_save": _op("effect", "its own saved state only (no token)"),
    "agent.state_load": _op("no_effect", "its own saved state only (no token)"),
    "loop.event": _op("no_effect", "its own loop events only (no token)"),
    "think": MethodPolicy("effect", "model: provider:model (the budget is reserved before and settled "
                          "after)", resources=think_resources),
    "cap.delegate": MethodPolicy(
        "effect", "message_send naming the recipient and a live token covering each delegated grant",
        resources=delegate_resources, recorded=True),
    "sys.untaint": MethodPolicy("effect", "untaint naming the label's source", resources=untaint_resources,
                                recorded=True),
}


def policy_for(name: str) -> MethodPolicy:
    try:
        return POLICIES[name]
    except KeyError:
        raise TypeError(f"method {name} has no row in the method table (kernel/methods.py): "
                        "add its policy there before registering it") from None


def method(name: str, handler: Handler, *, agent: bool = False, operator: bool = False,
           policy: MethodPolicy | None = None) -> MethodSpec:
    """The ``MethodSpec`` for ``name`` with its row of the table (or an explicit ``policy``)."""
    return MethodSpec(name, handler, policy or policy_for(name), agent=agent, operator=operator)
