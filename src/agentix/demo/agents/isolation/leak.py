"""Isolation demo: an agent leaking memory, 4 MiB at a time, every byte touched, never freed."""

import time

from agentix.sdk import agent

k = agent.connect()
k.tools.echo(message="leaking")
kept = []
while True:
    kept.append(b"\xa5" * (4 << 20))
    time.sleep(0.005)
