"""Demo worker: writes its share of the corpus to its workspace, processes each file, reports."""

import re
import time
from collections import Counter

from agentix.sdk import agent

k = agent.connect()
job = k.recv(timeout=10)
if job is None:
    k.exit({"error": "no job arrived"}, code=1)
files = job.body["files"]
crash_after = job.body.get("crash_after")

counts = Counter()
done = []
for i, (name, text) in enumerate(sorted(files.items())):
    if crash_after is not None and i >= crash_after:
        raise RuntimeError(f"simulated crash while processing {name} (file {i + 1} of {len(files)})")
    k.tools.file_write(path=f"in/{name}.txt", content=text)
    content = k.tools.file_read(path=f"in/{name}.txt")["content"]
    words = [w for w in re.findall(r"[a-z]+", content.lower()) if len(w) > 3]
    counts.update(words)
    k.tools.file_write(path=f"out/{name}.counts", content="\n".join(f"{w} {n}" for w, n in Counter(words).most_common()))
    done.append(name)
    time.sleep(0.05)

listing = [e["name"] for e in k.tools.file_list(path="out")["entries"]]
k.send(job.body["reply_to"], {"kind": "report", "files": done, "outputs": listing,
                              "words": sum(counts.values()), "counts": dict(counts)})
k.exit({"files": done, "words": sum(counts.values())})
