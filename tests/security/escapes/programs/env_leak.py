"""Attack: env leak."""
needle = CTX["secret_env_value"]
found = [k for k, v in os.environ.items() if k != "ESCAPE_CTX" and (needle in v or k.endswith("_API_KEY"))]
rs = [("ok" if found else "error", f"environment keys: {sorted(os.environ)}")]
for p in ("/proc/1/environ", "/proc/self/environ", f"/proc/{CTX['kernel_pid']}/environ"):
    r = attempt(lambda p=p: open(p, "rb").read())
    rs.append(("ok", p) if r[0] == "ok" and needle in r[1] else ("error", f"{p}: {r[1][:80]}"))
verdict(any(r[0] == "ok" for r in rs), results=[(a, str(b)) for a, b in rs])
