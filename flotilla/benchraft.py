"""`flotilla bench-raft`: figures of the multi-group runtime on 3 local processes.

Scenarios (each on a fresh cluster of 3 `flotilla raftnode` processes):

- `throughput`: N groups, K proposals in flight per group, load driven inside
  each leader's process (RaftAdmin.Load) so that a client's unary gRPC cost
  does not hide the runtime's: committed entries/s, entries per sync, CPU
  (all 3 processes) per committed entry, p50/p99 proposal latency.
- `idle`: N groups (default 1000) left alone until every group is quiet,
  then the CPU the 3 processes use over a window.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import tempfile
import time
from pathlib import Path

from flotillapb import raftadmin_pb2 as pb
from flotilla.raftcluster import RaftCluster, wait_until


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario", choices=["throughput", "idle"])
    p.add_argument("--groups", type=int, default=None, help="default: 1 (throughput), 1000 (idle)")
    p.add_argument("--in-flight", type=int, default=256, help="proposals in flight per group (throughput)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load, or of the idle window")
    p.add_argument("--value-size", type=int, default=256)
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p.add_argument("--keep", action="store_true", help="keep the data directories")


def _cpu(c: RaftCluster) -> float:
    return sum(c.status(n, [0]).stats.cpu_seconds for n in c.live())


def throughput(c: RaftCluster, groups: int, in_flight: int, duration: float, value_size: int) -> dict[str, float]:
    wait_until(c.all_groups_led, timeout=120, what="a leader for every group")
    # Warm up every group (first proposal of a term, connections).
    for gid in range(1, groups + 1):
        c.propose(gid, b"warm=1")
    before = {n: c.status(n, [0]).stats for n in c.live()}
    req = pb.LoadRequest(in_flight=in_flight, duration_ms=int(duration * 1000), value_size=value_size)
    with concurrent.futures.ThreadPoolExecutor(len(c.live())) as ex:
        futs = {n: ex.submit(c.stub(n).Load, req, timeout=duration + 60) for n in c.live()}
        res = {n: f.result() for n, f in futs.items()}
    after = {n: c.status(n, [0]).stats for n in c.live()}
    committed = sum(r.committed for r in res.values())
    secs = max(r.seconds for r in res.values())
    leader_syncs = sum(r.syncs for r in res.values() if r.committed)
    all_syncs = sum(after[n].syncs - before[n].syncs for n in after)
    cpu = sum(after[n].cpu_seconds - before[n].cpu_seconds for n in after)
    loaded = [r for r in res.values() if r.committed]
    return {
        "groups": groups,
        "in_flight_per_group": in_flight,
        "committed": committed,
        "failed": sum(r.failed for r in res.values()),
        "seconds": round(secs, 3),
        "entries_per_s": round(committed / secs, 1) if secs else 0.0,
        "entries_per_leader_sync": round(committed / leader_syncs, 2) if leader_syncs else 0.0,
        "syncs_all_nodes_per_s": round(all_syncs / secs, 1) if secs else 0.0,
        "cpu_ms_per_entry_all_nodes": round(cpu * 1000 / committed, 3) if committed else 0.0,
        "cpu_cores_used_all_nodes": round(cpu / secs, 2) if secs else 0.0,
        "p50_ms": round(max(r.p50_ms for r in loaded), 2) if loaded else 0.0,
        "p99_ms": round(max(r.p99_ms for r in loaded), 2) if loaded else 0.0,
    }


def idle(c: RaftCluster, groups: int, duration: float) -> dict[str, float]:
    wait_until(c.all_groups_led, timeout=300, what="a leader for every group")

    def all_quiet() -> bool:
        return all(all(g.quiet for g in c.status(n).groups) for n in c.live())

    t0 = time.monotonic()
    wait_until(all_quiet, timeout=300, what="every group quiet", interval=0.5)
    quiet_after = time.monotonic() - t0
    cpu0, w0 = _cpu(c), time.monotonic()
    time.sleep(duration)  # sleep-ok: the measurement window itself
    cpu1, w1 = _cpu(c), time.monotonic()
    return {
        "groups": groups,
        "seconds_to_all_quiet": round(quiet_after, 1),
        "window_s": round(w1 - w0, 2),
        "cpu_percent_per_process": round((cpu1 - cpu0) / (w1 - w0) / len(c.live()) * 100, 2),
    }


def main(args: argparse.Namespace) -> int:
    groups = args.groups or (1 if args.scenario == "throughput" else 1000)
    tmp = Path(tempfile.mkdtemp(prefix="flotilla-bench-raft-"))
    c = RaftCluster(tmp, groups=groups, verbose=False)
    try:
        c.start()
        if args.scenario == "throughput":
            out = throughput(c, groups, args.in_flight, args.duration, args.value_size)
        else:
            out = idle(c, groups, args.duration)
    finally:
        c.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    if args.output == "json":
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>28}: {v}")
    return 0
