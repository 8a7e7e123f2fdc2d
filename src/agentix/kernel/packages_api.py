"""The kernel's package methods (operator only). See docs/packages.md.

    package.build  package.sign  package.push  package.pull  package.verify  package.run
    package.list  package.inspect  package.rm  package.gc
    keys.generate  keys.list  trust.add  trust.allow_unsigned  trust.list

Each method's policy is its row in the method table (``kernel/methods.py``); in short —
resources touched; recorded; durability:

    method                 touches                                      recorded  effect outside the kernel
    package.build          reads the operator's build dir; writes registry/;  yes       yes (pulls dependencies;
                           a registry (dependencies); declared build hosts               a step's declared hosts)
    package.sign           reads keys/signing/; writes registry/               yes       no
    package.push           reads registry/; a remote registry                  yes       yes (network write)
    package.pull           a remote registry; writes registry/, versions       yes       yes (network read)
    package.verify         reads registry/, trust policy                       no        no
    package.run            (pull) + registry/, versions; spawns an agent       yes       yes (a process)
    package.list/inspect   reads registry/                                     no        no
    package.rm             writes registry/                                    yes       no
    package.gc             writes registry/ (blobs no tag reaches)             yes       no
    keys.generate          writes keys/signing/                                yes       no
    keys.list/trust.list   reads keys/, trust policy                           no        no
    trust.add/allow_unsigned  writes the trust policy                          yes       no

Every refusal (a rejected package, a registry failure, an accepted grant that the package
does not declare) is recorded with its reason; accepting an unsigned package because the
policy allows it is recorded as ``package.unsigned_accepted``; a run records what the
package declared, what the operator accepted and what the agent was given
(``package.accepted``). The blocking work (tar, gzip, HTTP) runs in a thread.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentix.core.errors import InvalidRequest, NotFound
from agentix.core.foreign import cap_foreign
from agentix.core.manifest import parse_manifest
from agentix.core.package import parse_ref
from agentix.kernel.config import KernelConfig
from agentix.kernel.dispatch import Call, EventSink, Pipeline, naming_params
from agentix.kernel.home import Home
from agentix.kernel.methods import method
from agentix.kernel.spawn import Spawner
from agentix.packages.service import PackageStore, Prepared
from agentix.sandbox.base import Substrate
from agentix.tools.thread_work import locked_in_thread

__all__ = ["register", "METHODS"]

#: (name, recorded) — see the policy table in the module docstring
METHODS: list[tuple[str, bool]] = [
    ("package.build", True), ("package.sign", True), ("package.push", True), ("package.pull", True),
    ("package.verify", False), ("package.run", True), ("package.list", False),
    ("package.inspect", False), ("package.rm", True), ("package.gc", True), ("keys.generate", True),
    ("keys.list", False),
    ("trust.add", True), ("trust.allow_unsigned", True), ("trust.list", False),
]


def _str(params: dict[str, Any], key: str, what: str, default: Any = ...) -> Any:
    val = params.get(key, default)
    if val is ...:
        raise InvalidRequest(f'missing parameter "{key}" ({what})', field=key)
    if val is not None and val is not default and not isinstance(val, str):
        raise InvalidRequest(f'parameter "{key}" must be {what}', field=key)
    return val


def register(p: Pipeline, *, store: PackageStore, lock: asyncio.Lock, events: EventSink, home: Home,
             config: KernelConfig, substrate: Substrate, spawner: Spawner) -> None:
    """Add the package methods to ``p``. ``lock``: one writer of the local ``store`` at a time,
    shared with kernel/snapshots_api.py; build steps run on ``substrate`` under ``config``'s
    limits (their output under ``home``); ``package.run`` starts the agent with ``spawner``."""

    recorded = naming_params(("ref", "tag", "context", "key", "pattern", "name", "accept"))

    async def in_thread(fn: Any, *a: Any, **kw: Any) -> Any:
        return await locked_in_thread(lock, lambda: fn(*a, **kw))  # held until the thread ends

    async def build(call: Call) -> dict[str, Any]:
        ctx = Path(_str(call.params, "context", "the build directory (absolute)"))
        if not ctx.is_absolute():
            raise InvalidRequest("context must be an absolute path", field="context")
        af = _str(call.params, "agentfile", "a path", None)
        loop = asyncio.get_running_loop()

        def runner(argv: list[str], workdir: Path, timeout: float, hosts: tuple[str, ...]) -> tuple[int | None, str]:
            return asyncio.run_coroutine_threadsafe(
                _run_sandboxed(argv, workdir, timeout, hosts, home=home, config=config, substrate=substrate,
                               events=events), loop).result()

        r = await in_thread(store.build, ctx, _str(call.params, "tag", "NAME:TAG"), Path(af) if af else None,
                            runner)
        out = {"ref": str(r.ref), "digest": r.digest, "layers": list(r.layers), "cached": list(r.cached)}
        pinned = [{"name": d["name"], "version": d["version"], "digest": d["digest"]}
                  for d in (r.config.get("dependencies") or {}).get("packages", [])]
        if pinned:
            out["dependencies"] = pinned
        call.event_data = {"ref": out["ref"], "digest": r.digest,
                                   "capabilities": r.config.get("capabilities", []), "dependencies": pinned}
        for v in r.verdicts:  # the base and the package dependencies, as `run` records them
            await _note_unsigned(_verdict(v))
        return out

    async def sign(call: Call) -> dict[str, Any]:
        r = await in_thread(store.sign, _str(call.params, "ref", "a package reference"),
                            _str(call.params, "key", "a signing key name"))
        call.event_data = dict(r)
        return r

    async def push(call: Call) -> dict[str, Any]:
        r = await in_thread(store.push, _str(call.params, "ref", "a package reference"))
        call.event_data = dict(r)
        return r

    async def pull(call: Call) -> dict[str, Any]:
        r = await in_thread(store.pull, _str(call.params, "ref", "a package reference"),
                            allow_rollback=bool(call.params.get("allow_rollback")))
        call.event_data = {"ref": r["ref"], "digest": r["digest"], **r["verdict"]}
        await _note_unsigned(r["verdict"])
        return r

    async def _note_unsigned(verdict: dict[str, Any]) -> None:
        if verdict.get("basis") == "unsigned_allowed":
            await events.record("package.unsigned_accepted", None, {
                "name": verdict["name"], "version": verdict["version"], "digest": verdict["digest"]})

    async def verify(call: Call) -> dict[str, Any]:
        v = await in_thread(store.verify, _str(call.params, "ref", "a package reference"),
                            allow_rollback=bool(call.params.get("allow_rollback")))
        return {"basis": v.basis, "keyid": v.keyid, "rollback": v.rollback_allowed, **v.statement.to_data()}

    async def run(call: Call) -> dict[str, Any]:
        ref_text = _str(call.params, "ref", "a package reference")
        ref = parse_ref(ref_text)
        accept = call.params.get("accept")
        if accept != "all" and not (isinstance(accept, list) and all(isinstance(x, str) for x in accept)):
            raise InvalidRequest('"accept" must be "all" or a list of grant strings the operator '
                                 "accepts (see the package's declared capabilities)", field="accept")
        allow_rollback = bool(call.params.get("allow_rollback"))
        dest = store.layout.tmp / f"run-{secrets.token_hex(6)}"

        def fetch_and_prepare() -> tuple[dict[str, Any] | None, Prepared]:
            """Pull the package if it is not here, then verify and unpack it: one hold of the
            store's writer, so a package this run pulled and then refused (its unpack, its
            capabilities) is taken out again before anyone else writes: the store is as it was."""
            pulled_ = None
            cp = None
            try:
                store.layout.resolve(ref)
            except NotFound:
                if ref.registry is None:
                    raise
                cp = store.layout.checkpoint()
                pulled_ = store.pull(ref_text, allow_rollback=allow_rollback)
            try:
                return pulled_, store.prepare(ref_text, accept, dest, allow_rollback=allow_rollback)
            except BaseException:
                if cp is not None:
                    store.undo_pull(cp, ref)
                raise

        try:
            pulled, prep = await in_thread(fetch_and_prepare)
            if pulled is not None:
                await _note_unsigned(pulled["verdict"])
            data = dict(prep.manifest)
            name = _str(call.params, "name", "an agent name", None)
            if name:
                data["name"] = name
            # the publisher sized nothing the operator did not accept: limits, budget and
            # memory at most this kernel's defaults (core/foreign.py)
            manifest = cap_foreign(parse_manifest(data), config.limits, _llm_budget())
            verdict = {"basis": prep.verdict.basis, "keyid": prep.verdict.keyid,
                       "rollback": prep.verdict.rollback_allowed, **prep.verdict.statement.to_data()}
            if pulled is None:
                await _note_unsigned(verdict)
            await events.record("package.accepted", None, {
                "ref": str(ref), "digest": prep.digest, "declared": prep.declared,
                "accepted": accept, "granted": data["capabilities"], **verdict})
            # the whole package becomes the new workspace (moved, not copied)
            rec = await spawner.spawn(manifest, message=call.params.get("message"), seed=dest)
        finally:
            await asyncio.to_thread(shutil.rmtree, dest, True)
        call.event_data = {"ref": str(ref), "digest": prep.digest, "agent_id": rec.agent_id}
        return {"agent_id": rec.agent_id, "name": rec.name, "pid": rec.pid, "isolation": rec.isolation,
                "digest": prep.digest, "declared": prep.declared, "granted": data["capabilities"],
                "verdict": verdict, "pulled": pulled is not None}

    async def list_(call: Call) -> dict[str, Any]:
        return {"packages": await asyncio.to_thread(store.list)}

    async def inspect(call: Call) -> dict[str, Any]:
        return await asyncio.to_thread(store.inspect, _str(call.params, "ref", "a package reference"))

    async def rm(call: Call) -> dict[str, Any]:
        r = await in_thread(store.remove, _str(call.params, "ref", "a package reference"))
        call.event_data = dict(r)
        return r

    async def gc(call: Call) -> dict[str, Any]:
        r = await in_thread(store.gc)
        call.event_data = dict(r)
        return r

    async def keys_generate(call: Call) -> dict[str, Any]:
        r = await in_thread(store.keys.generate, _str(call.params, "name", "a key name"))
        call.event_data = dict(r)
        return r

    async def keys_list(call: Call) -> dict[str, Any]:
        return {"keys": await asyncio.to_thread(store.keys.list)}

    async def trust_add(call: Call) -> dict[str, Any]:
        pattern = _str(call.params, "pattern", "a name pattern such as registry.example/team/*")
        r = await in_thread(store.trust_add, _str(call.params, "key", "a public key, key file or key name"),
                            pattern)
        call.event_data = {"pattern": pattern}
        return r

    async def trust_allow_unsigned(call: Call) -> dict[str, Any]:
        pattern = _str(call.params, "pattern", "a name pattern")
        r = await in_thread(store.trust_allow_unsigned, pattern)
        call.event_data = {"pattern": pattern}
        return r

    async def trust_list(call: Call) -> dict[str, Any]:
        return (await asyncio.to_thread(store.trust.policy)).to_data()

    handlers = {
        "package.build": build, "package.sign": sign, "package.push": push, "package.pull": pull,
        "package.verify": verify, "package.run": run, "package.list": list_, "package.inspect": inspect,
        "package.rm": rm, "package.gc": gc, "keys.generate": keys_generate, "keys.list": keys_list,
        "trust.add": trust_add, "trust.allow_unsigned": trust_allow_unsigned, "trust.list": trust_list,
    }
    for name, rec in METHODS:
        fn = handlers[name]
        # the policy of each is its row in the method table (kernel/methods.py)
        p.register(method(name, recorded(fn) if rec else fn, operator=True))


async def _run_sandboxed(argv: list[str], workdir: Path, timeout: float, hosts: tuple[str, ...] = (), *,
                         home: Home, config: KernelConfig, substrate: Substrate,
                         events: EventSink) -> tuple[int | None, str]:
    """Run one build command like ``exec`` runs an agent's: the same substrate, ``workdir`` as
    /workspace, the kernel's default limits — and strict isolation only (a build never runs
    with missing layers, whatever the kernel's isolation setting). No network; or, when the
    step declares ``hosts``, a network namespace with only its loopback, where
    sandbox/netbridge.py carries connections to this kernel's build proxy (kernel/
    build_proxy.py), which lets through only the declared hosts. Its decisions are recorded
    (``package.build_network``)."""
    import os
    import sys
    import tempfile

    from agentix.kernel.build_proxy import BuildProxy

    run_id = "build-" + secrets.token_hex(4)
    out_dir = home.root / "exec"
    out_dir.mkdir(mode=0o700, exist_ok=True)
    out_path = out_dir / f"{run_id}.out"
    if not hosts:
        return await _launch(config, substrate, run_id, argv, workdir, timeout, out_path, ())
    # the proxy's socket, in a directory of its own that the sandbox sees read-only
    net_dir = Path(tempfile.mkdtemp(prefix=f"agentix-{run_id}-"))
    try:
        os.chmod(net_dir, 0o755)
        proxy = BuildProxy(hosts, net_dir / "proxy.sock")
        async with proxy:
            bridged = [sys.executable, "-I", "-B", "-m", "agentix.sandbox.netbridge", str(proxy.path), "--", *argv]
            try:
                return await _launch(config, substrate, run_id, bridged, workdir, timeout, out_path, (net_dir,),
                                     on_start=proxy.serve_only)
            finally:
                refused = sorted({str(d["host"]) for d in proxy.decisions if not d["allowed"]})
                await events.record("package.build_network", None, {
                    "argv": argv[:20], "hosts": list(hosts), "refused": refused,
                    "allowed": sorted({str(d["host"]) for d in proxy.decisions if d["allowed"]}),
                    "strangers": proxy.strangers})
    finally:
        shutil.rmtree(net_dir, ignore_errors=True)


async def _launch(config: KernelConfig, substrate: Substrate, run_id: str, argv: list[str], workdir: Path, timeout: float, out_path: Path,
                  net_dirs: tuple[Path, ...], on_start: Callable[[int], None] | None = None) -> tuple[int | None, str]:
    import sys

    from agentix.core.manifest import Limits
    from agentix.kernel.one_shot import run_once
    from agentix.sandbox.base import LaunchSpec

    # the step's output: a pipe the kernel reads (the first 64 KiB kept), never a kernel file
    # a build command could grow without bound (a hostile Agentfile's `run: yes`)
    def launch(channel_fd: int, output_fd: int) -> LaunchSpec:
        return LaunchSpec(
            agent_id=run_id, name="build", argv=[sys.executable, "-m", "agentix.sandbox.confine", "--", *argv],
            workspace=workdir, env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/workspace",
                                    "SOURCE_DATE_EPOCH": "0"},
            channel_fd=channel_fd, log_path=out_path, output_fd=output_fd,
            limits=config.effective_limits(Limits()),
            network=False, loopback_inet=bool(net_dirs), extra_ro_paths=net_dirs, degraded_ok=False)

    prog = argv[argv.index("--") + 1] if "agentix.sandbox.netbridge" in argv else argv[0]
    done = await run_once(substrate, launch, timeout=timeout, cap=64 << 10, what="build step", program=prog,
                          require_full=True, on_start=on_start)
    return (done.info.code if done.info.signal is None else None), done.output


def _verdict(v: Any) -> dict[str, Any]:
    return {"basis": v.basis, "keyid": v.keyid, "rollback": v.rollback_allowed, **v.statement.to_data()}


def _llm_budget() -> dict[str, int]:
    """The kernel's default token budget for an LLM root (the ceiling of a foreign manifest's)."""
    from agentix.kernel.cap_grants import DEFAULT_LLM_BUDGET

    return DEFAULT_LLM_BUDGET
