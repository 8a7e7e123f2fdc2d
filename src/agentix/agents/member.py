"""A member agent: the identity of one agent of a multi-agent framework program (a CrewAI crew
member) whose logic runs in its PARENT, while every side effect happens here, as this agent.

    spawned by the parent with:  {"name": "researcher", "program": "module:agentix.agents.member",
                                  "capabilities": [<its own grants>, "message_send: PARENT"]}

It answers requests its parent sends, in order, and nothing else:
``{"member": SEQ, "op": "think", "params": {...}}`` (a ``think`` as this agent: its model
grant, its budget), ``{"member": SEQ, "op": "tool", "name": N, "args": {...}}`` (a
``tool.call`` as this agent: checked against ITS grants), ``"tools"`` (``tool.list``) and
``"info"`` (``sys.info``); each reply is ``{"member_reply": SEQ, "ok": RESULT}`` or
``{"member_reply": SEQ, "error": CODE, "message": TEXT}``. ``{"member": SEQ, "op": "exit"}``
ends it. A message from anyone but its parent is ignored.

Requests arrive as messages, so this agent's context carries ``agent_message`` taint: the
default taint policy refuses it ``exec``, ``a2a_call``, sending tools and writes outside its
workspace, as for any agent acting on another's words.
"""

from __future__ import annotations

from agentix.sdk import agent


def _do(k: agent.AgentKernel, req: dict) -> object:
    op = req.get("op")
    if op == "think":
        return k.call("think", **dict(req.get("params") or {}))  # the reply as JSON, for the parent
    if op == "tool":
        return k.tools.call(str(req.get("name")), dict(req.get("args") or {}))
    if op == "tools":
        return k.tools.list()
    if op == "info":
        return k.info()
    raise ValueError(f"unknown member request {op!r}")


def main() -> None:
    k = agent.connect()
    parent = k.info().get("parent")
    served = 0
    while True:
        m = k.recv(timeout=3600)
        if m is None:
            break
        if m.sender != parent or not isinstance(m.body, dict) or "member" not in m.body:
            continue
        req = m.body
        if req.get("op") == "exit":
            break
        try:
            reply = {"member_reply": req["member"], "ok": _do(k, req)}
        except Exception as err:  # noqa: BLE001 - every refusal goes back to the parent
            reply = {"member_reply": req["member"], "error": getattr(err, "code", type(err).__name__),
                     "message": str(err)}
        k.send(parent, reply)
        served += 1
    k.exit({"served": served})


if __name__ == "__main__":
    main()
