"""Attack: memory bomb."""
chunks = []
try:
    for i in range(4096):
        chunks.append(bytearray(b"x" * (1 << 20)))
except MemoryError as e:
    verdict(False, results=[("error", "MemoryError")], mib=len(chunks)); sys.exit(0)
verdict(True, results=[("ok", f"{len(chunks)} MiB allocated")])
