"""`flotilla bench failover`: kill -9 the process leading the most shards
under steady writes, N rounds, and report how soon writes succeed again,
for Flotilla and for a 3-member etcd from one run (issue #13).

Flotilla is the playground (compare.start_playground: 3 placement, 3 stores,
4 shards; every store serves clients) in a temporary directory; etcd is flotilla/bench/etcd.py's
3 members of /usr/bin/etcd. The systems run one after the other, each alone
on the machine.

Load (one asyncio loop in this process, etcd's gRPC KV Put, each call with
the per-call deadline --timeout, 7 s by default): --writers writers (20), each
putting its own keys in a closed loop (a short pause after a failure), and
one probe per shard that starts a put every --probe-interval (0.1 s) without
waiting for the previous one. For Flotilla the writers are spread evenly
over the shards, each writer's keys sharing a hash tag that lives in its
shard, the probe's key in its shard (slot = xxh3_64(hash_key) % slots, the
shard map from placement's GetMap); etcd is one "shard", its writers and one
probe spread over all three members (one channel each, round-robin over the
members' endpoints, as etcd's own client balances).

A round: wait until the system is healthy (Flotilla: every shard of the map
has a store that says it leads it, and a put to every probe key succeeds;
etcd: the members agree on a leader and a put commits), --warmup seconds of
load, kill -9 the victim (Flotilla: the store leading the most shards, by
each store's StoreAdmin Status; etcd: the leader, by Maintenance.Status),
--observe seconds of load, stop starting writes and let the calls in flight
end (each bounded by its deadline), then restart the victim on its port and
data directory (a store: its own command line, as the playground started
it) and wait until healthy again. Every attempt is recorded (start, end,
error, shard); flotilla/bench/failover_figures.py computes the figures. With
--workdir the attempts of each round are also written there as JSON lines.

Only processes this run started are signalled, each by its pid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import grpc
import grpc.aio

from flotilla.bench.compare import Target, start_playground
from flotilla.bench.etcd import EtcdCluster, EtcdMember
from flotilla.bench.failover_figures import TARGETS, Attempt, RoundFigures, measure, summarize
from flotilla.playground import STATE_FILE, _die_with_parent
from flotilla.procs import ManagedProcess, ProcessExited
from flotillapb import placement_pb2 as ppb
from flotillapb import store_pb2 as spb
from flotillapb import store_pb2_grpc
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc
from rpc.placementclient import PlacementClient
from router.slots import slot_of

__all__ = ["SYSTEMS", "main"]

SYSTEMS = ("flotilla", "etcd")
RETRY_PAUSE_S = 0.05
"""A writer's pause after a failed put (an immediate UNAVAILABLE would spin)."""
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1), ("grpc.enable_http_proxy", 0), ("grpc.lb_policy_name", "round_robin")]


@dataclass(frozen=True)
class Layout:
    """What the load writes: writer name -> (shard, its keys), shard -> probe key."""

    writers: dict[str, tuple[int, list[bytes]]]
    probes: dict[int, bytes]


def _tagged_keys(name: str, slot_count: int, want: Callable[[int], bool], n: int) -> list[bytes]:
    """n keys sharing a hash tag derived from name whose slot satisfies want."""
    for i in range(1_000_000):
        tag = f"{name}-{i}".encode()
        if want(slot_of(tag, slot_count)):
            return [b"{" + tag + b"}/" + str(k).encode() for k in range(n)]
    raise RuntimeError(f"no hash tag for {name} lands in the wanted shard")


def shard_layout(shard_slots: dict[int, list[tuple[int, int]]], slot_count: int, writers: int, keys_per_writer: int = 100) -> Layout:
    """Writers round-robin over the shards (sorted by id), each with keys in
    its shard; one probe key per shard."""
    sids = sorted(shard_slots)

    def in_shard(sid: int) -> Callable[[int], bool]:
        return lambda slot: any(a <= slot < b for a, b in shard_slots[sid])

    ws = {}
    for i in range(writers):
        sid = sids[i % len(sids)]
        ws[f"w{i}"] = (sid, _tagged_keys(f"failover-w{i}", slot_count, in_shard(sid), keys_per_writer))
    probes = {sid: _tagged_keys(f"failover-probe-{sid}", slot_count, in_shard(sid), 1)[0] for sid in sids}
    return Layout(ws, probes)


# -- the systems --------------------------------------------------------------------------------


class FlotillaSystem:
    name = "flotilla"

    def __init__(self, workdir: Path, shards: int) -> None:
        self.target: Target = start_playground(workdir, shards)
        self.endpoints = self.target.endpoints
        self.how = self.target.how
        shape = json.loads((workdir / "playground" / STATE_FILE).read_text())
        self.slot_count = int(shape["slots"])
        self.placement = [f"127.0.0.1:{p}" for p in shape["placement_ports"]]
        self.stores = dict(self.target.stores)  # "store-101" -> address
        self.pids = {n: p for n, p in self.target.pids.items() if n in self.stores}
        self.restarted: dict[str, ManagedProcess] = {}
        """stores this bench restarted (its children now), by name"""
        self.argv: dict[str, tuple[list[str], Path]] = {}
        """a killed store's command line and working directory, as the playground started it"""
        self.log_dir = workdir / "playground" / "logs"

    async def shard_slots(self) -> dict[int, list[tuple[int, int]]]:
        client = PlacementClient(self.placement, timeout_s=3)
        try:
            m = (await client.call("GetMap", ppb.GetMapRequest(linearizable=True))).map
        finally:
            await client.close()
        return {s.descriptor.shard_id: [(r.start, r.end) for r in s.descriptor.slots] for s in m.shards}

    async def layout(self, writers: int) -> Layout:
        return shard_layout(await self.shard_slots(), self.slot_count, writers)

    async def leaders(self) -> tuple[dict[int, str], list[str]]:
        """shard -> the store that says it leads it, and the stores that did not answer."""
        out: dict[int, str] = {}
        silent = []
        for name, address in self.stores.items():
            async with grpc.aio.insecure_channel(address) as ch:
                try:
                    st = await store_pb2_grpc.StoreAdminStub(ch).Status(spb.StoreStatusRequest(), timeout=2)
                except grpc.aio.AioRpcError:
                    silent.append(name)
                    continue
            for sh in st.shards:
                if sh.is_leader:
                    out[sh.descriptor.shard_id] = name
        return out, silent

    async def victim(self) -> tuple[str, list[int]]:
        leaders, _ = await self.leaders()
        counts = {n: sorted(s for s, ln in leaders.items() if ln == n) for n in self.stores}
        name = max(sorted(counts), key=lambda n: len(counts[n]))
        return name, counts[name]

    def pid(self, name: str) -> int:
        mp = self.restarted.get(name)
        return mp.proc.pid if mp is not None and mp.proc is not None else self.pids[name]

    def kill(self, name: str) -> dict[str, Any]:
        """kill -9 the store (by pid); remember its command line and directory
        for the restart."""
        pid = self.pid(name)
        if name not in self.argv:  # still the playground's child: keep how it was started
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
            self.argv[name] = ([a.decode() for a in argv], Path(os.readlink(f"/proc/{pid}/cwd")))
        os.kill(pid, signal.SIGKILL)
        mp = self.restarted.get(name)
        if mp is not None and mp.proc is not None:
            mp.proc.wait(timeout=30)
        return {"name": name, "pid": pid}

    async def restart(self, name: str, timeout_s: float) -> None:
        """The store again, with the command line and directory it had."""
        argv, cwd = self.argv[name]
        ready = Path(argv[argv.index("--ready-file") + 1])
        data_dir = Path(argv[argv.index("--data-dir") + 1])
        mp = ManagedProcess(name=name, log_path=self.log_dir / f"{data_dir.name}.log", ready_file=ready)
        self.restarted[name] = mp
        deadline = time.monotonic() + timeout_s
        while True:
            # spawned from the main thread: PR_SET_PDEATHSIG fires when the spawning *thread* ends
            mp.spawn(argv, cwd=cwd, start_new_session=True, preexec_fn=_die_with_parent)
            try:
                while mp.read_ready() is None:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{name} not ready in {timeout_s} s; see {mp.log_path}")
                    await asyncio.sleep(0.1)  # sleep-ok: polling a ready file with a deadline
                return
            except ProcessExited:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.5)  # sleep-ok: it exited while starting (its port not free yet?): again, until the deadline

    async def healthy(self, layout: Layout | None, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last = ""
        while True:
            try:
                slots = await self.shard_slots()
                leaders, silent = await self.leaders()
                missing = sorted(set(slots) - set(leaders))
                if silent:
                    last = f"{', '.join(silent)} not answering"
                elif missing:
                    last = f"no leader for shards {missing}"
                else:
                    lay = layout if layout is not None and set(layout.probes) == set(slots) else shard_layout(slots, self.slot_count, 0)
                    async with grpc.aio.insecure_channel(self.endpoints[0]) as ch:
                        kv = rpc_pb2_grpc.KVStub(ch)
                        for key in lay.probes.values():
                            await kv.Put(epb.PutRequest(key=key, value=b"healthy"), timeout=2)
                    return
            except Exception as exc:  # noqa: BLE001 - reported on timeout
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise TimeoutError(f"flotilla not healthy in {timeout_s} s ({last})")
            await asyncio.sleep(0.2)  # sleep-ok: polling the cluster with a deadline

    def stop(self) -> None:
        for mp in self.restarted.values():
            mp.stop()
        self.target.stop()


class EtcdSystem:
    name = "etcd"

    def __init__(self, workdir: Path, etcd_bin: str) -> None:
        self.cluster = EtcdCluster(workdir / "etcd", etcd_bin=etcd_bin)
        self.cluster.start()
        self.endpoints = self.cluster.endpoints
        version = subprocess.run([etcd_bin, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
        self.how = f"3 members of {etcd_bin} ({' '.join(version)})"
        self._killed: dict[str, EtcdMember] = {}

    async def layout(self, writers: int) -> Layout:
        return Layout({f"w{i}": (0, [f"failover/w{i}/{k}".encode() for k in range(100)]) for i in range(writers)}, {0: b"failover/probe"})

    async def victim(self) -> tuple[str, list[int]]:
        m = await asyncio.to_thread(self.cluster.leader)
        if m is None:
            raise RuntimeError("no etcd member says it leads")
        return m.name, [0]

    def kill(self, name: str) -> dict[str, Any]:
        m = next(m for m in self.cluster.members if m.name == name)
        pid = m.pid
        self.cluster.kill(m)
        self._killed[name] = m
        return {"name": name, "pid": pid}

    async def restart(self, name: str, timeout_s: float) -> None:
        m = self._killed.pop(name)
        await asyncio.to_thread(self.cluster.restart, m, timeout_s)

    async def healthy(self, layout: Layout | None, timeout_s: float) -> None:
        await asyncio.to_thread(self.cluster.await_leader, timeout_s)

    def stop(self) -> None:
        self.cluster.stop()


System = FlotillaSystem | EtcdSystem


# -- the load -----------------------------------------------------------------------------------


@dataclass
class Load:
    endpoints: list[str]
    layout: Layout
    deadline_s: float
    probe_interval_s: float
    value: bytes
    attempts: list[Attempt] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def _channel(self) -> grpc.aio.Channel:
        target = self.endpoints[0] if len(self.endpoints) == 1 else "ipv4:" + ",".join(self.endpoints)
        return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)

    async def _put(self, kv: rpc_pb2_grpc.KVStub, writer: str, shard: int, key: bytes) -> bool:
        t0 = time.monotonic()
        error = ""
        try:
            await kv.Put(epb.PutRequest(key=key, value=self.value), timeout=self.deadline_s)
        except grpc.aio.AioRpcError as exc:
            error = f"{exc.code().name}: {exc.details()}"
        self.attempts.append(Attempt(writer, shard, t0, time.monotonic(), error))
        return not error

    async def _writer(self, name: str, shard: int, keys: list[bytes]) -> None:
        async with self._channel() as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            i = 0
            while not self.stop.is_set():
                ok = await self._put(kv, name, shard, keys[i % len(keys)])
                i += 1
                if not ok:
                    with suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), RETRY_PAUSE_S)

    async def _probe(self, shard: int, key: bytes) -> None:
        async with self._channel() as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            calls: set[asyncio.Task[bool]] = set()
            next_t = time.monotonic()
            while not self.stop.is_set():
                t = asyncio.create_task(self._put(kv, f"probe-{shard}", shard, key))
                calls.add(t)
                t.add_done_callback(calls.discard)
                next_t += self.probe_interval_s
                with suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), max(0.0, next_t - time.monotonic()))
            await asyncio.gather(*calls)

    def start(self) -> list[asyncio.Task[None]]:
        tasks = [asyncio.create_task(self._writer(n, sid, keys)) for n, (sid, keys) in self.layout.writers.items()]
        tasks += [asyncio.create_task(self._probe(sid, key)) for sid, key in self.layout.probes.items()]
        return tasks


# -- a round ------------------------------------------------------------------------------------


async def run_round(system: System, args: argparse.Namespace, rnd: int, log: Callable[[str], None]) -> tuple[dict[str, Any], RoundFigures]:
    await system.healthy(None, args.restart_timeout)
    layout = await system.layout(args.writers)
    await system.healthy(layout, args.restart_timeout)
    load = Load(system.endpoints, layout, args.timeout, args.probe_interval, os.urandom(args.val_size // 2).hex().encode()[: args.val_size])
    tasks = load.start()
    try:
        await asyncio.sleep(args.warmup)  # sleep-ok: the steady load before the kill is the measurement
        name, led = await system.victim()
        kill_at = time.monotonic()
        killed = system.kill(name)
        log(f"  round {rnd}: killed {name} (pid {killed['pid']}), leading shard(s) {','.join(map(str, led)) or 'none'}")
        await asyncio.sleep(args.observe)  # sleep-ok: the measuring window itself
    finally:
        load.stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), args.timeout + 10)
    t0 = time.monotonic()
    await system.restart(name, args.restart_timeout)
    await system.healthy(layout, args.restart_timeout)
    restart_s = time.monotonic() - t0
    figures = measure(load.attempts, kill_at, led)
    if args.workdir:
        path = Path(args.workdir) / f"failover-{system.name}-round{rnd}.jsonl"
        with open(path, "w") as f:
            for a in load.attempts:
                f.write(json.dumps({"writer": a.writer, "shard": a.shard, "start": round(a.start - kill_at, 4), "end": round(a.end - kill_at, 4), "error": a.error}) + "\n")
    info = {
        "round": rnd,
        "killed": {**killed, "led_shards": led},
        "attempts": len(load.attempts),
        "restarted_healthy_in_s": round(restart_s, 2),
        **figures.to_dict(),
    }
    log(f"  round {rnd}: {len(load.attempts)} writes; {name} restarted, healthy again in {restart_s:.1f} s")
    return info, figures


# -- output -------------------------------------------------------------------------------------


def _s(x: float | None, window_s: float) -> str:
    return f">{window_s:g}" if x is None else f"{x:.2f}"


def format_round(system: str, info: dict[str, Any], window_s: float) -> str:
    lines = [
        f"{system} round {info['round']}: killed {info['killed']['name']} (pid {info['killed']['pid']}), "
        f"leader of shard(s) {','.join(map(str, info['killed']['led_shards'])) or 'none'}; {info['attempts']} writes",
        f"  {'shard':>5s} {'leader died':>11s} {'first ok s':>10s} {'all writers s':>13s} {'writers':>7s} "
        f"{'writes':>6s} {'failed':>6s} {'>0.5s':>5s} {'>3s':>4s}",
    ]
    for s in info["shards"]:
        lines.append(
            f"  {s['shard']:>5d} {'yes' if s['leader_died'] else 'no':>11s} {_s(s['first_success_s'], window_s):>10s} "
            f"{_s(s['all_writers_s'], window_s):>13s} {s['writers']:>7d} {s['attempts']:>6d} {s['failed']:>6d} "
            f"{s['failed_after_0_5s']:>5d} {s['failed_after_3s']:>4d}"
        )
    if info["failed_before_kill"]:
        lines.append(f"  failed before the kill: {info['failed_before_kill']}")
    return "\n".join(lines)


def _pm(d: dict[str, Any], window_s: float) -> str:
    return f"{_s(d['p50'], window_s)}/{_s(d['max'], window_s)}"


def format_summary(summaries: dict[str, dict[str, Any]], window_s: float) -> str:
    hdr = (
        f"{'system':8s} {'samples':>7s} {'first ok p50/max s':>18s} {'all writers p50/max s':>21s} "
        f"{'failed':>6s} {'>0.5s':>5s} {'>3s':>4s} {'other-shard failures':>20s}"
    )
    lines = [hdr, "-" * len(hdr)]
    for name, s in summaries.items():
        other = f"{s['other_shard_failures']} ({s['other_shards']} shards)" if s["other_shards"] else "n/a"
        lines.append(
            f"{name:8s} {s['samples']:>7d} {_pm(s['first_success_s'], window_s):>18s} {_pm(s['all_writers_s'], window_s):>21s} "
            f"{s['failed']:>6d} {s['failed_after_0_5s']:>5d} {s['failed_after_3s']:>4d} {other:>20s}"
        )
    lines.append(
        "(samples: shards whose leader died, over rounds (etcd: the cluster); times from the kill; "
        f">{window_s:g}: not within the observed window; failed: writes on those shards that failed, "
        ">0.5s/>3s: of them, started that long after the kill)"
    )
    for name, s in summaries.items():
        lines.append(f"{name} targets:")
        for key, title in TARGETS:
            met = s["targets"][key]
            lines.append(f"  {'n/a   ' if met is None else 'MET   ' if met else 'MISSED'} {title}")
        for what, errs in (("late failures (started > 0.5 s after the kill)", s["late_errors"]), ("failures on other shards", s["other_errors"])):
            if errs:
                lines.append(f"  {what}, first {len(errs)}:")
                lines.extend(f"    {e}" for e in errs)
    return "\n".join(lines)


# -- the command --------------------------------------------------------------------------------


async def run_system(system: System, args: argparse.Namespace, log: Callable[[str], None], out: TextIO | None) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    figures: list[RoundFigures] = []
    window_s = args.observe
    for rnd in range(1, args.rounds + 1):
        info, fig = await asyncio.wait_for(
            run_round(system, args, rnd, log),
            timeout=3 * args.restart_timeout + args.warmup + args.observe + args.timeout + 10,
        )
        rounds.append(info)
        figures.append(fig)
        if out is not None:
            out.write(format_round(system.name, info, window_s) + "\n\n")
            out.flush()
    return {"how": system.how, "endpoints": system.endpoints, "rounds": rounds, "summary": summarize(figures)}


def main(args: argparse.Namespace) -> int:
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if not systems or any(s not in SYSTEMS for s in systems):
        raise SystemExit(f"flotilla bench failover: --systems is a comma-separated subset of {','.join(SYSTEMS)}")
    if "etcd" in systems and not os.access(args.etcd_bin, os.X_OK):
        raise SystemExit(f"flotilla bench failover: no etcd at {args.etcd_bin}; run scripts/install_bench_deps.sh (or --systems flotilla)")
    text = args.output != "json"
    out = sys.stdout

    def log(line: str) -> None:
        (out if text else sys.stderr).write(line + "\n")
        (out if text else sys.stderr).flush()

    tmp = None
    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="flotilla-failover-")
        workdir = Path(tmp.name)
    log(
        f"failover: {args.rounds} round(s) per system; {args.writers} writers + 1 probe per shard every {args.probe_interval:g} s; "
        f"warmup {args.warmup:g} s, observe {args.observe:g} s after the kill; per-call deadline {args.timeout:g} s; cpus {os.cpu_count()}"
    )
    results: dict[str, Any] = {}
    try:
        for name in systems:
            log(f"starting {name} ...")
            system: System = FlotillaSystem(workdir, args.shards) if name == "flotilla" else EtcdSystem(workdir, args.etcd_bin)
            try:
                log(f"  {name}: {system.how}; endpoints {','.join(system.endpoints)}")
                results[name] = asyncio.run(run_system(system, args, log, out if text else None))
            finally:
                system.stop()
    finally:
        if tmp is not None:
            tmp.cleanup()
    summaries = {n: r["summary"] for n, r in results.items()}
    if text:
        out.write(format_summary(summaries, args.observe) + "\n")
    else:
        out.write(
            json.dumps(
                {
                    "config": {
                        "rounds": args.rounds, "writers": args.writers, "probe_interval_s": args.probe_interval,
                        "warmup_s": args.warmup, "observe_s": args.observe, "deadline_s": args.timeout,
                        "val_size": args.val_size, "cpus": os.cpu_count(),
                    },
                    "systems": results,
                },
                indent=2,
            )
            + "\n"
        )
    return 0
