"""`flotilla server --store`: a store node process.

One gRPC server on --listen carries the Raft transport, the Store service
and StoreAdmin (proto/flotillapb/store.proto), so the address a peer is
given through StoreAdmin.SetPeers is also its Store address. Until placement
exists, the shards are bootstrapped statically: shard i of --shards N (ids 1..N)
owns the i-th of N equal contiguous slot ranges of --slots, with the nodes
of --voters as its replicas. Every node of a cluster gets the same --shards,
--slots and --voters.

Three by hand, on ports chosen up front:

    P=1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003
    flotilla server --store --node-id 1 --data-dir /tmp/fl/n1 --listen 127.0.0.1:7001 --shards 4 --peers $P &
    flotilla server --store --node-id 2 --data-dir /tmp/fl/n2 --listen 127.0.0.1:7002 --shards 4 --peers $P &
    flotilla server --store --node-id 3 --data-dir /tmp/fl/n3 --listen 127.0.0.1:7003 --shards 4 --peers $P &

With port 0 (tests), each process reports its port (--ready-file, and a
`ready port=...` line) and the harness calls StoreAdmin.SetPeers on each
(flotilla/storecluster.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import signal
import sys
from pathlib import Path

import grpc.aio

from flotillapb import store_pb2_grpc
from raft.runtime.clock import SystemClock
from raft.runtime.host import GroupHost, HostConfig
from raft.storage.rocks import RocksLogStore, open_db
from raft.transport.grpc_transport import GrpcTransport
from shard.node import NodeConfig, StoreNode
from shard.rocks import RocksEngine
from shard.service import StoreAdminService, StoreService
from shard.slots import DEFAULT_SLOTS, MAX_SLOTS

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 << 20


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", action="store_true", help="run the store role (the only role so far)")
    p.add_argument("--node-id", type=int, required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--listen", default="127.0.0.1:0", help="host:port (port 0: any free port, reported)")
    p.add_argument("--ready-file", help='write {"port":..,"pid":..,"node_id":..} here once serving')
    p.add_argument("--shards", type=int, default=1, help="bootstrap shards 1..N, each an equal slot range")
    p.add_argument("--slots", type=int, default=DEFAULT_SLOTS, help=f"slots of the cluster (at most {MAX_SLOTS})")
    p.add_argument("--voters", default="1,2,3", help="node ids of every shard's initial replicas")
    p.add_argument(
        "--peers",
        default="",
        help="id=host:port,... of the nodes (itself included) when the ports are known up front; "
        "else a harness calls StoreAdmin.SetPeers once every node listens",
    )
    p.add_argument("--tick-ms", type=int, default=100)
    p.add_argument("--election-ticks", type=int, default=10)
    p.add_argument("--closed-ts-ms", type=int, default=200, help="idle shard leaders close a timestamp this often")
    p.add_argument("--watch-queue-events", type=int, default=10_000, help="events a watcher may lag behind before it is cancelled")
    p.add_argument("--watch-progress-ms", type=int, default=1_000, help="default progress notification interval")
    p.add_argument("--snapshot-entries", type=int, default=10_000)
    p.add_argument("--compaction-margin", type=int, default=1_000, help="entries kept behind a snapshot for slow followers")
    p.add_argument("--seed", type=int, default=None)


def bootstrap_slots(shard_index: int, shards: int, slot_count: int) -> tuple[tuple[int, int], ...]:
    """Slots of the shard_index-th (0-based) of `shards` equal contiguous ranges."""
    return ((shard_index * slot_count // shards, (shard_index + 1) * slot_count // shards),)


def parse_peers(text: str) -> dict[int, str]:
    """`1=127.0.0.1:7001,2=127.0.0.1:7002` -> {1: "127.0.0.1:7001", 2: ...}."""
    out: dict[int, str] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        nid, sep, address = item.partition("=")
        if not sep or not nid.isdigit() or not address:
            raise SystemExit(f"flotilla server: --peers wants id=host:port,..., got {item!r}")
        out[int(nid)] = address
    return out


async def serve(args: argparse.Namespace) -> None:
    if not args.store:
        raise SystemExit("flotilla server: no role given (only --store exists so far)")
    if not 0 < args.shards <= args.slots <= MAX_SLOTS:
        raise SystemExit(f"flotilla server: need 0 < --shards <= --slots <= {MAX_SLOTS}")
    sys.setswitchinterval(0.001)  # let the sync thread get the GIL back quickly (raft/storage/rocks.py)
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    db = open_db(data_dir / "db")
    store = RocksLogStore(db, keep_snapshot_data=True)
    store.recover()
    seed = args.seed if args.seed is not None else random.SystemRandom().getrandbits(64)
    rng = random.Random(seed)
    clock = SystemClock()
    spool_dir = data_dir / "snapshots-in"  # received snapshots, spooled until installed
    spool_dir.mkdir(exist_ok=True)
    transport = GrpcTransport(
        args.node_id, listen=None, rng=random.Random(rng.getrandbits(64)), snapshot_spool_dir=str(spool_dir)
    )
    host = GroupHost(
        args.node_id,
        store,
        transport,
        clock=clock,
        rng=rng,
        config=HostConfig(
            tick_interval_s=args.tick_ms / 1000,
            election_ticks=args.election_ticks,
            quiesce_ticks=0,  # closed-timestamp entries keep every shard busy anyway
            snapshot_entries=args.snapshot_entries,
            compaction_margin=args.compaction_margin,
        ),
    )
    node = StoreNode(
        args.node_id,
        host,
        RocksEngine(db),
        clock=clock,
        config=NodeConfig(
            closed_ts_interval_s=args.closed_ts_ms / 1000,
            watch_queue_events=args.watch_queue_events,
            watch_progress_interval_s=args.watch_progress_ms / 1000,
        ),
    )
    voters = tuple(int(v) for v in args.voters.split(",") if v)
    for i in range(args.shards):
        await node.add_shard(i + 1, voters=voters, slot_count=args.slots, slot_ranges=bootstrap_slots(i, args.shards, args.slots))
    split = await node.open_split_shards()  # shards created by splits before a restart
    if split:
        log.info("node=%d reopened split shards %s", args.node_id, split)
    # Every group restored what it needed from its spooled snapshot (create_group):
    # what is left is from transfers that never completed or were not installed.
    for stale in spool_dir.iterdir():
        stale.unlink()

    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
    )
    transport.add_to_server(server)
    store_pb2_grpc.add_StoreServicer_to_server(StoreService(node), server)
    store_pb2_grpc.add_StoreAdminServicer_to_server(StoreAdminService(node), server)
    port = server.add_insecure_port(args.listen)
    await server.start()
    node.address = f"{args.listen.rpartition(':')[0]}:{port}"
    for nid, address in parse_peers(args.peers).items():
        node.set_peer(nid, address)
    info = {"port": port, "pid": os.getpid(), "node_id": args.node_id}
    if args.ready_file:
        tmp = Path(args.ready_file + ".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(args.ready_file)
    print(f"ready port={port} pid={os.getpid()} node={args.node_id}", flush=True)
    log.info("node=%d store serving on port %d with %d shards (seed %d)", args.node_id, port, args.shards, seed)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def run_all() -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(host.run(), name="raft-host")
            tg.create_task(node.run(), name="store-closed-ts")

    run_task = asyncio.create_task(run_all())
    stop_task = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait({run_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if run_task in done:
            run_task.result()  # fail-stop: re-raise what ended the node
    finally:
        await server.stop(0.5)
        run_task.cancel()
        stop_task.cancel()
        await asyncio.gather(run_task, stop_task, return_exceptions=True)
        store.close()
        db.close()


def main(args: argparse.Namespace) -> int:
    asyncio.run(serve(args))
    return 0
