"""Prints ``N`` numbered lines (argv[1], default 20), a little apart, then exits 0."""
import sys
import time

for i in range(int(sys.argv[1]) if len(sys.argv) > 1 else 20):
    print(f"line {i}", flush=True)
    time.sleep(0.02)
