"""Prints a counter every 50 ms (to show whether it is running)."""
import itertools
import time

for i in itertools.count():
    print(i, flush=True)
    time.sleep(0.05)
