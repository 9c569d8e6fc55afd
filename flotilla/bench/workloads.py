"""The load of `flotilla bench`: etcd v3 clients in asyncio (grpc.aio).

One event loop per client process; in each, one coroutine per request in
flight, spread over the process's channels. `--clients` is the total in flight
across all processes and `--conns` the total channels (at least one per
process and one per endpoint); channels go round-robin over the endpoints,
and each request of put, range and txn-put takes the next channel, so every
endpoint is driven even by one client (a client process's code is
flotilla/bench/client.py). Processes are started
with the `spawn` method (never fork: gRPC owns threads), connect, prefill if
asked, then all start together when the parent says so.

Workloads (the etcd `benchmark` tool's names):

- `put`: Put(random key of the key space, a fixed random value)
- `range`: Range(one random key), linearizable (`--consistency l`) or
  serializable (`s`); `--max-staleness-ms` adds Flotilla's bounded-staleness
  metadata (etcd ignores it)
- `txn-put`: Txn(success=[Put]) on one random key
- `txn-cross`: a Txn of two random keys on different shards, as an optimistic
  client writes them: If(mod(a) = ra, mod(b) = rb) Then(put a, put b)
  Else(get a, get b), where ra and rb are the revisions the client last saw
  (0 at first); a failed compare is a completed txn (counted as
  `compare_failed`) that tells the client the revisions to try next
- `txn-pair`: the same on two keys of one shard (the single-shard baseline
  for `txn-cross`)

`txn-cross` and `txn-pair` take the shard of each key from the cluster's map
(a router's Discovery.Placement, then placement's GetMap). Without a map (a
router with a static map, or etcd) they pair keys by slot instead: one in the
lowest quarter of the slots and one in the highest quarter, which no shard of
an equal split into two or more spans (`txn-pair`: two keys of one slot
quarter, which an equal split into 4 or fewer keeps in one shard); the
result's `pairing` says which.
- `watch`: each client watches its own key, then puts to it and waits for the
  event: latency is put-to-event

Only the successful requests' latencies are recorded; failures are counted by
gRPC status code.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import queue
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flotilla.bench.client import Share, worker_main
from flotilla.bench.config import DEFAULT_SLOTS, PAIRED, STALENESS_METADATA, WORKLOADS, BenchConfig, KeyGroups, key_of
from flotilla.bench.stats import Histogram, Summary

__all__ = ["WORKLOADS", "PAIRED", "DEFAULT_SLOTS", "STALENESS_METADATA", "BenchConfig", "BenchResult", "KeyGroups", "key_of", "run", "format_text"]

@dataclass
class BenchResult:
    config: BenchConfig
    procs: int
    ops: int
    errors: dict[str, int]
    elapsed_s: float
    latency: Summary
    first_errors: list[str] = field(default_factory=list)
    compare_failed: int = 0
    """txn-cross, txn-pair: completed txns whose compare failed (the failure branch ran)"""
    pairing: str = ""
    """txn-cross, txn-pair: how keys were paired by shard"""

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def throughput(self) -> float:
        return self.ops / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        c = self.config
        return {
            "workload": c.workload,
            "endpoints": list(c.endpoints),
            "clients": c.clients,
            "conns": c.conns,
            "procs": self.procs,
            "consistency": c.consistency if c.workload == "range" else None,
            "max_staleness_ms": c.max_staleness_ms,
            "key_size": c.key_size,
            "val_size": c.val_size,
            "key_space": c.key_space,
            "ops": self.ops,
            "error_count": self.error_count,
            "errors": dict(self.errors),
            "first_errors": self.first_errors,
            "elapsed_s": round(self.elapsed_s, 4),
            "throughput": round(self.throughput, 1),
            "latency": {k: round(v, 3) if isinstance(v, float) else v for k, v in self.latency.to_dict().items()},
            **({"compare_failed": self.compare_failed, "pairing": self.pairing} if c.workload in PAIRED else {}),
        }


def format_text(r: BenchResult) -> str:
    c, s = r.config, r.latency
    what = c.workload + (f" ({'linearizable' if c.consistency == 'l' else 'serializable'})" if c.workload == "range" else "")
    if c.max_staleness_ms and c.workload == "range":
        what += f" max-staleness {c.max_staleness_ms} ms"
    lines = [
        f"{what}: {','.join(c.endpoints)}  clients={c.clients} conns={c.conns} procs={r.procs}  "
        f"key-size={c.key_size} val-size={c.val_size} key-space={c.key_space}",
        f"  throughput  {r.throughput:10.1f} ops/s  ({r.ops} ops in {r.elapsed_s:.2f} s)",
        f"  latency ms  p50 {s.p50_ms:.2f}  p90 {s.p90_ms:.2f}  p99 {s.p99_ms:.2f}  max {s.max_ms:.2f}  (mean {s.mean_ms:.2f})",
        f"  errors      {r.error_count}" + (f"  {dict(sorted(r.errors.items()))}" if r.errors else ""),
    ]
    lines += [f"    e.g. {e}" for e in r.first_errors[:3]]
    if c.workload in PAIRED:
        lines.append(f"  txns        {r.ops - r.compare_failed} succeeded, {r.compare_failed} failed their compare  (keys paired by {r.pairing})")
    return "\n".join(lines)


# -- keys by shard (txn-cross, txn-pair) ----------------------------------------------------------


def group_keys(cfg: BenchConfig, shard_map: Any | None, why_no_map: str = "") -> KeyGroups:
    """Groups of key indices: by shard of shard_map (a flotillapb ClusterMap)
    when there is one, else the lowest and highest quarters of the slots."""
    from shard import slots  # the slot rule: a shared leaf

    if shard_map is not None:
        n = shard_map.slot_count or DEFAULT_SLOTS
        owner = {}
        for s in shard_map.shards:
            for r in s.descriptor.slots:
                for slot in range(r.start, r.end):
                    owner[slot] = s.descriptor.shard_id
        by_shard: dict[int, list[int]] = {}
        for i in range(cfg.key_space):
            by_shard.setdefault(owner.get(slots.slot_of(key_of(i, cfg.key_size), n), 0), []).append(i)
        return KeyGroups(tuple(tuple(v) for _, v in sorted(by_shard.items())), f"shard (the map of {len(shard_map.shards)} shards)")
    low: list[int] = []
    high: list[int] = []
    for i in range(cfg.key_space):
        slot = slots.slot_of(key_of(i, cfg.key_size), DEFAULT_SLOTS)
        if slot < DEFAULT_SLOTS // 4:
            low.append(i)
        elif slot >= DEFAULT_SLOTS - DEFAULT_SLOTS // 4:
            high.append(i)
    return KeyGroups((tuple(low), tuple(high)), f"slot quarters of {DEFAULT_SLOTS} slots (no shard map: {why_no_map})")


def fetch_map(endpoints: tuple[str, ...], timeout_s: float = 5.0) -> tuple[Any | None, str]:
    """(the cluster's map, "") through the endpoints' Discovery.Placement and
    placement's GetMap, or (None, why not)."""
    from flotilla.ctl import NoPlacement, placement_endpoints
    from flotillapb import placement_pb2 as ppb
    from rpc.placementclient import PlacementClient

    async def get() -> Any:
        client = PlacementClient(await placement_endpoints(list(endpoints), timeout_s), timeout_s=timeout_s, rounds=1)
        try:
            return (await client.call("GetMap", ppb.GetMapRequest(linearizable=False))).map
        finally:
            await client.close()

    async def bounded() -> Any:
        return await asyncio.wait_for(get(), timeout=2 * timeout_s + 1)

    try:
        m = asyncio.run(bounded())
    except NoPlacement as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - an etcd, or placement unreachable: pair by slot instead, saying why
        return None, f"no placement map from {','.join(endpoints)} ({type(exc).__name__}: {exc})"
    if not m.shards:
        return None, "placement's map has no shards yet"
    return m, ""


# -- the parent ---------------------------------------------------------------------------------


def _split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def run(cfg: BenchConfig, *, progress: bool = False, out: Any = None, on_start: Callable[[], object] | None = None) -> BenchResult:
    """Run the workload in client processes and merge their results.
    `on_start` is called once every process is connected (and prefilled), as
    the load starts (compare.py starts its profilers there)."""
    out = out if out is not None else sys.stderr
    procs = cfg.process_count()
    ctx = mp.get_context("spawn")
    results: Any = ctx.Queue()
    start = ctx.Event()
    done_counts = ctx.RawArray("q", procs)
    clients = _split(cfg.clients, procs)
    # At least one channel per endpoint: every endpoint is driven (channels go round-robin over them).
    conns = [max(1, c) for c in _split(max(cfg.conns, len(cfg.endpoints)), procs)]
    totals = _split(cfg.total, procs) if cfg.total > 0 else [0] * procs
    groups: KeyGroups | None = None
    if cfg.workload in PAIRED:
        groups = group_keys(cfg, *fetch_map(cfg.endpoints))
        why = groups.usable(cfg.workload)
        if why is not None:
            raise SystemExit(f"flotilla bench: {why}")
    first_conn = [sum(conns[:i]) for i in range(procs)]
    workers = [
        ctx.Process(
            target=worker_main,
            args=(cfg, Share(i, procs, clients[i], conns[i], first_conn[i], totals[i]), start, results, done_counts, groups),
            name=f"bench-client-{i}",
            daemon=True,
        )
        for i in range(procs)
    ]
    for w in workers:
        w.start()
    try:
        ready = 0
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60 + (cfg.key_space / 200 if cfg.prefill else 0)
        while ready < procs:
            msg = _get(results, workers, deadline, "client processes ready")
            if msg["kind"] == "failed":
                raise SystemExit(f"flotilla bench: client process {msg['proc']} failed: {msg['error']}")
            ready += 1
        t0 = time.monotonic()
        start.set()
        if on_start is not None:
            on_start()
        end_by = t0 + (cfg.duration_s if cfg.total <= 0 else 1e9) + cfg.timeout_s + 60
        while len(got) < procs:
            try:
                msg = results.get(timeout=0.2)
            except queue.Empty:
                if progress:
                    _draw(out, cfg, sum(done_counts), time.monotonic() - t0)
                _check_alive(workers, time.monotonic() > end_by)
                continue
            if msg["kind"] == "failed":
                raise SystemExit(f"flotilla bench: client process {msg['proc']} failed: {msg['error']}")
            got.append(msg)
        if progress:
            _draw(out, cfg, sum(done_counts), time.monotonic() - t0)
            out.write("\n")
            out.flush()
    finally:
        for w in workers:
            w.join(timeout=10)
            if w.is_alive():
                w.kill()
                w.join()
    hist = Histogram()
    errors: Counter[str] = Counter()
    first_errors: list[str] = []
    for m in got:
        hist.merge(Histogram.from_dict(m["hist"]))
        errors.update(m["errors"])
        first_errors += m["first_errors"]
    compare_failed = sum(m["compare_failed"] for m in got)
    elapsed_ns = max(m["end_ns"] for m in got) - min(m["start_ns"] for m in got)
    return BenchResult(
        config=cfg,
        procs=procs,
        ops=sum(m["ops"] for m in got),
        errors=dict(errors),
        elapsed_s=elapsed_ns / 1e9,
        latency=hist.summary(),
        first_errors=first_errors[:5],
        compare_failed=compare_failed,
        pairing=groups.pairing if groups is not None else "",
    )


def _get(results: Any, workers: list[Any], deadline: float, what: str) -> dict[str, Any]:
    while True:
        try:
            return results.get(timeout=0.2)  # type: ignore[no-any-return]
        except queue.Empty:
            _check_alive(workers, time.monotonic() > deadline, what)


def _check_alive(workers: list[Any], late: bool, what: str = "the run to end") -> None:
    dead = [w for w in workers if w.exitcode not in (None, 0)]
    if dead:
        raise SystemExit(f"flotilla bench: {dead[0].name} exited with {dead[0].exitcode}")
    if late:
        raise SystemExit(f"flotilla bench: timed out waiting for {what}")


def _draw(out: Any, cfg: BenchConfig, done: int, elapsed_s: float) -> None:
    frac = done / cfg.total if cfg.total > 0 else elapsed_s / cfg.duration_s
    frac = min(1.0, max(0.0, frac))
    width = 30
    bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    out.write(f"\r{cfg.workload} [{bar}] {frac * 100:5.1f}%  {done} ops  {rate:8.0f} ops/s  {elapsed_s:5.1f} s")
    out.flush()
