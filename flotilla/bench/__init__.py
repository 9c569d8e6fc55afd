"""`flotilla bench`: load any etcd v3 endpoint (Flotilla's router or etcd
itself) and print throughput, latency percentiles and errors.

    flotilla bench --endpoints 127.0.0.1:2379 put --clients 256 --conns 8 --duration 10
    flotilla bench --endpoints 127.0.0.1:2379 range --clients 64 --consistency s --total 50000 -o json
    flotilla bench --endpoints 127.0.0.1:2379 txn-cross --clients 16 --total 5000   # two keys on two shards; txn-pair: on one
    flotilla bench --compare-etcd            # the playground and a 3-member etcd, same workloads, alternating
    flotilla bench failover --rounds 3       # kill -9 the busiest leader under writes: Flotilla and etcd

Also `python -m flotilla.bench ...`. The load is flotilla/bench/workloads.py,
the histograms flotilla/bench/stats.py, the etcd cluster flotilla/bench/etcd.py,
the comparison flotilla/bench/compare.py and the failover figures
flotilla/bench/failover.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from flotilla.bench.workloads import WORKLOADS, BenchConfig, format_text, run

__all__ = ["add_arguments", "config_from", "main"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "workload", nargs="?", choices=(*WORKLOADS, "failover"),
        help="what to run (not with --compare-etcd); failover: kill -9 a leader under writes, Flotilla and etcd (flotilla/bench/failover.py)",
    )
    p.add_argument("--endpoints", default="127.0.0.1:2379", help="host:port[,host:port...] of etcd v3 endpoints")
    p.add_argument("--clients", type=int, default=1, help="requests in flight, in total over all client processes")
    p.add_argument("--conns", type=int, default=1, help="gRPC channels (connections), in total (at least one per process and one per endpoint; put, range and txn-put send each request on the next channel)")
    p.add_argument("--procs", type=int, default=0, help="client processes (default: one per 64 clients, at most the CPU count)")
    p.add_argument("--total", type=int, default=0, help="requests to make (instead of --duration)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds to run (when --total is not given)")
    p.add_argument("--key-size", type=int, default=8, help="bytes of each key (decimal digits, zero-padded)")
    p.add_argument("--val-size", type=int, default=256, help="bytes of each value")
    p.add_argument("--key-space", type=int, default=10_000, help="keys are drawn uniformly from this many")
    p.add_argument("--consistency", choices=("l", "s"), default="l", help="range: linearizable or serializable")
    p.add_argument("--max-staleness-ms", type=int, default=0, help="range: Flotilla's bounded-staleness metadata (0: none)")
    p.add_argument("--prefill", action="store_true", help="put every key of the key space once before measuring")
    p.add_argument("--timeout", type=float, default=None, help="deadline of each request, seconds (default 10; failover 7)")
    p.add_argument("--seed", type=int, default=1)
    sec = p.add_argument_group("a secure cluster (etcdctl's flags)")
    sec.add_argument("--cacert", default="", help="TLS to the endpoints, trusting this CA")
    sec.add_argument("--cert", default="", help="client certificate (for a router with --client-cert-auth)")
    sec.add_argument("--key", default="", help="its key")
    sec.add_argument("--user", default="", help="name:password: Authenticate, then send the token with every request")
    sec.add_argument(
        "--server-pids", default="",
        help="comma-separated pids of the cluster's processes: report their CPU per request over the run (from /proc)",
    )
    p.add_argument("--progress", choices=("auto", "on", "off"), default="auto", help="progress bar on stderr (auto: if a tty)")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")
    cmp = p.add_argument_group("comparison with etcd (flotilla/bench/compare.py)")
    cmp.add_argument("--compare-etcd", action="store_true", help="start the playground and a 3-member etcd; run the standard workloads against both")
    cmp.add_argument("--rounds", type=int, default=None, help="A/B rounds per workload (--compare-etcd; default 2); kills per system (failover; default 3)")
    cmp.add_argument("--etcd-bin", default="/usr/bin/etcd", help="etcd binary (scripts/install_bench_deps.sh installs Debian's)")
    cmp.add_argument("--workdir", default="", help="data and logs of the compared clusters (default: a temporary directory, removed)")
    cmp.add_argument("--profile-dir", default="", help="py-spy the Flotilla processes during the first put run; collapsed stacks here")
    cmp.add_argument("--shards", type=int, default=0, help="the playground's initial shards (default: the playground's)")
    cmp.add_argument(
        "--routers", type=int, default=0,
        help="the playground's standalone routers besides its stores, which serve clients too (clients use them all; default 0)",
    )
    cmp.add_argument("--only", default="", help="comma-separated subset of the comparison's workloads (put256,put1,range-l,range-s,range-bs)")
    fo = p.add_argument_group("failover (flotilla/bench/failover.py; also --rounds, --timeout, --shards, --etcd-bin, --workdir, --val-size)")
    fo.add_argument("--systems", default="flotilla,etcd", help="comma-separated: flotilla, etcd (default both)")
    fo.add_argument("--writers", type=int, default=20, help="writers putting their own keys in a closed loop (default 20)")
    fo.add_argument("--probe-interval", type=float, default=0.1, help="seconds between the puts of each shard's probe (default 0.1)")
    fo.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each kill (default 2)")
    fo.add_argument("--observe", type=float, default=10.0, help="seconds of load after each kill (default 10)")
    fo.add_argument("--restart-timeout", type=float, default=60.0, help="seconds for a restarted process and its cluster to be healthy (default 60)")


def config_from(args: argparse.Namespace) -> BenchConfig:
    try:
        return BenchConfig(
            workload=args.workload,
            endpoints=tuple(e.strip() for e in args.endpoints.split(",") if e.strip()),
            clients=args.clients,
            conns=args.conns,
            procs=args.procs,
            total=args.total,
            duration_s=args.duration,
            key_size=args.key_size,
            val_size=args.val_size,
            key_space=args.key_space,
            consistency=args.consistency,
            max_staleness_ms=args.max_staleness_ms,
            prefill=args.prefill,
            timeout_s=args.timeout,
            seed=args.seed,
            cacert=args.cacert,
            cert=args.cert,
            key=args.key,
            user=args.user,
        )
    except ValueError as exc:
        raise SystemExit(f"flotilla bench: {exc}") from None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(args: argparse.Namespace) -> int:
    failover = args.workload == "failover"
    if args.timeout is None:
        args.timeout = 7.0 if failover else 10.0
    if args.rounds is None:
        args.rounds = 3 if failover else 2
    if failover:
        from flotilla.bench import failover as failover_bench

        return failover_bench.main(args)
    if args.compare_etcd:
        from flotilla.bench import compare

        return compare.main(args)
    if args.workload is None:
        raise SystemExit(f"flotilla bench: name a workload ({', '.join(WORKLOADS)}) or give --compare-etcd")
    cfg = config_from(args)
    progress = sys.stderr.isatty() if args.progress == "auto" else args.progress == "on"
    pids = [int(p) for p in args.server_pids.split(",") if p.strip()]
    cpu_before: dict[int, float] = {}
    idle_per_s = 0.0
    if pids:  # what the processes burn with no load (Raft ticks, heartbeats): reported apart
        idle0, t0 = sum(cpu_seconds(pid) for pid in pids), time.monotonic()
        time.sleep(3.0)  # sleep-ok: the measuring window itself
        idle_per_s = (sum(cpu_seconds(pid) for pid in pids) - idle0) / (time.monotonic() - t0)

    def on_start() -> None:
        cpu_before.update({pid: cpu_seconds(pid) for pid in pids})

    result = run(cfg, progress=progress, on_start=on_start if pids else None)
    server_cpu_s = sum(cpu_seconds(pid) - cpu_before.get(pid, 0.0) for pid in pids)
    net_ms = 1000 * max(0.0, server_cpu_s - idle_per_s * result.elapsed_s) / max(1, result.ops)
    if args.output == "json":
        out = result.to_dict()
        if pids:
            out["server_cpu_s"] = round(server_cpu_s, 3)
            out["server_cpu_ms_per_op"] = round(1000 * server_cpu_s / max(1, result.ops), 4)
            out["server_cpu_net_ms_per_op"] = round(net_ms, 4)
            out["server_idle_cpu_s_per_s"] = round(idle_per_s, 3)
        print(json.dumps(out, indent=2))
    else:
        print(format_text(result))
        if pids:
            print(
                f"  server cpu  {1000 * server_cpu_s / max(1, result.ops):.3f} ms per request, {net_ms:.3f} net of idle "
                f"({server_cpu_s:.2f} cpu-s in {len(pids)} processes; idle {idle_per_s:.2f} cpu-s/s)"
            )
    return 1 if result.ops == 0 else 0
