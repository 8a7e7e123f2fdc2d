"""Spawns copies of itself as children (the program is copied from this workspace).

``chain``: spawn one child running ``chain`` until refused; the refused one reports its
depth and the error, which every level passes up through wait_child.
``tree N LEVELS [exit]``: spawn N children, each ``tree N LEVELS-1`` (``sleep`` at the last
level); print their ids; then sleep (or exit at once with ``exit``).
``sleep``: print 'ready' and sleep.
"""
import sys
import time

from agentix.sdk import agent
from agentix.sdk.errors import AgentixError

k = agent.connect()
mode = sys.argv[1]
if mode == "chain":
    info = k.info()
    try:
        child = k.spawn({"name": "link", "program": "spawner.py", "args": ["chain"]})
    except AgentixError as err:
        k.exit({"depth": info["depth"], "error": err.code, "data": err.data})
    ex = k.wait_child(child.agent_id, timeout=60)
    k.exit(ex.result)
elif mode == "tree":
    n, levels = int(sys.argv[2]), int(sys.argv[3])
    extra = sys.argv[4:5]
    kids = []
    for i in range(n):
        args = ["tree", str(n), str(levels - 1)] if levels > 1 else ["sleep"]
        kids.append(k.spawn({"name": f"kid-{i}", "program": "spawner.py", "args": args}).agent_id)
    print("children", " ".join(kids), flush=True)
    if extra == ["exit"]:
        k.exit({"children": kids})
    time.sleep(3600)
elif mode == "sleep":
    print("ready", flush=True)
    time.sleep(3600)
