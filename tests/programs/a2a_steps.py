"""An agent published over A2A in the streaming and cancel tests: its first message is
``"STEPS TEXT"``; it prints ``step I`` every 0.1 s for STEPS steps, then answers ``done: TEXT``.
A large STEPS keeps it running until it is stopped."""

import time

from agentix.sdk import agent

k = agent.connect()
msg = k.recv(timeout=60)
steps, _, text = (msg.body if msg is not None else "0 ").partition(" ")
for i in range(int(steps)):
    print(f"step {i}", flush=True)
    time.sleep(0.1)
k.exit({"answer": f"done: {text}"})
