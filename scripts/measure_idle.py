"""Start a playground, time how long it takes to be ready, then measure what
the idle cluster costs: CPU per process over a window, and each process's
resident memory. The figures #20 asks for (ready time, idle core, memory per
idle replica) come from here:

    python scripts/measure_idle.py --shards 1000 --workdir /tmp/m1000
    python scripts/measure_idle.py --shards 4 --workdir /tmp/m4

It prints one JSON object. Memory per replica is not measured by one run:
compare the stores' RSS of two runs (4 and 1,000 shards) and divide the
growth by the replicas added (3 per shard).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def children(pid: int) -> dict[int, str]:
    """The playground's child processes, by pid, each named by its data
    directory (p1, store1, ...)."""
    out: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != pid:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        args = [a.decode() for a in argv if a]
        name = Path(args[args.index("--data-dir") + 1]).name if "--data-dir" in args else " ".join(args[2:])
        out[int(entry.name)] = name
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--workdir", required=True, help="emptied first; holds the playground's data and output")
    p.add_argument("--settle", type=float, default=30.0, help="seconds to wait after ready before measuring")
    p.add_argument("--window", type=float, default=30.0, help="seconds of CPU measurement")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for ready")
    p.add_argument(
        "--tracemalloc", metavar="PREFIX", default="",
        help="trace the processes' Python allocations (flotilla/memtrace.py) and, after measuring, write <PREFIX>.<pid>.txt for each",
    )
    args = p.parse_args()

    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out_path = work / "playground.out"
    argv = [sys.executable, "-m", "flotilla", "playground", "--shards", str(args.shards), "--data-dir", str(work / "data"),
            "--client-port", "0", "--timeout", str(args.timeout + 60)]
    started = time.monotonic()
    env = dict(os.environ, FLOTILLA_TRACEMALLOC=args.tracemalloc) if args.tracemalloc else None
    with out_path.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    result: dict[str, object] = {"shards": args.shards}
    try:
        deadline = started + args.timeout  # the playground itself waits a minute longer: one not ready is still there
        ready = True
        while "ready\n" not in out_path.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                ready = False
                break
            time.sleep(0.2)
        if ready:
            result["ready_s"] = round(time.monotonic() - started, 1)
            time.sleep(args.settle)
            procs = children(proc.pid)
            before = {pid: cpu_seconds(pid) for pid in procs}
            t0 = time.monotonic()
            time.sleep(args.window)
            after = {pid: cpu_seconds(pid) for pid in procs}
            wall = time.monotonic() - t0
            per = {f"{procs[pid]} ({pid})": round((after[pid] - before[pid]) / wall, 4) for pid in procs}
            result["idle_core"] = round(sum(per.values()), 4)
            result["idle_core_per_process"] = per
        else:
            # Still say what the processes hold (a playground that never got
            # ready has most of its replicas all the same).
            result["ready_s"] = None
            procs = children(proc.pid)
        result["rss_mib"] = {f"{procs[pid]} ({pid})": round(rss_bytes(pid) / 2**20, 1) for pid in procs}
        result["loadavg"] = os.getloadavg()
        if args.tracemalloc:
            dumps = {pid: Path(f"{args.tracemalloc}.{pid}.txt") for pid in procs}
            for pid, path in dumps.items():
                path.unlink(missing_ok=True)
                os.kill(pid, signal.SIGUSR1)
            until = time.monotonic() + 120
            while not all(p.exists() for p in dumps.values()) and time.monotonic() < until:
                time.sleep(0.5)
            result["tracemalloc"] = {f"{procs[pid]} ({pid})": str(path) for pid, path in dumps.items()}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(json.dumps(result, indent=2))
    if result["ready_s"] is None:
        print(f"playground did not get ready; see {out_path}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
