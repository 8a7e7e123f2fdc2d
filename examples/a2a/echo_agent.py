"""The agent examples/a2a/echo.yaml publishes over A2A: it answers each task's text."""

from agentix.sdk import agent

k = agent.connect()
msg = k.recv(timeout=60)
text = msg.body if msg is not None else ""
k.exit({"answer": f"echo: {text}"})
