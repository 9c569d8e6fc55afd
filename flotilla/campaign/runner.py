"""One fault campaign run: a real cluster on 127.0.0.1 (3 placement servers,
3 store nodes, a router following placement's map), concurrent etcd clients
through the router, a nemesis injecting faults, then the checkers.

Bounded in ops and time; the seed drives every choice the runner makes (the
processes' own timing is not deterministic, so a seed reproduces the
workload and fault schedule, not the interleaving). A failing run (or
--keep) leaves its directory: history.json, violations.txt and every
process's log.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import grpc
import grpc.aio

from flotilla.campaign.bank import BankWorkload
from flotilla.campaign.bankcheck import bank_figures
from flotilla.campaign.checkers import Violation, check_all, check_convergence
from flotilla.campaign.config import CampaignConfig
from flotilla.campaign.history import Outcome
from flotilla.campaign.nemesis import Nemesis
from flotilla.campaign.summary import RunResult, recovery
from flotilla.campaign.workload import Workload
from flotilla.cluster import Cluster, wait_until
from flotilla.router_main import RouterProcess
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc as eg

__all__ = ["run_campaign"]


def _replica_states(cluster: Cluster, keys: list[bytes]) -> dict[int, dict[bytes, tuple[bytes | None, int]]]:
    """Each live store's value of each key whose shard placement's map
    gives it a (voting) replica of (with more than 3 stores, not every store
    has every shard)."""
    voters = {
        s.descriptor.shard_id: {r.node_id for r in s.descriptor.replicas if not r.learner} for s in cluster.get_map().shards
    }
    out: dict[int, dict[bytes, tuple[bytes | None, int]]] = {}
    for nid in cluster.stores.live():
        st: dict[bytes, tuple[bytes | None, int]] = {}
        for k in keys:
            if nid not in voters.get(cluster.stores.shard_of(k), ()):
                continue
            r = cluster.stores.get(nid, k)
            if r.header.HasField("error"):
                raise RuntimeError(f"node {nid}: {r.header.error}")
            kvs = r.response.kvs
            st[k] = (kvs[0].value, kvs[0].mod_revision) if kvs else (None, 0)
        out[nid] = st
    return out


_RECONNECT_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
)


async def _drive(cfg: CampaignConfig, cluster: Cluster, router: RouterProcess, prefix: bytes) -> tuple[Workload, Nemesis]:
    run = (BankWorkload if cfg.workload == "bank" else Workload)(cfg, cluster, router, prefix)
    nem = Nemesis(cluster, random.Random(run.rng.getrandbits(64)), log=cfg.log, router=router)
    run.router_down = nem.router_down
    # Reconnect quickly to a router restarted on its port (gRPC's default backoff starts at 1 s, grows to 120 s).
    channel = grpc.aio.insecure_channel(router.address, options=_RECONNECT_OPTIONS)
    kv, watch, lease = eg.KVStub(channel), eg.WatchStub(channel), eg.LeaseStub(channel)
    await run.setup(kv)
    start = await kv.Range(epb.RangeRequest(key=prefix, range_end=prefix + b"\xff"), timeout=10)
    t_end = run.now() + cfg.duration_s
    # Every run begins with one of each configured nemesis, then picks at random.
    schedule = list(cfg.nemeses)
    run.rng.shuffle(schedule)
    watchers = [asyncio.create_task(run.watcher(w, watch, start.header.revision + 1)) for w in range(2)]
    clients = [asyncio.create_task(run.client(c, kv, lease)) for c in range(cfg.clients)]
    clients += [asyncio.create_task(t) for t in run.extra_tasks(kv)]
    nem_task = asyncio.create_task(run.nemesis(nem, schedule, t_end))

    async def clock() -> None:
        while run.now() < t_end and run.op_count() < cfg.ops:
            await asyncio.sleep(0.2)  # sleep-ok: the campaign's own duration bound
        run.stop.set()

    await clock()
    cfg.log(f"workload done after {run.now() - t_end + cfg.duration_s:.1f}s: {run.op_count()} ops")
    await nem_task  # a fault in progress heals first
    await asyncio.gather(*clients)
    run.watch_deadline = run.now() + 30
    _, pending = await asyncio.wait(watchers, timeout=35)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    cfg.log(
        f"watchers: {len(run.history.watch_events)} events over {len(run.history.watch_streams)} streams, "
        f"done={run.watch_done()}"
    )
    if not run.watch_done():
        run.extra.append(Violation("watch_stalled", prefix, "watchers never reached the last acked write's revision within 30 s"))
    if nem.splits or nem.merges:
        await asyncio.to_thread(nem.sync_map)  # placement split shards: the harness's map follows
    # Final linearizable reads through the router, once every fault healed.
    for k in run.keys:
        for _ in range(50):
            try:
                r = await kv.Range(epb.RangeRequest(key=k), timeout=cfg.op_timeout_s)
                run.history.final_reads[k] = (r.kvs[0].value, r.kvs[0].mod_revision) if r.kvs else (None, 0)
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.2)  # sleep-ok: retry interval of a bounded retry
    await channel.close()
    return run, nem


def run_campaign(cfg: CampaignConfig) -> RunResult:
    t0 = time.monotonic()
    base = Path(cfg.base_dir or tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"flotilla-campaign-s{cfg.seed}-", dir=base))
    cfg.log(f"campaign seed={cfg.seed} ops={cfg.ops} duration={cfg.duration_s}s nemeses={','.join(cfg.nemeses)} dir={tmp}")
    cluster = Cluster(
        tmp / "cluster",
        store_ids=tuple(range(11, 11 + cfg.stores)),
        store_args=["--snapshot-entries", "200", "--compaction-margin", "50"],
        faults=True,
    )
    router: RouterProcess | None = None
    violations: list[Violation] = []
    result = RunResult(seed=cfg.seed, ops=0, ops_ok=0, ops_unknown=0)
    crashed = False
    try:
        cluster.start()
        cluster.wait_bootstrapped()
        # Every placement server: the nemesis kills and partitions them too.
        paddr = ",".join(cluster.placement.nodes[n].address for n in cluster.placement_ids)
        (tmp / "router").mkdir()
        router = RouterProcess(tmp / "router", ["-v", "--placement", paddr, "--progress-notify-interval-ms", "300"])
        router.start()
        ch = grpc.insecure_channel(router.address)
        kvs = eg.KVStub(ch)
        wait_until(lambda: _ok(lambda: kvs.Range(epb.RangeRequest(key=b"warmup"), timeout=5)), timeout=60, what="router serving")
        ch.close()
        prefix = f"campaign/s{cfg.seed}/".encode()
        run, nem = asyncio.run(_bounded(_drive(cfg, cluster, router, prefix), cfg.duration_s + 240))
        h = run.history
        wait_until(cluster.stores.all_shards_led, timeout=60, what="every shard led at the end")
        # Convergence: replicas agree, against a deadline; then check the last snapshot.
        last: dict[int, dict[bytes, tuple[bytes | None, int]]] = {}

        def converged() -> bool:
            nonlocal last
            if nem.splits or nem.merges or cfg.stores > 3:
                nem.sync_map(timeout_s=5)
            last = _replica_states(cluster, run.keys)
            return not check_convergence(last)

        try:
            wait_until(converged, timeout=30, what="replicas converged")
        except AssertionError:
            pass  # check_convergence reports what differs
        # Skewed wall clocks widen what bounded staleness promises (checkers.check_staleness).
        skew_ms = 2 * nem.max_clock_offset_ms
        violations = [*check_all(h, last, lin_max_steps=cfg.lin_max_steps, clock_skew_ms=skew_ms), *run.extra]
        if router.proc is not None and router.proc.poll() is not None:
            violations.append(Violation("process_died", b"", f"router exited with {router.proc.returncode}"))
        for nid, n in cluster.placement.nodes.items():
            if n.proc is not None and n.proc.poll() is not None:
                violations.append(Violation("process_died", b"", f"placement {nid} exited with {n.proc.returncode}"))
        result.ops = len(h.ops) + len(h.bank)
        result.ops_ok = sum(o.outcome is Outcome.OK for o in (*h.ops, *h.bank))
        result.ops_unknown = sum(o.outcome is Outcome.UNKNOWN for o in (*h.ops, *h.bank))
        if isinstance(run, BankWorkload):
            result.bank = bank_figures(h, set(run.probes))
        result.faults = Counter(f.kind for f in h.faults)
        result.recovery_s, result.recovery_all_s, late_kill = recovery(h, cluster.stores.shard_of)
        result.recovery_partition_s, result.recovery_partition_all_s, late_part = recovery(h, cluster.stores.shard_of, kind="partition_leader")
        result.late_write_failures = late_kill + late_part
        result.crashpoints_not_fired = nem.crashpoints_not_fired
        result.crashpoints_fired = dict(nem.crashpoints_by_point)
        result.placement_ops = {f"{k}:{o}": n for (k, o), n in sorted(nem.op_outcomes.items())}
        result.clock_skew_ms = skew_ms
        result.violations = violations
        (tmp / "history.json").write_text(h.dump())
    except Exception as exc:  # noqa: BLE001 - the run failed; reported and kept, the campaign goes on
        import traceback

        crashed = True
        violations.append(Violation("harness_error", b"", f"{exc!r}\n{traceback.format_exc()}"))
        result.violations = violations
    except BaseException:
        crashed = True
        raise
    finally:
        if router is not None:
            router.stop()
        cluster.stop()
        result.elapsed_s = time.monotonic() - t0
        if crashed or violations or cfg.keep:
            (tmp / "violations.txt").write_text("\n".join(str(v) for v in violations) + "\n")
            result.kept_dir = str(tmp)
            cfg.log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return result


async def _bounded(coro: Any, timeout_s: float) -> Any:
    async with asyncio.timeout(timeout_s):
        return await coro


def _ok(fn: Callable[[], object]) -> bool:
    try:
        fn()
        return True
    except grpc.RpcError:
        return False
