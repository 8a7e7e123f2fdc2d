"""An agent that calls a remote A2A agent through the kernel tool a2a_call.

Its manifest needs ``network: HOST`` for the remote agent's host (a loopback or private
address only when named explicitly) and, for a server that wants a bearer token,
``secret: NAME`` for a vault secret bound to that host. The first message is
``{"url": ..., "text": ..., "secret": NAME?}``; the answer is tainted ``external_tool``.
"""

from agentix.sdk import agent

k = agent.connect()
msg = k.recv(timeout=60)
req = msg.body
args = {"url": req["url"], "message": req["text"]}
if req.get("secret"):
    args["secret"] = req["secret"]
out = {}
try:
    out["first"] = k.tools.a2a_call(**args)
except Exception as e:
    out["first_error"] = [getattr(e, "code", type(e).__name__), str(e)]
out["taint"] = k.info()["taint"]
try:  # a second message would carry the first answer out: the taint policy refuses it
    k.tools.a2a_call(**args)
    out["second"] = "sent"
except Exception as e:
    out["second_error"] = getattr(e, "code", type(e).__name__)
k.exit(out)
