"""Receives on command: the operator writes ``cmd`` ({"seq": n, "recv": k} or {"exit": true})
into this workspace; the probe does k ``ipc.recv(timeout=0)`` and writes the bodies (None
for an empty mailbox) to ``out-n.json``."""
import json
import time

from agentix.sdk import agent
from agentix.sdk.errors import NotFound

k = agent.connect()
done = -1
while True:
    try:
        cmd = json.loads(k.tools.file_read(path="cmd")["content"])
    except (NotFound, ValueError):
        time.sleep(0.002)
        continue
    if cmd.get("exit"):
        k.exit("bye")
    if cmd["seq"] == done:
        time.sleep(0.002)
        continue
    got = []
    for _ in range(cmd["recv"]):
        m = k.recv(timeout=0)
        got.append(None if m is None else m.body)
    k.tools.file_write(path=f"out-{cmd['seq']}.json", content=json.dumps(got))
    done = cmd["seq"]
