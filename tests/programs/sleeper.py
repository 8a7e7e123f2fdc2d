"""Sleep (argv[1] seconds, default forever), printing 'ready' first."""
import sys
import time

print("ready", flush=True)
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 3600)
