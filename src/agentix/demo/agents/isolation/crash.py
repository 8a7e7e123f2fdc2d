"""Isolation demo: an agent that does some work, then dereferences NULL (SIGSEGV)."""

import ctypes

from agentix.sdk import agent

k = agent.connect()
for i in range(10):
    k.tools.echo(message=i)
ctypes.string_at(0)  # segmentation fault: the process dies by SIGSEGV
