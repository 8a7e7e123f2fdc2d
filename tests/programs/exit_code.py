"""Prints to stdout and stderr, then exits with status argv[1] (or raises if 'raise')."""
import sys

print("to stdout", flush=True)
print("to stderr", file=sys.stderr, flush=True)
if sys.argv[1] == "raise":
    raise RuntimeError("boom")
sys.exit(int(sys.argv[1]))
