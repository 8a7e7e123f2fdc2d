"""Demo coordinator: splits a corpus among three workers, gathers their reports over IPC.

Runs inside its own sandboxed agent process and acts only through system calls. One
worker is told to crash part-way; the coordinator notices, records it, and finishes with
what the others produced.
"""

import os
import time
from collections import Counter

from agentix.sdk import agent
from agentix.sdk.errors import AgentixError

CORPUS = {
    "kernels": "A kernel mediates every access to the machine. Processes ask; the kernel checks and acts.",
    "capabilities": "A capability names what may be done. Holding the token is the permission; nothing else is.",
    "audit": "Every action leaves a record. The record is chained, so an edit anywhere breaks the chain.",
    "sandbox": "A sandboxed process sees its workspace and nothing else. No network, no other files.",
    "scheduling": "Inference is shared fairly. Each agent gets its weight's share and none starves.",
    "budgets": "Budgets bound spending. A call that would exceed the budget is refused before it runs.",
    "messages": "Agents talk through mailboxes. A full mailbox refuses, and nothing is silently lost.",
    "packages": "An agent package is built from an Agentfile. Its digest names its contents exactly.",
    "taint": "Data from outside is labelled. Labelled data cannot reach the tools that act on the world.",
}


# the worker program sits beside this file in the workspace copy of the package
WORKER = os.path.relpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py"))


def main() -> None:
    k = agent.connect()
    t0 = time.monotonic()
    docs = sorted(CORPUS.items())
    shares = [docs[0::3], docs[1::3], docs[2::3]]
    workers = []
    for i, share in enumerate(shares):
        job = {"files": dict(share), "reply_to": k.name,
               "crash_after": 1 if i == 1 else None}  # worker 2 will crash part-way
        # the kernel names them worker, worker-2, worker-3; each gets its own /workspace
        child = k.spawn({"name": "worker", "program": WORKER,
                         "capabilities": ["file_read: {workspace}/*", "file_write: {workspace}/*",
                                          "message_send: coordinator"],
                         "limits": {"memory": "256M", "pids": 32, "wall_clock": "60s"}}, message=job)
        workers.append(child)
        k.tools.file_write(path="log.txt", content=f"spawned {child.name} {child.agent_id}\n", append=True)

    reports = {}
    deadline = time.monotonic() + 20
    while len(reports) < len(workers) and time.monotonic() < deadline:
        msg = k.recv(timeout=0.5)
        if msg is not None and isinstance(msg.body, dict) and msg.body.get("kind") == "report":
            reports[msg.sender] = msg.body
            continue
        # a worker that died will never report: stop waiting for it
        exited = [w for w in workers if w.agent_id not in reports and _exited(k, w.agent_id)]
        if exited and len(reports) + len(exited) >= len(workers):
            break

    outcomes = []
    total = Counter()
    for w in workers:
        ex = k.wait_child(w.agent_id, timeout=10)
        rep = reports.get(w.agent_id)
        if rep:
            total.update(rep["counts"])
        outcomes.append({"agent_id": w.agent_id, "name": w.name, "reason": ex.reason, "code": ex.code,
                         "files": rep["files"] if rep else [], "words": rep["words"] if rep else 0})
    summary = "\n".join(f"{word} {n}" for word, n in total.most_common(10))
    k.tools.file_write(path="summary.txt", content=summary + "\n")
    k.exit({"corpus": len(CORPUS), "workers": outcomes, "top_words": total.most_common(5),
            "seconds": round(time.monotonic() - t0, 3)})


def _exited(k, agent_id: str) -> bool:
    try:
        k.wait_child(agent_id, timeout=0)
        return True
    except AgentixError as err:
        if err.code == "timeout":
            return False
        raise


main()
