"""In-sandbox hardening, applied by trusted code before any untrusted code runs.

The bwrap backend starts every agent as ``python -m agentix.agents.boot ...`` (or any
Python entry point) with ``AGENTIX_CONFINE=<policy>`` (``Policy.to_env``) and ``AGENTIX_CONFINE_FD=<n>``
in its environment. The first thing the entry point does is::

    from agentix.sandbox.confine import apply_from_env
    apply_from_env()

which, in this order:

1. sets rlimits (``core`` 0 always; ``nofile``, ``fsize``, ``as`` where the policy sets them);
2. sets ``PR_SET_NO_NEW_PRIVS`` and checks the process holds no capabilities and is not
   uid 0 (``privileges``; the backend drops to an unprivileged uid with ``setpriv``);
3. applies the Landlock ruleset restating the mount view (read-only system paths,
   read-write ``/workspace`` and ``/tmp``; TCP and cross-domain signals refused);
4. checks that the seccomp filter is loaded (the backend hands it to bwrap) or loads it;
5. writes one JSON line to ``AGENTIX_CONFINE_FD`` naming the applied and missing layers,
   closes that descriptor and removes both variables from the environment;
6. only then sets the agent's own environment (the manifest's ``env``), which travels
   hex-encoded (names and values) inside the policy: no host-side launcher (``/bin/sh``, bwrap, setpriv) and
   no code that runs before confinement ever sees it as an environment variable.

Fail closed: if a layer in ``policy.required`` cannot be applied, it prints
``agentix confine: isolation_unavailable: <layer>: <why>`` to stderr, reports the same on
the descriptor and exits with status 125, unless ``policy.degraded_ok`` is set (the
operator accepted ``isolation: degraded``); then the layer is listed as missing.

``python -m agentix.sandbox.confine -- argv...`` applies the policy and ``execv``s argv (for
non-Python programs); ``python -m agentix.sandbox.confine --run prog.py args...`` applies it
and runs a Python file in this process (no second interpreter start); ``--stdio FD -- argv...``
makes descriptor FD the program's stdin and stdout first (kernel/mcp_tools.py: an MCP server).
"""

# Import cost matters here: this runs before every agent's first system call, so the module
# avoids json, dataclasses, re and __future__ (each costs milliseconds at start-up).
import os
import resource
import sys

from agentix.core.errors import IsolationUnavailable

__all__ = ["CONFINE_FAILED", "ConfineError", "Policy", "apply", "apply_from_env", "main"]

CONFINE_FAILED = 125  # exit status of a sandbox whose required layer could not be applied
ENV_POLICY = "AGENTIX_CONFINE"
ENV_FD = "AGENTIX_CONFINE_FD"

_PR_SET_NO_NEW_PRIVS = 38
_PR_GET_NO_NEW_PRIVS = 39
_RLIMITS = {
    "core": resource.RLIMIT_CORE,
    "nofile": resource.RLIMIT_NOFILE,
    "fsize": resource.RLIMIT_FSIZE,
    "as": resource.RLIMIT_AS,
}


class ConfineError(IsolationUnavailable):
    """A layer could not be applied (``isolation_unavailable``, ``data.layer`` names it)."""

    def __init__(self, layer: str, why: str) -> None:
        super().__init__(f"{layer}: {why}", layer=layer, why=why)
        self.layer = layer
        self.why = why


_FS, _US = "\x1e", "\x1f"  # field and item separators of the wire form (never in a path)


class Policy:
    """What to apply inside the sandbox; built by the backend, passed in the environment.

    Wire form (``to_env``/``from_env``): ``key=value`` fields separated by U+001E, list
    items by U+001F; cheap to parse without importing json.
    """

    __slots__ = ("rlimits", "landlock_ro", "landlock_rw", "landlock_dev", "seccomp", "network",
                 "required", "degraded_ok", "env")

    def __init__(self, rlimits=None, landlock_ro=(), landlock_rw=(), landlock_dev=(),
                 seccomp="preloaded", network=False, required=(), degraded_ok=False, env=None):
        self.rlimits = dict(rlimits or {})          # name -> value ("core", "nofile", "fsize", "as")
        self.landlock_ro = list(landlock_ro)
        self.landlock_rw = list(landlock_rw)
        self.landlock_dev = list(landlock_dev)
        self.seccomp = seccomp                      # "preloaded" (by bwrap) | "load" | "off"
        self.network = bool(network)
        self.required = list(required)
        self.degraded_ok = bool(degraded_ok)
        self.env = dict(env or {})                  # set after confinement (name -> value)

    def to_env(self):
        items = [*self.landlock_ro, *self.landlock_rw, *self.landlock_dev]
        if any(_FS in x or _US in x for x in items):
            raise ValueError("a path contains a separator character")
        fields = {
            "rl": _US.join(f"{k}:{int(v)}" for k, v in self.rlimits.items()),
            "ro": _US.join(self.landlock_ro), "rw": _US.join(self.landlock_rw),
            "dev": _US.join(self.landlock_dev), "seccomp": self.seccomp,
            "net": "1" if self.network else "0", "req": _US.join(self.required),
            "degraded": "1" if self.degraded_ok else "0",
            "env": _US.join(f"{k.encode().hex()}={v.encode('utf-8', 'surrogateescape').hex()}"
                            for k, v in self.env.items()),
        }
        if any(not k or "=" in k or _FS in k or _US in k or "\x00" in k for k in self.env):
            raise ValueError("an environment name contains a separator character")
        return _FS.join(f"{k}={v}" for k, v in fields.items())

    @classmethod
    def from_env(cls, text):
        f = dict(part.split("=", 1) for part in text.split(_FS))

        def items(key):
            return [x for x in f.get(key, "").split(_US) if x]

        return cls(
            rlimits={k: int(v) for k, v in (x.split(":", 1) for x in items("rl"))},
            landlock_ro=items("ro"), landlock_rw=items("rw"), landlock_dev=items("dev"),
            seccomp=f.get("seccomp", "preloaded"), network=f.get("net") == "1",
            required=items("req"), degraded_ok=f.get("degraded") == "1",
            env={bytes.fromhex(k).decode(): bytes.fromhex(v).decode("utf-8", "surrogateescape")
                 for k, v in (x.split("=", 1) for x in items("env"))})


def _status_field(name: str) -> str:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    return ""


def _rlimits(policy: Policy) -> None:
    wanted = {"core": 0, **policy.rlimits}
    for name, value in wanted.items():
        res = _RLIMITS.get(name)
        if res is None:
            raise ConfineError("rlimits", f"unknown rlimit {name!r}")
        try:
            resource.setrlimit(res, (value, value))
        except (ValueError, OSError) as err:
            raise ConfineError("rlimits", f"setrlimit {name}={value}: {err}") from None


def _no_new_privs() -> None:
    if _status_field("NoNewPrivs") == "1":
        return  # set by bwrap and setpriv already; no need to load ctypes for it
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise ConfineError("no_new_privs", os.strerror(ctypes.get_errno()))
    if libc.prctl(_PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1:
        raise ConfineError("no_new_privs", "PR_GET_NO_NEW_PRIVS does not report it set")


def _privileges() -> None:
    if 0 in os.getresuid() or 0 in os.getresgid():
        raise ConfineError("privileges", f"running as uid {os.getresuid()} gid {os.getresgid()}")
    for cap in ("CapEff", "CapPrm", "CapAmb"):
        if int(_status_field(cap) or "0", 16):
            raise ConfineError("privileges", f"{cap} is not empty")


def _landlock(policy: Policy) -> None:
    from agentix.sandbox import landlock

    try:
        landlock.restrict(policy.landlock_ro, policy.landlock_rw, policy.landlock_dev,
                          deny_tcp=not policy.network)
    except OSError as err:
        raise ConfineError("landlock", str(err)) from None


def _seccomp(policy: Policy) -> None:
    if policy.seccomp == "preloaded":
        if _status_field("Seccomp") != "2":
            raise ConfineError("seccomp", "no seccomp filter is loaded (Seccomp != 2)")
        return
    from agentix.sandbox import seccomp

    try:
        seccomp.load(network=policy.network)
    except OSError as err:
        raise ConfineError("seccomp", str(err)) from None


def apply(policy: Policy) -> tuple[list[str], list[dict[str, str]]]:
    """Apply ``policy`` to this process; return (applied layers, missing layers).

    Raises ``ConfineError`` for the first required layer that fails, unless
    ``policy.degraded_ok``.
    """
    steps = [
        ("rlimits", lambda: _rlimits(policy)),
        ("no_new_privs", _no_new_privs),
        ("privileges", _privileges),
        ("landlock", lambda: _landlock(policy)),
        ("seccomp", lambda: _seccomp(policy) if policy.seccomp != "off" else None),
    ]
    applied: list[str] = []
    missing: list[dict[str, str]] = []
    for layer, step in steps:
        if layer == "seccomp" and policy.seccomp == "off":
            missing.append({"layer": layer, "why": "disabled by the backend"})
            continue
        try:
            step()
        except ConfineError as err:
            if layer in policy.required and not policy.degraded_ok:
                raise
            missing.append({"layer": err.layer, "why": err.why})
        else:
            applied.append(layer)
    return applied, missing


def _js(v) -> str:
    """Minimal JSON encoder for the report (bool, str, list, dict of those)."""
    if v is True or v is False:
        return "true" if v else "false"
    if isinstance(v, str):
        out = ['"']
        for ch in v:
            if ch in '"\\':
                out.append("\\" + ch)
            elif ord(ch) < 0x20:
                out.append("\\u%04x" % ord(ch))
            else:
                out.append(ch)
        return "".join(out) + '"'
    if isinstance(v, dict):
        return "{" + ",".join(f"{_js(str(k))}:{_js(x)}" for k, x in v.items()) + "}"
    return "[" + ",".join(_js(x) for x in v) + "]"


def _report(fd, data) -> None:
    if fd is None:
        return
    try:
        os.write(fd, (_js(data) + "\n").encode())
    except OSError:
        pass
    finally:
        try:
            os.close(fd)
        except OSError:
            pass


def apply_from_env() -> None:
    """Apply the policy in ``AGENTIX_CONFINE`` (no-op when absent); exit 125 on failure."""
    text = os.environ.pop(ENV_POLICY, None)
    fd_text = os.environ.pop(ENV_FD, None)
    fd = int(fd_text) if fd_text and fd_text.isdigit() else None
    if text is None:
        _report(fd, {"ok": True, "applied": [], "missing": []})
        return
    try:
        policy = Policy.from_env(text)
        applied, missing = apply(policy)
    except ConfineError as err:
        sys.stderr.write(f"agentix confine: isolation_unavailable: {err.layer}: {err.why}\n")
        sys.stderr.flush()
        _report(fd, {"ok": False, "layer": err.layer, "why": err.why})
        os._exit(CONFINE_FAILED)
    except Exception as err:  # a malformed policy is a failure to confine, never a pass
        sys.stderr.write(f"agentix confine: isolation_unavailable: policy: {err!r}\n")
        sys.stderr.flush()
        _report(fd, {"ok": False, "layer": "policy", "why": repr(err)})
        os._exit(CONFINE_FAILED)
    _report(fd, {"ok": True, "applied": applied, "missing": missing})
    for name, value in policy.env.items():  # confined now: the agent's own environment
        os.environ[name] = value


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--run"] and len(args) >= 2:
        apply_from_env()
        import runpy

        sys.argv = args[1:]
        runpy.run_path(args[1], run_name="__main__")
        return
    stdio = None
    if args[:1] == ["--stdio"] and len(args) >= 2 and args[1].isdigit():
        stdio, args = int(args[1]), args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        sys.stderr.write("usage: python -m agentix.sandbox.confine [--run prog.py | [--stdio FD] --] argv...\n")
        raise SystemExit(2)
    apply_from_env()
    if stdio is not None:  # the program's stdin and stdout become descriptor FD (an MCP server's socket)
        os.dup2(stdio, 0)
        os.dup2(stdio, 1)
        os.close(stdio)
    try:
        os.execvp(args[0], args)
    except OSError as err:
        sys.stderr.write(f"agentix confine: cannot execute {args[0]}: {err}\n")
        raise SystemExit(127) from None


if __name__ == "__main__":
    main()
