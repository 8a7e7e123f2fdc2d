"""Run the system calls given as JSON in argv[1] ([[method, params], ...]); exit with the outcomes.

Each outcome is {"ok": result} or {"error": code, "data": data, "type": exception class}.
A string parameter "$N" stands for the agent_id returned by call N (e.g. a spawned child).
Pseudo-methods: ["sleep", seconds], ["print", text], ["stderr", text], ["recv_all", timeout].
"""
import json
import sys
import time

from agentix.sdk import agent
from agentix.sdk.errors import AgentixError

k = agent.connect()
out = []
for method, params in json.loads(sys.argv[1]):
    if method == "sleep":
        time.sleep(params)
        continue
    if method == "print":
        print(params, flush=True)
        continue
    if method == "stderr":
        print(params, file=sys.stderr, flush=True)
        continue
    params = {key: out[int(v[1:])]["ok"]["agent_id"] if isinstance(v, str) and v[:1] == "$" and v[1:].isdigit() else v
              for key, v in params.items()}
    try:
        out.append({"ok": k.call(method, **params)})
    except AgentixError as err:
        out.append({"error": err.code, "data": err.data, "type": type(err).__name__,
                    "message": err.message})
k.exit(out)
