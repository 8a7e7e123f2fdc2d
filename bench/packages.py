"""Benchmark: agent packages (docs/packages.md).

1. cold build of a 10 MB agent (half compressible text, half random bytes);
2. unchanged rebuild (layer cache; goal <= 5% of the cold build);
3. push + pull + verify + spawn to the first system call through a loopback docker-registry,
   against spawning the same program from a directory plus the transfer time at loopback
   speed (goal <= 2x). The transfer time is measured in the same run, with a bare client
   (``requests``, one connection set up before the timing, the bytes already in memory), two
   ways, both printed and both in the JSON:

   * ``baseline_ms`` / ``package_vs_baseline`` (since session 7): down + up. Down
     (``loopback_down_ms``): a plain GET of every blob of the package. Up
     (``loopback_up_ms``): the registry ingesting a blob of the same size with the bare
     client's fewest round trips — POST (open an upload) then one PUT of the whole blob with
     its digest (the registry, distribution 2.8, has no single-POST upload: it answers 202
     and ignores the body) — for every blob of the package, one after another, to a fresh
     repository; each blob with its last 8 bytes replaced by random ones, so the registry has
     never seen it (as the package path's push of a new layer; nor does that push find these
     bytes on the registry).
   * ``baseline_2get_ms`` / ``package_vs_baseline_2get`` (sessions 5-6's definition): the
     GETs counted twice, as if sending the bytes up cost what fetching them down does
     (``loopback_transfer_ms``); it understates the upload, which the registry itself makes
     several times slower than the download on loopback.

   Every run changes one file of
   the agent (4 KiB of fresh random bytes) and pushes it under a new name, so its layer is
   new: every byte is sent, pulled, verified and unpacked (nothing is mounted from an
   earlier push or found in the kernel's unpacked cache). The first run is also reported on
   its own (``*_first_run``: it also pays the registry client's first import). Then the last
   run's package is pushed once more, unchanged, to another repository
   (``push_same_content_ms``): the publisher's record of pushed blobs
   (``registry/pushed/``, docs/packages.md) lets it *mount* the blobs, no bytes sent.

4. snapshot + restore of a live agent whose workspace holds 1,000 files / 100 MB (half
   compressible text, half random bytes): ``snapshot.create`` (freeze, pack, store, resume)
   plus ``snapshot.restore`` (verify, unpack, spawn) against ``tar -cf`` plus ``tar -xf`` of
   the same tree in the same run (goal <= 2x). Also the CPU time each side took (``*_cpu_ms``:
   the kernel daemon's user + system time, all its threads, read from /proc; `tar`'s from
   its rusage): on a loaded host wall times swing 2x from run to run, CPU time much less.
   The restored agent's own start (its interpreter, in its own process) is not in the
   kernel's CPU figure; it is in the wall time.

Starts: a kernel daemon (``bench/_daemon.py``, degraded isolation) and a loopback
``docker-registry`` process (a second kernel daemon for the snapshot case); builds run in
this process. Last line: one JSON object.

    python bench/packages.py [--mb 10] [--runs 5] [--isolation degraded]
                             [--snap-files 1000] [--snap-mb 100] [--only snapshot]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import requests

sys.path.insert(0, str(Path(__file__).parent))
from _daemon import BenchKernel, pct  # noqa: E402

from agentix.core.package import parse_ref  # noqa: E402
from agentix.packages.service import PackageStore  # noqa: E402

AGENT = '''
import time
t_call = time.perf_counter_ns()
from agentix.sdk import agent
k = agent.connect()
t_call = time.perf_counter_ns()
k.info()
k.exit({"first_call": t_call})
'''

AGENTFILE = """\
apiVersion: agentix/v1
metadata: {name: bench, version: 1.0.0}
stages:
  - steps:
      - copy: agent
agent: {program: agent}
capabilities: ["tool: echo"]
"""


def make_agent(root: Path, mb: int) -> Path:
    rng = random.Random(0)
    d = root / "agent"
    (d / "data").mkdir(parents=True)
    (d / "__main__.py").write_text(AGENT)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(2000)]
    per_file = 256 << 10
    for i in range(mb * (1 << 20) // per_file):
        if i % 2:
            data = rng.randbytes(per_file)
        else:
            data = b" ".join(rng.choice(words) for _ in range(per_file // 5))[:per_file]
        (d / "data" / f"f{i:03d}.bin").write_bytes(data)
    (root / "Agentfile").write_text(AGENTFILE)
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_registry(tmp: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cfg = tmp / "registry.yml"
    cfg.write_text(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {tmp / 'reg'}\n"
                   f"http:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen(["docker-registry", "serve", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=0.5)
            return proc, f"127.0.0.1:{port}"
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)


SLEEPER = "import time\nfrom agentix.sdk import agent\nk = agent.connect()\ntime.sleep(3600)\n"


def fill_tree(root: Path, files: int, mb: int) -> None:
    """``files`` files of ``mb`` MB in all, in 20 directories: half text, half random bytes."""
    rng = random.Random(1)
    per = mb * 2**20 // files
    text = (b"the quick brown fox jumps over the lazy agent\n" * (per // 46 + 1))[:per]
    for i in range(files):
        d = root / f"d{i % 20:02d}"
        d.mkdir(exist_ok=True)
        (d / f"f{i:04d}.dat").write_bytes(text if i % 2 else rng.randbytes(per))


def bench_snapshots(args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    bk = BenchKernel(args.isolation)
    k = bk.client
    try:
        (tmp / "sleeper.py").write_text(SLEEPER)
        a = k.spawn(program=str(tmp / "sleeper.py"), name="snap")
        ws = Path(k.status(a.agent_id).raw["workspace"])
        fill_tree(ws, args.snap_files, args.snap_mb)
        snap, restore, tar_c, tar_x = [], [], [], []
        cpu_ours, cpu_tar = [], []
        for i in range(args.runs):
            c = daemon_cpu(bk.proc.pid)
            t = time.perf_counter_ns()
            s = k.call("snapshot.create", agent=a.agent_id, tag=f"snapshots/bench:r{i}")
            snap.append(ms(t))
            t = time.perf_counter_ns()
            r = k.call("snapshot.restore", ref=s["ref"])
            restore.append(ms(t))
            cpu_ours.append(daemon_cpu(bk.proc.pid) - c)
            k.kill(r["agent_id"])
            out = tmp / f"tree{i}.tar"
            c = children_cpu()
            t = time.perf_counter_ns()
            subprocess.run(["tar", "-cf", str(out), "-C", str(ws), "."], check=True)
            tar_c.append(ms(t))
            dest = tmp / f"untar{i}"
            dest.mkdir()
            t = time.perf_counter_ns()
            subprocess.run(["tar", "-xf", str(out), "-C", str(dest)], check=True)
            tar_x.append(ms(t))
            cpu_tar.append(children_cpu() - c)
            out.unlink()
            shutil.rmtree(dest)
            k.call("package.rm", ref=s["ref"])
        layer_mb = round(s["size"] / 2**20, 1)
    finally:
        bk.close()
    p50 = lambda xs: round(pct(xs, 50), 1)  # noqa: E731
    ours = [x + y for x, y in zip(snap, restore)]
    tar = [x + y for x, y in zip(tar_c, tar_x)]
    return {"snap_files": args.snap_files, "snap_mb": args.snap_mb, "snap_layer_mb": layer_mb,
            "snapshot_ms": p50(snap), "restore_ms": p50(restore), "snapshot_restore_ms": p50(ours),
            "tar_c_ms": p50(tar_c), "tar_x_ms": p50(tar_x), "tar_ms": p50(tar),
            "snapshot_vs_tar": round(pct(ours, 50) / pct(tar, 50), 2), "snapshot_goal": 2.0,
            "snapshot_restore_cpu_ms": p50(cpu_ours), "tar_cpu_ms": p50(cpu_tar),
            "snapshot_vs_tar_cpu": round(pct(cpu_ours, 50) / pct(cpu_tar, 50), 2)}


def daemon_cpu(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), in ms (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """User + system CPU time of this process's waited-for children, in ms."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (r.ru_utime + r.ru_stime) * 1000


def bare_upload(sess: requests.Session, host: str, repo: str, blobs: list[bytes]) -> float:
    """Milliseconds for the registry to take ``blobs`` from a bare client, one after another:
    POST (open an upload), then one PUT of the whole blob with its digest."""
    t = time.perf_counter_ns()
    for data in blobs:
        r = sess.post(f"http://{host}/v2/{repo}/blobs/uploads/")
        r.raise_for_status()
        loc = r.headers["Location"]
        loc = loc if loc.startswith("http") else f"http://{host}{loc}"
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        r = sess.put(f"{loc}{'&' if '?' in loc else '?'}digest={digest}", data=data,
                     headers={"Content-Type": "application/octet-stream"})
        if r.status_code != 201:
            raise RuntimeError(f"bare upload to {repo}: HTTP {r.status_code} {r.text[:200]}")
    return ms(t)


def ms(t0: int) -> float:
    return (time.perf_counter_ns() - t0) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=10)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--isolation", default="degraded")
    ap.add_argument("--snap-files", type=int, default=1000)
    ap.add_argument("--snap-mb", type=int, default=100)
    ap.add_argument("--only", choices=["packages", "snapshot"])
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="axpkg-", dir="/tmp"))
    if args.only == "snapshot":
        try:
            snap = bench_snapshots(args, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _print_snapshots(snap, args.runs)
        print(json.dumps({"bench": "packages", "runs": args.runs, "isolation": args.isolation, **snap}))
        return
    reg_proc, host = start_registry(tmp)
    bk = None
    try:
        ctx = make_agent(tmp / "ctx", args.mb)
        cold, warm = [], []
        for i in range(args.runs):
            store = PackageStore(tmp / f"build{i}")
            t = time.perf_counter_ns()
            r = store.build(ctx, f"{host}/bench/agent:1.0.0")
            cold.append(ms(t))
            t = time.perf_counter_ns()
            r2 = store.build(ctx, f"{host}/bench/agent:1.0.0")
            warm.append(ms(t))
            assert r2.digest == r.digest and all(r2.cached)
        size = sum(int(x["size"]) for x in store.inspect(f"{host}/bench/agent:1.0.0")["layers"])

        # publisher: sign and push (fresh repository per run so nothing is deduplicated)
        store.keys.generate("bench")
        pub = store.keys.describe("bench")["public_key"]
        bk = BenchKernel(args.isolation)
        k = bk.client
        k.call("trust.add", key=pub, pattern=f"{host}/bench/*")
        push, pull, run_first, dir_first, down, up = [], [], [], [], [], []
        for i in range(args.runs):
            ref = f"{host}/bench/agent{i}:1.0.0"
            (ctx / "agent" / "data" / "run.bin").write_bytes(random.randbytes(4096))  # new content
            store.build(ctx, ref)
            store.sign(ref, "bench")
            t = time.perf_counter_ns()
            store.push(ref)
            push.append(ms(t))
            t = time.perf_counter_ns()
            k.call("package.pull", ref=ref)
            pull.append(ms(t))
            t = time.perf_counter_ns()
            a = k.call("package.run", ref=ref, accept="all")
            res = k.wait(a["agent_id"], timeout=60)
            run_first.append((res.result["first_call"] - t) / 1e6)
            # the same program from a directory
            t = time.perf_counter_ns()
            a = k.spawn(program=str(ctx / "agent"), name="dir")
            res = k.wait(a.agent_id, timeout=60)
            dir_first.append((res.result["first_call"] - t) / 1e6)
            # loopback transfer with a bare client: GET every blob once (down), and POST + one
            # PUT of a fresh blob of each one's size to a fresh repository (up)
            desc = store.layout.resolve(parse_ref(ref))
            m = json.loads(store.layout.read_blob(desc.digest))
            blobs = [m["config"], *m["layers"]]
            with requests.Session() as sess:
                sess.get(f"http://{host}/v2/").raise_for_status()  # connection set up outside the timing
                t = time.perf_counter_ns()
                for b in blobs:
                    with sess.get(f"http://{host}/v2/bench/agent{i}/blobs/{b['digest']}", stream=True) as r:
                        r.raise_for_status()
                        for _ in r.iter_content(1 << 20):
                            pass
                down.append(ms(t))
                fresh = [store.layout.read_blob(b["digest"], 1 << 30) for b in blobs]
                fresh = [d[:-8] + random.randbytes(8) if len(d) >= 8 else d for d in fresh]
                up.append(bare_upload(sess, host, f"bench/bare{i}", fresh))
        again = f"{host}/bench/again:1.0.0"  # the last package, unchanged, to another repository
        store.build(ctx, again)
        store.sign(again, "bench")
        t = time.perf_counter_ns()
        store.push(again)
        push_same = ms(t)
        if bk is not None:
            bk.close()
            bk = None
        snap = bench_snapshots(args, tmp) if args.only is None else {}
    finally:
        if bk is not None:
            bk.close()
        reg_proc.terminate()
        reg_proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    p50 = lambda xs: round(pct(xs, 50), 1)  # noqa: E731
    total = [a + b + c for a, b, c in zip(push, pull, run_first)]
    transfer = [2 * x for x in down]  # sessions 5-6: the GETs counted up and down
    baseline_2get = [a + b for a, b in zip(dir_first, transfer)]
    baseline = [a + b + c for a, b, c in zip(dir_first, down, up)]
    result = {
        "bench": "packages", "agent_mb": args.mb, "compressed_mb": round(size / 2**20, 2), "runs": args.runs,
        "isolation": args.isolation,
        "build_cold_ms": p50(cold), "build_unchanged_ms": p50(warm),
        "rebuild_ratio": round(pct(warm, 50) / pct(cold, 50), 3), "rebuild_goal": 0.05,
        "push_ms": p50(push), "pull_verify_ms": p50(pull), "run_to_first_call_ms": p50(run_first),
        "package_total_ms": p50(total),
        "dir_spawn_first_call_ms": p50(dir_first), "loopback_down_ms": p50(down), "loopback_up_ms": p50(up),
        "baseline_ms": p50(baseline), "package_vs_baseline": round(pct(total, 50) / pct(baseline, 50), 2),
        "loopback_transfer_ms": p50(transfer), "baseline_2get_ms": p50(baseline_2get),
        "package_vs_baseline_2get": round(pct(total, 50) / pct(baseline_2get, 50), 2),
        "package_vs_dir_spawn_only": round(pct(total, 50) / pct(dir_first, 50), 2),
        "push_ms_first_run": round(push[0], 1), "run_to_first_call_ms_first_run": round(run_first[0], 1),
        "package_total_ms_first_run": round(total[0], 1), "push_same_content_ms": round(push_same, 1),
        "package_vs_baseline_first_run": round(total[0] / baseline[0], 2),
        "package_goal": 2.0, **snap,
    }
    rows = [("cold build", result["build_cold_ms"]), ("unchanged rebuild", result["build_unchanged_ms"]),
            ("push (signed)", result["push_ms"]), ("pull + verify", result["pull_verify_ms"]),
            ("run: verify + unpack + spawn -> 1st call", result["run_to_first_call_ms"]),
            ("= package path", result["package_total_ms"]),
            ("spawn from a directory -> 1st call", result["dir_spawn_first_call_ms"]),
            ("loopback down (GET every blob)", result["loopback_down_ms"]),
            ("loopback up (POST + PUT every blob)", result["loopback_up_ms"]),
            ("= baseline", result["baseline_ms"]),
            ("old: loopback transfer (2 x down)", result["loopback_transfer_ms"]),
            ("= old baseline (dir spawn + 2 x down)", result["baseline_2get_ms"])]
    print(f"{'case (p50 of ' + str(args.runs) + ')':<44}{'ms':>10}")
    for name, v in rows:
        print(f"{name:<44}{v:>10.1f}")
    print(f"rebuild / cold build: {result['rebuild_ratio']:.3f} (goal <= 0.05); "
          f"package / baseline: {result['package_vs_baseline']:.2f} (goal <= 2; "
          f"{result['package_vs_baseline_2get']:.2f} against the old baseline); first run alone "
          f"(nothing local yet, push {result['push_ms_first_run']:.1f} ms): "
          f"{result['package_total_ms_first_run']:.1f} ms = "
          f"{result['package_vs_baseline_first_run']:.2f}x its baseline; the same package pushed again "
          f"to another repository (blobs mounted): {result['push_same_content_ms']:.1f} ms")
    if snap:
        _print_snapshots(snap, args.runs)
    print(json.dumps(result))


def _print_snapshots(snap: dict[str, object], runs: int) -> None:
    print(f"{'snapshot ' + str(snap['snap_files']) + ' files / ' + str(snap['snap_mb']) + ' MB (p50 of ' + str(runs) + ')':<44}{'ms':>10}")
    for name, key in (("snapshot (freeze, pack, store, resume)", "snapshot_ms"),
                      ("restore (verify, unpack, spawn)", "restore_ms"), ("= snapshot + restore", "snapshot_restore_ms"),
                      ("tar -cf", "tar_c_ms"), ("tar -xf", "tar_x_ms"), ("= tar", "tar_ms")):
        print(f"{name:<44}{snap[key]:>10.1f}")
    print(f"snapshot + restore / tar: {snap['snapshot_vs_tar']:.2f} (goal <= 2); CPU time: kernel "
          f"{snap['snapshot_restore_cpu_ms']:.0f} ms / tar {snap['tar_cpu_ms']:.0f} ms = {snap['snapshot_vs_tar_cpu']:.2f}")


if __name__ == "__main__":
    main()
