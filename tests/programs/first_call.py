"""Makes one system call (sys.info) as soon as it starts, then exits with it."""
import time

from agentix.sdk import agent

t = time.perf_counter_ns()
k = agent.connect()
info = k.info()
k.exit({"first_call_ns": t, "agent_id": info["agent_id"], "name": info["name"],
        "parent": info["parent"], "depth": info["depth"]})
