"""The placement role: `flotilla server --placement` (flotilla/server.py calls
`add_placement`), or alone: `python -m flotilla.placement_main ...`.

One gRPC server on --listen carries the Raft transport of the placement
group (group 0) and the Placement service (proto/flotillapb/placement.proto),
so the address a peer is given through Placement.SetPeers (or --peers) is
also its Placement address.

Three by hand, on ports chosen up front:

    P=1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103
    python -m flotilla.placement_main --node-id 1 --data-dir /tmp/flp/p1 --listen 127.0.0.1:7101 --peers $P &
    python -m flotilla.placement_main --node-id 2 --data-dir /tmp/flp/p2 --listen 127.0.0.1:7102 --peers $P &
    python -m flotilla.placement_main --node-id 3 --data-dir /tmp/flp/p3 --listen 127.0.0.1:7103 --peers $P &

The voters of the placement group default to the ids named in --peers.
With port 0 (tests), each process reports its port (--ready-file, and a
`ready port=...` line) and the harness calls Placement.SetPeers on each
(flotilla/placementcluster.py).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sys

import grpc.aio
from rocksdict import Rdict

from flotilla import metrics
from flotilla.procs import MAX_MESSAGE_BYTES as MAX_MESSAGE_BYTES  # noqa: F401 - kept importable from here
from flotilla.procs import (
    add_node_arguments,
    add_peer_tls_arguments,
    configure_peer_tls,
    add_raft_arguments,
    announce_ready,
    grpc_server,
    open_raft_storage,
    parse_id_addresses,
    seeded_rng,
    serve_until_signalled,
)
from flotillapb import placement_pb2_grpc, placementauth_pb2_grpc
from placement.authservice import AuthService
from placement.deleter import KeyDeleter, MemoryKeyDeleter, StoreKeyDeleter
from placement.leases import min_lease_ttl_s
from placement.machine import PlacementMachine
from placement.config import PlacementConfig
from placement.server import PLACEMENT_GROUP_ID, PlacementServer
from placement.service import PlacementService
from raft.core import ConfState
from raft.runtime.clock import Clock, SystemClock
from raft.runtime.host import GroupHost, HostConfig
from raft.transport.grpc_transport import GrpcTransport
from rpc import tls

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of the placement role. Names shared with the store role
    (--node-id, --data-dir, --listen, --ready-file, --peers, --tick-ms,
    --election-ticks, --seed) mean the same; `flotilla server` adds only the
    --placement-* ones when it already has those."""
    add_node_arguments(p)
    p.add_argument("--peers", default="", help="id=host:port,... of the placement servers (itself included) when known up front")
    add_raft_arguments(p, compaction_margin=False)
    add_peer_tls_arguments(p)
    p.add_argument("--slots", type=int, default=1024, help="slots of the cluster, fixed at its bootstrap")
    add_placement_arguments(p)
    metrics.add_arguments(p)


def add_placement_arguments(p: argparse.ArgumentParser, *, bootstrap_stores: int = 0, key_deleter: str = "memory") -> None:
    """The --placement-* (and bootstrap, lease key deletion) arguments, with
    the defaults of the process: `flotilla server` bootstraps on its own
    once 3 stores registered and deletes lease keys on the stores; this
    module's process (placement alone, tested with made-up stores)
    bootstraps by RPC only and records deletions in memory."""
    p.add_argument("--placement-voters", default="", help="node ids of the placement group's initial voters (default: the ids in --peers, else 1,2,3)")
    p.add_argument("--down-after", type=float, default=30.0, help="seconds without a heartbeat before a node is marked down")
    p.add_argument(
        "--suspect-after",
        type=float,
        default=3.0,
        help="seconds without a heartbeat before a store is suspect: no replica, promotion or leadership is aimed at it",
    )
    p.add_argument(
        "--bootstrap-stores",
        type=int,
        default=bootstrap_stores,
        help="the placement leader creates the cluster (the shard map over --slots) once this many store nodes "
        "are registered and up; safe on restart (a cluster that exists stays). 0: only the Bootstrap RPC does",
    )
    p.add_argument("--initial-shards", type=int, default=4, help="shards of the bootstrapped cluster (0: one per store node)")
    p.add_argument("--replicas", type=int, default=3, help="replicas of each initial shard (fewer if fewer store nodes)")
    p.add_argument("--split-keys", type=int, default=0, help="the scheduler splits a shard holding at least this many live keys (0: off)")
    p.add_argument("--split-size-bytes", type=int, default=0, help="the scheduler splits a shard holding at least this many live bytes (0: off)")
    p.add_argument(
        "--split-write-rate",
        type=float,
        default=0.0,
        help="the scheduler splits a shard whose leader reports at least this many writes per second, and hands one half's "
        "leadership to another store (0: off)",
    )
    p.add_argument("--merge-keys", type=int, default=0, help="the scheduler merges two adjacent shards on the same nodes each holding fewer live keys than this (0: off)")
    p.add_argument("--merge-size-bytes", type=int, default=0, help="the scheduler merges two adjacent shards on the same nodes each holding fewer live bytes than this (0: off)")
    p.add_argument(
        "--key-deleter",
        choices=("store", "memory"),
        default=key_deleter,
        help="how the keys of ended leases are deleted: store: on the shard leaders (StoreAdmin.DeleteLeaseKeys); "
        "memory: only recorded (placement run alone, without store nodes)",
    )


def parse_peers(text: str) -> dict[int, str]:
    return parse_id_addresses(text, complaint="placement: --peers wants id=host:port,...")


def placement_voters(args: argparse.Namespace, peers: dict[int, str]) -> tuple[int, ...]:
    text = args.placement_voters or ",".join(str(n) for n in sorted(peers)) or "1,2,3"
    return tuple(int(v) for v in text.split(",") if v)


async def add_placement(
    host: GroupHost,
    db: Rdict,
    server: grpc.aio.Server,
    *,
    node_id: int,
    clock: Clock,
    rng: random.Random,
    voters: tuple[int, ...],
    args: argparse.Namespace,
) -> PlacementServer:
    """Add the placement role to a process: group 0 on `host`, the Placement
    service on `server` (call before server.start()). The caller then sets
    `.address` and `.peers` once it listens, and runs `.run()` next to
    `host.run()`. A process with several roles shares one host, DB and server."""
    machine = PlacementMachine(db, PLACEMENT_GROUP_ID)
    # Deletes the keys of ended leases through the shard leaders (StoreAdmin.DeleteLeaseKeys).
    deleter: KeyDeleter = StoreKeyDeleter(lambda: machine.state) if args.key_deleter == "store" else MemoryKeyDeleter()
    node = PlacementServer(
        node_id,
        host,
        machine,
        clock=clock,
        rng=rng,
        deleter=deleter,
        config=PlacementConfig(
            down_after_s=args.down_after,
            suspect_after_s=args.suspect_after,
            min_lease_ttl_s=min_lease_ttl_s(args.election_ticks, args.tick_ms),
            duty_interval_s=args.tick_ms / 1000,
            bootstrap_stores=args.bootstrap_stores,
            slot_count=args.slots,
            initial_shards=args.initial_shards,
            replicas=args.replicas,
            split_keys=args.split_keys,
            split_size_bytes=args.split_size_bytes,
            split_write_rate=args.split_write_rate,
            merge_keys=args.merge_keys,
            merge_size_bytes=args.merge_size_bytes,
        ),
    )
    await host.create_group(PLACEMENT_GROUP_ID, machine, bootstrap=ConfState(voters=voters))
    placement_pb2_grpc.add_PlacementServicer_to_server(PlacementService(node), server)
    placementauth_pb2_grpc.add_PlacementAuthServicer_to_server(AuthService(node), server)  # etcd's users and roles
    return node


async def serve(args: argparse.Namespace) -> None:
    configure_peer_tls(args, what="flotilla placement")
    metrics_urls = metrics.parse_urls(args.listen_metrics_urls, what="flotilla placement")
    peers = parse_peers(args.peers)
    voters = placement_voters(args, peers)
    _, db, store = open_raft_storage(args.data_dir)
    seed, rng = seeded_rng(args.seed)
    clock = SystemClock()
    transport = GrpcTransport(args.node_id, listen=None, rng=random.Random(rng.getrandbits(64)))
    host = GroupHost(
        args.node_id,
        store,
        transport,
        clock=clock,
        rng=random.Random(rng.getrandbits(64)),
        config=HostConfig(
            tick_interval_s=args.tick_ms / 1000,
            election_ticks=args.election_ticks,
            quiesce_ticks=0,  # one group: quiescence would save little and delay failover detection
            snapshot_entries=args.snapshot_entries,
        ),
    )
    server = grpc_server()
    transport.add_to_server(server)
    node = await add_placement(host, db, server, node_id=args.node_id, clock=clock, rng=random.Random(rng.getrandbits(64)), voters=voters, args=args)
    port = tls.add_peer_port(server, args.listen)
    await server.start()
    node.address = f"{args.listen.rpartition(':')[0]}:{port}"
    for nid, address in peers.items():
        if nid != args.node_id:
            node.peers[nid] = address
            host.set_peer(nid, address)
    mserver = await metrics.serve(metrics_urls, host=host, transport=transport, pnode=node)
    info: dict[str, object] = {"port": port, "pid": os.getpid(), "node_id": args.node_id}
    if mserver is not None:
        info["metrics_urls"] = mserver.urls
    shown = f" metrics={','.join(mserver.urls)}" if mserver is not None else ""
    announce_ready(args.ready_file, info, f"ready port={port} pid={os.getpid()} node={args.node_id}{shown}")
    log.info("node=%d placement serving on port %d voters=%s (seed %d)", args.node_id, port, voters, seed)

    async def run_all() -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(host.run(), name="raft-host")
            tg.create_task(node.run(), name="placement-duties")

    async def stop() -> None:
        if mserver is not None:
            await mserver.stop()
        await server.stop(0.5)

    try:
        await serve_until_signalled(run_all(), before_cancel=stop)
    finally:
        store.close()
        db.close()


def main(args: argparse.Namespace) -> int:
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="flotilla-placement", description="A Flotilla placement server.")
    _parser.add_argument("-v", "--verbose", action="store_true", help="show INFO log lines")
    add_arguments(_parser)
    _args = _parser.parse_args()
    logging.basicConfig(level=logging.INFO if _args.verbose else logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    sys.exit(main(_args))
