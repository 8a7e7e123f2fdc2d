"""Isolation demo: an agent in an infinite loop (no system calls, pure CPU)."""

from agentix.sdk import agent

agent.connect()
n = 0
while True:
    n += 1
