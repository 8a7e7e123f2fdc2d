"""Receives messages until it gets {"stop": true} or argv[1] seconds pass; exits with them all."""
import sys

from agentix.sdk import agent

k = agent.connect()
got = []
timeout = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
while True:
    m = k.recv(timeout=timeout)
    if m is None:
        break
    got.append({"from": m.sender, "from_name": m.sender_name, "body": m.body, "taint": list(m.taint)})
    if isinstance(m.body, dict) and m.body.get("stop"):
        break
k.exit(got)
