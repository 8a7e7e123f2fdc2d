"""An agent with state worth snapshotting (tests/packages/test_snapshots.py).

``snapper.py tell TARGET``: send TARGET one message and exit (a message from an agent
taints its receiver with ``agent_message``).

``snapper.py``: first life (no saved state): write files, save state, receive one message
(tainting itself), save what it heard, write ``ready.flag`` last, then sleep without reading
its mailbox (so messages sent now stay pending). A later life (its state restored): read
every pending message and exit with what it finds — files, state, taint, grants, messages.
"""
import hashlib
import os
import sys
import time
from pathlib import Path

from agentix.sdk import agent

k = agent.connect()
if len(sys.argv) > 2 and sys.argv[1] == "tell":
    k.send(sys.argv[2], {"psst": "a secret from another agent"})
    k.exit({"told": sys.argv[2]})

ws = Path(os.environ["HOME"])
notes = k.call("agent.state_load", key="notes")
if notes["value"] is None:
    (ws / "a.txt").write_text("alpha")
    (ws / "sub" / "deeper").mkdir(parents=True)
    (ws / "sub" / "b.bin").write_bytes(bytes(range(256)) * 100)
    (ws / "sub" / "deeper" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(ws / "sub" / "deeper" / "run.sh", 0o755)
    k.call("agent.state_save", key="notes", value={"step": 1, "items": ["x", "y"]})
    if "memory" in sys.argv[1:]:
        k.tools.memory_store(content="the cat sleeps on the mat", category="fact")
        k.tools.memory_store(content="we ship on friday", category="decision")
    m = k.recv(timeout=60)
    k.call("agent.state_save", key="heard", value=m.body if m else None)
    (ws / "ready.flag").write_text("ready")
    while True:
        time.sleep(1)

files = {}
for p in sorted(ws.rglob("*")):
    if p.is_file() and not p.is_symlink():
        files[str(p.relative_to(ws))] = hashlib.sha256(p.read_bytes()).hexdigest()
msgs = []
while True:
    m = k.recv(timeout=0.5)
    if m is None:
        break
    msgs.append({"from_name": m.sender_name, "body": m.body, "taint": list(m.taint)})
memories = None
if "memory" in sys.argv[1:]:
    hits = k.tools.memory_query(query="where does the cat sleep?", k=5)
    memories = [h["content"] for h in hits["memories"]]
info = k.info()
heard = k.call("agent.state_load", key="heard")
k.exit({"files": files, "notes": notes, "heard": heard, "messages": msgs, "taint": info["taint"],
        "grants": info["grants"], "agent_id": info["agent_id"], "memories": memories,
        "exec": os.access(ws / "sub" / "deeper" / "run.sh", os.X_OK)})
