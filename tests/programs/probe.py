"""Run the Python source in argv[1] inside the sandbox; exit with the value it leaves in ``result``.

The tests use it to look at the sandbox from inside (what /tmp is, what fd 1 is, ...).
"""
import sys

from agentix.sdk import agent

k = agent.connect()
scope: dict = {"k": k, "result": None}
exec(sys.argv[1], scope)  # noqa: S102 - the test's own probe code
k.exit(scope["result"])
