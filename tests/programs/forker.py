"""Forks a grandchild process (a plain OS child, not an agent) and prints its pid; both sleep."""
import os
import subprocess
import sys
import time

child = subprocess.Popen([sys.executable, "-c", "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(3600)"])
pid = os.fork()
if pid == 0:
    time.sleep(3600)
    os._exit(0)
print(f"grandchildren {child.pid} {pid}", flush=True)
while True:
    time.sleep(1)
