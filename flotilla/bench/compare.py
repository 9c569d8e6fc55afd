"""`flotilla bench --compare-etcd`: the same workloads against Flotilla and a
3-member etcd on 127.0.0.1, alternating (A/B/A/B), and the ratios.

Flotilla is `python -m flotilla playground --client-port 0 --data-dir <tmp>`
(with `--shards N` and `--routers N` if given; its endpoints parsed from its
output, `ready` awaited; clients use every endpoint: each store serves etcd
clients itself, and so does each standalone router). etcd is
flotilla/bench/etcd.py's cluster of /usr/bin/etcd.

The workloads are the issue's (#9): put with 256 in flight, put from a single
client, and linearizable and serializable single-key ranges with 64 in
flight; 256-byte values, 8-byte keys from a space of 10,000 (the first range
run on each system fills the key space). Clients use every endpoint of a
system: the playground's stores (and standalone routers), all three etcd members.

With --profile-dir, py-spy records the Flotilla router and store processes
during the first Flotilla put run (collapsed stacks of the samples holding
the GIL, `--gil --nonblocking`), and a
summary of where their time goes is printed. Every run also reports the CPU
seconds each server process used during it (/proc/PID/stat) and, for
Flotilla, the server CPU per request: all of it, and net of what the
servers use idle (measured for a few seconds before the first workload;
idle Raft groups still log a closed timestamp every 200 ms). Running it with
`--shards 1` and `--shards 64` shows whether the cost of a write grows with
the shard count.

The bounded-staleness workload (range-bs) also reads each store's
per-replica read counts (StoreAdmin Status) before and after, and prints
each store's share and the largest share one replica took of its shard's
reads.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from flotilla.bench.etcd import EtcdCluster
from flotilla.bench.workloads import BenchConfig, BenchResult, run

__all__ = ["STANDARD", "Target", "main", "summarize_collapsed"]

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Standard:
    name: str
    title: str
    workload: str
    clients: int
    conns: int
    procs: int
    consistency: str = "l"
    max_staleness_ms: int = 0
    """Flotilla only (gRPC metadata); etcd, which has no bounded staleness,
    runs the workload with `etcd_consistency` instead."""
    etcd_consistency: str = ""


STANDARD = (
    Standard("put256", "put, 256 in flight", "put", clients=256, conns=16, procs=2),
    Standard("put1", "put, 1 client", "put", clients=1, conns=1, procs=1),
    Standard("range-l", "range linearizable, 64 in flight", "range", clients=64, conns=8, procs=2, consistency="l"),
    Standard("range-s", "range serializable, 64 in flight", "range", clients=64, conns=8, procs=2, consistency="s"),
    Standard(
        "range-bs", "range staleness<=500ms (etcd: s), 64 in flight", "range", clients=64, conns=8, procs=2,
        consistency="l", max_staleness_ms=500, etcd_consistency="s",
    ),
)


# -- the systems --------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    endpoints: list[str]
    how: str
    stop_fn: Any = None
    pids: dict[str, int] = field(default_factory=dict)
    """process name -> pid, for py-spy"""
    stores: dict[str, str] = field(default_factory=dict)
    """store process name -> its gRPC address (Flotilla: the per-replica read counts)"""
    filled: bool = False

    def stop(self) -> None:
        if self.stop_fn is not None:
            self.stop_fn()
            self.stop_fn = None


def _children(ppid: int) -> list[tuple[int, str]]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) != ppid:
                continue
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        out.append((int(d), cmd))
    return out


def start_playground(workdir: Path, shards: int = 0, routers: int = 0, timeout_s: float = 90) -> Target:
    data = workdir / "playground"
    log_path = workdir / "playground.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "flotilla", "playground", "--client-port", "0", "--data-dir", str(data)]
        + (["--shards", str(shards)] if shards else [])
        + (["--routers", str(routers)] if routers else []),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=str(workdir),
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:  # keeps draining the pipe after `ready`, into the log
        assert proc.stdout is not None
        with open(log_path, "a") as logf:
            for line in proc.stdout:
                logf.write(line)
                logf.flush()
                lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, name="playground-stdout", daemon=True).start()

    def stop() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    endpoints: list[str] = []
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"playground not ready in {timeout_s} s; see {log_path}") from None
            if line is None:
                raise RuntimeError(f"playground exited with {proc.wait()}; see {log_path}")
            m = re.match(r"endpoints:\s*(\S+)", line.strip())
            if m:
                endpoints = m.group(1).split(",")
            if line.strip() == "ready":
                break
    except BaseException:
        stop()
        raise
    if not endpoints:
        stop()
        raise RuntimeError(f"playground printed no `endpoints:` line; see {log_path}")
    pids, stores = {}, {}
    for pid, cmd in _children(proc.pid):
        role = "store" if "--store" in cmd else "router" if "--router" in cmd else "placement" if "--placement" in cmd else "other"
        m = re.search(r"--node-id (\d+)", cmd)
        pids[f"{role}-{m.group(1) if m else pid}"] = pid
        listen = re.search(r"--listen (\S+)", cmd)
        if role == "store" and listen:
            stores[f"{role}-{m.group(1) if m else pid}"] = listen.group(1)
    return Target("flotilla", endpoints, f"playground (pid {proc.pid}, data {data})", stop, pids, stores)


def start_etcd(workdir: Path, etcd_bin: str) -> Target:
    c = EtcdCluster(workdir / "etcd", etcd_bin=etcd_bin)
    c.start()
    version = subprocess.run([etcd_bin, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    pids = {m.name: m.proc.pid for m in c.members if m.proc is not None}
    return Target("etcd", c.endpoints, f"3 members of {etcd_bin} ({' '.join(version)})", c.stop, pids)


# -- profiling ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_role(pids: dict[str, int], before: dict[str, float]) -> dict[str, float]:
    return {name: round(cpu_seconds(pid) - before.get(name, 0.0), 2) for name, pid in pids.items()}


def idle_cpu(pids: dict[str, int], seconds: float = 3.0) -> float:
    """CPU seconds per second the processes use together while nothing
    drives them."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    t0 = time.monotonic()
    time.sleep(seconds)  # sleep-ok: the measuring window itself, nothing to wait for
    used = sum(cpu_by_role(pids, before).values())
    return used / (time.monotonic() - t0)


def cpu_per_op_ms(cpu: dict[str, float], wall_s: float, idle_per_s: float, ops: int) -> tuple[float, float]:
    """Server CPU per request in ms: all of it, and net of the idle rate over
    the same wall time."""
    if ops <= 0:
        return 0.0, 0.0
    total = sum(cpu.values())
    return 1000 * total / ops, 1000 * max(0.0, total - idle_per_s * wall_s) / ops


def start_profilers(pids: dict[str, int], out_dir: Path, duration_s: float) -> list[tuple[str, subprocess.Popen[bytes], Path]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    # py-spy is installed beside this interpreter (the project's venv), which
    # need not be on PATH when flotilla is run as .venv/bin/flotilla.
    beside = Path(sys.executable).parent / "py-spy"
    py_spy = str(beside) if beside.exists() else (shutil.which("py-spy") or "py-spy")
    procs = []
    for name, pid in pids.items():
        if not (name.startswith("router") or name.startswith("store")):
            continue
        path = out_dir / f"{name}.collapsed.txt"
        p = subprocess.Popen(
            [py_spy, "record", "--pid", str(pid), "--duration", str(max(1, int(duration_s))), "--rate", "100",
             "--format", "raw", "--nonblocking", "--gil", "--output", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=open(out_dir / f"{name}.py-spy.log", "wb"),
        )
        procs.append((name, p, path))
    return procs


_WRAPPER = re.compile(
    r"^(<module>|_run_module_as_main|_run_code|run|main|Runner\.run|BaseEventLoop\.(run_forever|run_until_complete|_run_once)"
    r"|Thread\.(run|_bootstrap|_bootstrap_inner)|_worker|_WorkItem\.run|Handle\._run) "
)
"""Frames every sample of a thread has (the interpreter's and the loop's own): left out of the inclusive list."""


def summarize_collapsed(text: str, top: int = 12) -> dict[str, Any]:
    """py-spy's raw (collapsed) output -> total samples, the top functions by
    own samples, and by samples that have them anywhere on the stack."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        frames = [re.sub(r" \((.*?):\d+\)$", r" (\1)", f) for f in stack.split(";")]
        # keep "function (file)" without line numbers so a function is one row
        frames = [re.sub(r"^(\S+) \(.*/(?:site-packages|lib/python3\.\d+)/", r"\1 (", f.replace(f"({REPO}/", "(")) for f in frames]
        total += count
        own[frames[-1]] += count
        for f in set(frames):
            if not _WRAPPER.search(f):
                incl[f] += count
    return {"samples": total, "own": own.most_common(top), "inclusive": incl.most_common(top)}


def _print_profile(name: str, path: Path, out: TextIO) -> None:
    if not path.exists():
        out.write(f"  {name}: no profile ({path.with_suffix('').with_suffix('')}.py-spy.log)\n")
        return
    s = summarize_collapsed(path.read_text(errors="replace"))
    total = s["samples"] or 1
    out.write(f"\n  {name}: {s['samples']} samples ({path})\n    own time:\n")
    for f, n in s["own"]:
        out.write(f"      {100 * n / total:5.1f}%  {f}\n")
    out.write("    inclusive:\n")
    for f, n in s["inclusive"]:
        out.write(f"      {100 * n / total:5.1f}%  {f}\n")


# -- the comparison -----------------------------------------------------------------------------


def replica_reads(stores: dict[str, str]) -> dict[tuple[int, str], int]:
    """(shard, store) -> range requests that replica received so far, by
    each store's admin Status (a store that does not answer is left out)."""
    import grpc

    from flotillapb import store_pb2 as spb
    from flotillapb import store_pb2_grpc

    out: dict[tuple[int, str], int] = {}
    for name, address in stores.items():
        with grpc.insecure_channel(address) as ch:
            try:
                st = store_pb2_grpc.StoreAdminStub(ch).Status(spb.StoreStatusRequest(), timeout=10)
            except grpc.RpcError:
                continue
        for sh in st.shards:
            out[(sh.descriptor.shard_id, name)] = sh.reads
    return out


def read_spread(before: dict[tuple[int, str], int], after: dict[tuple[int, str], int]) -> dict[str, Any]:
    """How the reads of one run spread over replicas: each store's share of
    all of them, and the largest share one replica took of its shard's."""
    delta = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0) > 0}
    total = sum(delta.values())
    by_store: Counter[str] = Counter()
    by_shard: Counter[int] = Counter()
    for (sid, name), n in delta.items():
        by_store[name] += n
        by_shard[sid] += n
    worst = max((n / by_shard[sid] for (sid, _), n in delta.items()), default=0.0)
    return {
        "reads": total,
        "store_share": {name: round(n / total, 3) for name, n in sorted(by_store.items())} if total else {},
        "max_replica_share_of_its_shard": round(worst, 3),
    }


def _cfg(std: Standard, target: Target, args: argparse.Namespace) -> BenchConfig:
    etcd = target.name == "etcd"
    return BenchConfig(
        workload=std.workload,
        endpoints=tuple(target.endpoints),
        clients=std.clients,
        conns=std.conns,
        procs=std.procs,
        duration_s=args.duration,
        key_size=args.key_size,
        val_size=args.val_size,
        key_space=args.key_space,
        consistency=std.etcd_consistency if etcd and std.etcd_consistency else std.consistency,
        max_staleness_ms=0 if etcd else std.max_staleness_ms,
        timeout_s=args.timeout,
        seed=args.seed,
    )


def _cell(rs: list[BenchResult]) -> str:
    return "/".join(f"{r.throughput:.0f}" for r in rs)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def main(args: argparse.Namespace) -> int:
    out = sys.stdout
    only = [s for s in args.only.split(",") if s] if args.only else [s.name for s in STANDARD]
    chosen = [s for s in STANDARD if s.name in only]
    if not chosen:
        raise SystemExit(f"flotilla bench: --only names none of {', '.join(s.name for s in STANDARD)}")
    if not os.access(args.etcd_bin, os.X_OK):
        raise SystemExit(f"flotilla bench: no etcd at {args.etcd_bin}; run scripts/install_bench_deps.sh")
    tmp = None
    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="flotilla-bench-")
        workdir = Path(tmp.name)
    targets: list[Target] = []
    results: dict[tuple[str, str], list[BenchResult]] = {}
    cpus: dict[tuple[str, str], list[dict[str, float]]] = {}
    spreads: dict[str, list[dict[str, Any]]] = {}
    per_ops: dict[tuple[str, str], list[tuple[float, float]]] = {}
    idle: dict[str, float] = {}
    profiled: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    try:
        out.write("starting Flotilla ...\n")
        out.flush()
        fl = start_playground(workdir, args.shards, args.routers)
        targets.append(fl)
        out.write(f"  flotilla: {fl.how}; endpoints {','.join(fl.endpoints)}\n")
        out.write("starting etcd ...\n")
        out.flush()
        et = start_etcd(workdir, args.etcd_bin)
        targets.append(et)
        out.write(f"  etcd: {et.how}; endpoints {','.join(et.endpoints)}\n")
        idle = {t.name: idle_cpu(t.pids) for t in targets}
        out.write("  idle server cpu: " + ", ".join(f"{n} {v:.2f} cpu-s/s" for n, v in idle.items()) + "\n")
        out.write(
            f"workloads: {args.duration:g} s each, {args.rounds} round(s) alternating flotilla/etcd; "
            f"key-size {args.key_size}, val-size {args.val_size}, key-space {args.key_space}; cpus {os.cpu_count()}\n\n"
        )
        out.flush()
        progress = sys.stderr.isatty() if args.progress == "auto" else args.progress == "on"
        for std in chosen:
            for rnd in range(args.rounds):
                for t in (fl, et):
                    cfg = _cfg(std, t, args)
                    if std.workload == "range" and not t.filled:
                        cfg = replace(cfg, prefill=True)
                        t.filled = True
                    profile = bool(args.profile_dir and std.name == "put256" and t is fl and not profiled)
                    mark: dict[str, Any] = {}

                    def on_start(t: Target = t, profile: bool = profile, mark: dict[str, Any] = mark) -> None:
                        # the baseline once the clients are connected (and prefilled)
                        mark["cpu"] = {name: cpu_seconds(pid) for name, pid in t.pids.items()}
                        mark["t"] = time.monotonic()
                        if profile:
                            profiled.extend(start_profilers(t.pids, Path(args.profile_dir), args.duration - 1))

                    reads0 = replica_reads(t.stores) if std.max_staleness_ms and t.stores else None
                    r = run(cfg, progress=progress, on_start=on_start)
                    cpu = cpu_by_role(t.pids, mark["cpu"])
                    per_op = cpu_per_op_ms(cpu, time.monotonic() - mark["t"], idle[t.name], r.ops)
                    per_ops.setdefault((std.name, t.name), []).append(per_op)
                    spread = read_spread(reads0, replica_reads(t.stores)) if reads0 is not None else None
                    if spread is not None:
                        spreads.setdefault(std.name, []).append(spread)
                    results.setdefault((std.name, t.name), []).append(r)
                    cpus.setdefault((std.name, t.name), []).append(cpu)
                    out.write(
                        f"  {std.name:8s} round {rnd + 1} {t.name:8s} {r.throughput:8.0f} ops/s  "
                        f"p50 {r.latency.p50_ms:7.2f} ms  p99 {r.latency.p99_ms:7.2f} ms  errors {r.error_count}"
                        + (f" {r.errors} e.g. {r.first_errors[:1]}" if r.error_count else "")
                        + f"  server cpu s ({r.elapsed_s:.1f} s run): "
                        + " ".join(f"{n}={c:.1f}" for n, c in cpu.items() if c >= 0.05)
                        + f"; per request {per_op[0]:.2f} ms, net of idle {per_op[1]:.2f} ms\n"
                    )
                    if spread is not None:
                        out.write(
                            f"           reads by replica: {spread['reads']} received, per store "
                            + " ".join(f"{n}={v:.0%}" for n, v in spread["store_share"].items())
                            + f"; largest share of one replica in its shard {spread['max_replica_share_of_its_shard']:.0%}\n"
                        )
                    out.flush()
    finally:
        for _, p, _ in profiled:
            try:
                p.wait(timeout=args.duration + 30)
            except subprocess.TimeoutExpired:
                p.kill()
        for t in reversed(targets):
            t.stop()
        if tmp is not None:
            tmp.cleanup()

    out.write("\n")
    hdr = (
        f"{'workload':36s} {'flotilla ops/s':>16s} {'etcd ops/s':>16s} {'ratio':>6s}   "
        f"{'p50 ms F/E':>13s} {'p99 ms F/E':>15s} {'max ms F/E':>15s} {'errors F/E':>10s}"
    )
    out.write(hdr + "\n" + "-" * len(hdr) + "\n")
    table = []
    for std in chosen:
        f, e = results.get((std.name, "flotilla"), []), results.get((std.name, "etcd"), [])
        if not f or not e:
            continue
        ft, efft = _mean([r.throughput for r in f]), _mean([r.throughput for r in e])
        fp50, ep50 = _mean([r.latency.p50_ms for r in f]), _mean([r.latency.p50_ms for r in e])
        fp99, ep99 = _mean([r.latency.p99_ms for r in f]), _mean([r.latency.p99_ms for r in e])
        fmax, emax = max(r.latency.max_ms for r in f), max(r.latency.max_ms for r in e)
        ferr, eerr = sum(r.error_count for r in f), sum(r.error_count for r in e)
        ratio = ft / efft if efft else 0.0
        out.write(
            f"{std.title:36s} {_cell(f):>16s} {_cell(e):>16s} {ratio:6.2f}   "
            f"{fp50:6.2f}/{ep50:<6.2f} {fp99:7.2f}/{ep99:<7.2f} {fmax:7.1f}/{emax:<7.1f} {ferr:>4d}/{eerr:<4d}\n"
        )
        table.append(
            {
                "workload": std.name,
                "title": std.title,
                "flotilla": [r.to_dict() for r in f],
                "etcd": [r.to_dict() for r in e],
                "server_cpu_s": {"flotilla": cpus.get((std.name, "flotilla"), []), "etcd": cpus.get((std.name, "etcd"), [])},
                "server_cpu_ms_per_request": {
                    n: [{"all": round(a, 3), "net_of_idle": round(b, 3)} for a, b in per_ops.get((std.name, n), [])] for n in ("flotilla", "etcd")
                },
                "throughput_ratio": round(ratio, 3),
                "p50_ratio": round(fp50 / ep50, 3) if ep50 else None,
                **({"flotilla_read_spread": spreads[std.name]} if std.name in spreads else {}),
            }
        )
    out.write("(ops/s per round; ratio = flotilla/etcd mean throughput; latencies are round means, max over rounds)\n")
    if args.output == "json":
        out.write(json.dumps({"flotilla": targets[0].how if targets else "", "idle_cpu_s_per_s": idle, "results": table}, indent=2) + "\n")
    for name, _, path in profiled:
        _print_profile(name, path, out)
    return 0
