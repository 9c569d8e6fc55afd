"""`flotilla server --placement --store --router`: a placement server, a store
node, an etcd router, or any combination.

One process has one GroupHost (one RocksDB, one Raft transport) and one gRPC
server on --listen carrying the Raft transport and the services of its
roles: Placement (placement.proto) for --placement, Store and StoreAdmin
(store.proto) for --store. The placement group is Raft group 0 on that
host; shard ids start at 1. A process with both roles is one node id for
both.

A cluster (placement decides): --placement servers name each other with
--peers (id=host:port, themselves included; the voters of the placement
group default to those ids). A --store node given --join (placement
endpoints) registers itself, heartbeats, reports the shards it leads, watches
the map and hosts the replicas the map assigns it (shard/agent/).
The placement leader bootstraps the shard map (--slots, --initial-shards,
--replicas) once --bootstrap-stores store nodes are registered and up; a
cluster that exists is never bootstrapped again (a restart is safe). A
process with both roles joins its own placement (and its --peers) unless
--join says otherwise. See README, "A cluster by hand".

--router serves etcd v3 clients (router/server.py) on --router-listen
(default 127.0.0.1:2379), following placement's map at --join (or
--router-placement; default with --placement: this process and its
--peers). It registers with placement as a ROUTER node (MemberList lists
every router up) and sends Lease RPCs to the placement leader. Its options
are flotilla/router_main.py's, prefixed `--router-`; --slots is the
cluster's. Alone (no --placement/--store) it opens no data directory and
--node-id, if given, is its member id in the map (default: a random one).
`flotilla playground` (flotilla/playground.py) starts all three roles.

Static store clusters (no placement, tests of the store alone): --store
without --join bootstraps shards 1..N of --shards statically: shard i owns
the i-th of N equal contiguous slot ranges of --slots, with the nodes of
--voters as its replicas. Every node gets the same --shards, --slots and
--voters. Three by hand, on ports chosen up front:

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
import logging
import os
import random

from flotilla import memtrace, metrics, placement_main, procs, router_main
from flotilla.lockresolver import StoreLockResolver
from flotilla.procs import MAX_MESSAGE_BYTES as MAX_MESSAGE_BYTES  # noqa: F401 - kept importable from here
from flotillapb import store_pb2_grpc
from rpc import tls
from rpc.placementclient import PlacementClient, parse_endpoints
from placement.server import PLACEMENT_GROUP_ID
from raft.core.errors import CodecError
from raft.runtime.clock import SystemClock
from raft.runtime.host import GroupHost, HostConfig
from raft.transport.faults import wrap_from_env
from raft.transport.grpc_transport import GrpcTransport
from router.membership import EMBEDDED_INTERVAL_S
from shard.agent import AgentConfig, StoreAgent
from shard.local import LocalStore
from shard.node import NodeConfig, StoreNode
from shard.quota import quota_bytes
from shard.rocks import RocksEngine
from shard.space import RocksSpace
from shard.service import StoreAdminService, StoreService
from shard.slots import DEFAULT_SLOTS, MAX_SLOTS

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", action="store_true", help="run the store role")
    p.add_argument("--router", action="store_true", help="run an etcd v3 router (options --router-*) following placement's map")
    p.add_argument("--placement", action="store_true", help="run the placement role (Raft group 0 of this process)")
    p.add_argument(
        "--join",
        default="",
        help="host:port,... of placement servers: the store registers there and hosts what the map assigns it "
        "(default with --placement: this process and its --peers; without, and without --placement: static --shards)",
    )
    p.add_argument(
        "--listen-client-urls",
        default="",
        help="etcd's flag: serve etcd v3 clients on this URL (http://HOST:PORT, or https:// with --router-cert-file "
        "and --router-key-file); the same as --router --router-listen HOST:PORT",
    )
    p.add_argument("--zone", default="", help="the store's zone label (placement spreads a shard's replicas over zones)")
    p.add_argument("--heartbeat-ms", type=int, default=1000, help="store heartbeat interval to placement")
    procs.add_node_arguments(p, required=False, required_help="required with --store or --placement")
    p.add_argument("--shards", type=int, default=1, help="bootstrap shards 1..N, each an equal slot range")
    p.add_argument("--slots", type=int, default=DEFAULT_SLOTS, help=f"slots of the cluster (at most {MAX_SLOTS})")
    p.add_argument("--voters", default="1,2,3", help="node ids of every shard's initial replicas")
    p.add_argument(
        "--peers",
        default="",
        help="id=host:port,... of the nodes (itself included) when the ports are known up front; "
        "else a harness calls StoreAdmin.SetPeers once every node listens",
    )
    p.add_argument("--closed-ts-ms", type=int, default=200, help="idle shard leaders close a timestamp this often")
    p.add_argument("--watch-queue-events", type=int, default=10_000, help="events a watcher may lag behind before it is cancelled")
    p.add_argument("--watch-progress-ms", type=int, default=1_000, help="default progress notification interval")
    p.add_argument(
        "--quota-backend-bytes", type=int, default=0,
        help="the store's space quota (etcd's flag): over it the node raises the NOSPACE alarm and refuses writes "
        "that add data; 0: 2 GiB (etcd's default), below 0: no quota",
    )
    p.add_argument("--space-check-ms", type=int, default=1_000, help="how often the store measures the space it uses")
    procs.add_raft_arguments(p)
    procs.add_peer_tls_arguments(p)
    placement_main.add_placement_arguments(p, bootstrap_stores=3, key_deleter="store")
    router_main.add_arguments(p, prefix="router-")
    metrics.add_arguments(p)


def bootstrap_slots(shard_index: int, shards: int, slot_count: int) -> tuple[tuple[int, int], ...]:
    """Slots of the shard_index-th (0-based) of `shards` equal contiguous ranges."""
    return ((shard_index * slot_count // shards, (shard_index + 1) * slot_count // shards),)


def parse_peers(text: str) -> dict[int, str]:
    """`1=127.0.0.1:7001,2=127.0.0.1:7002` -> {1: "127.0.0.1:7001", 2: ...}."""
    return procs.parse_id_addresses(text, complaint="flotilla server: --peers wants id=host:port,...")


def _router_placement(args: argparse.Namespace, address: str, peers: dict[int, str]) -> str:
    """The placement servers a --router follows: --router-placement, else --join,
    else (with --placement) this process and its --peers."""
    if args.router_placement or args.router_static_shards:
        return str(args.router_placement)
    if args.join:
        return ",".join(parse_endpoints(args.join))
    if args.placement:
        return ",".join([address, *(a for nid, a in sorted(peers.items()) if nid != args.node_id)])
    raise SystemExit("flotilla server: --router needs placement endpoints: --join host:port,... (or --router-placement)")


def _route_statically(args: argparse.Namespace, address: str, peers: dict[int, str]) -> None:
    """A store of a static cluster (--shards and --peers, no placement) serving
    etcd clients: its router takes the same static layout over the same
    stores, unless its own --router-* flags say otherwise."""
    if args.router_placement or args.router_static_shards:
        return
    args.router_static_shards = args.shards
    if not args.router_store_peers:
        args.router_store_peers = ",".join(f"{nid}={a}" for nid, a in sorted({**peers, args.node_id: address}.items()))


async def _start_router(
    args: argparse.Namespace, placement: str, node_id: int, *, local: LocalStore | None = None
) -> router_main.RouterServer:
    """With `local` (--store --router): requests for this node's replicas are
    direct calls into it (shard/local.py), the rest go over Forward streams."""
    return await router_main.start(
        args, "router-", placement=placement, slot_count=args.slots, node_id=args.router_node_id or node_id, local=local
    )


async def serve_router(args: argparse.Namespace) -> None:
    """--router alone: no data directory, no Raft host."""
    metrics_urls = metrics.parse_urls(args.listen_metrics_urls, what="flotilla server")
    router = await _start_router(args, _router_placement(args, "", {}), args.node_id)
    info = {"port": router.port, "pid": os.getpid(), "node_id": router.member_id, "router_port": router.port}
    if router.gateway_urls:
        info["gateway_urls"] = router.gateway_urls
    mserver = await metrics.serve(metrics_urls, router=router)
    if mserver is not None:
        info["metrics_urls"] = mserver.urls
    shown = f" metrics={','.join(mserver.urls)}" if mserver is not None else ""
    procs.announce_ready(args.ready_file, info, f"ready port={router.port} pid={os.getpid()} router={router.member_id}{shown}")
    procs.tune_gc()  # fewer young-generation collections under load (flotilla/procs.py)
    log.info("router node=%d serving etcd v3 on %s", router.member_id, router.address)

    async def stop() -> None:
        if mserver is not None:
            await mserver.stop()
        await router.stop()

    await procs.serve_until_signalled(before_cancel=stop)


def apply_client_urls(args: argparse.Namespace) -> None:
    """--listen-client-urls (etcd's flag) as --router --router-listen: one URL,
    http:// or (with the router's certificate flags) https://."""
    urls = [u.strip() for u in args.listen_client_urls.split(",") if u.strip()]
    if not urls:
        return
    if len(urls) > 1:
        raise SystemExit("flotilla server: --listen-client-urls: one URL (a server serves clients on one address)")
    scheme, sep, hostport = urls[0].partition("://")
    if not sep or scheme not in ("http", "https") or ":" not in hostport or hostport.endswith(":"):
        raise SystemExit(f"flotilla server: --listen-client-urls {urls[0]}: want http://HOST:PORT or https://HOST:PORT")
    if scheme == "https" and not (args.router_cert_file and args.router_key_file):
        raise SystemExit(f"flotilla server: --listen-client-urls {urls[0]}: https:// needs --router-cert-file and --router-key-file")
    if scheme == "http" and args.router_cert_file:
        raise SystemExit(f"flotilla server: --listen-client-urls {urls[0]}: the client port serves TLS (--router-cert-file): use https://")
    args.router = True
    args.router_listen = hostport.rstrip("/")


async def serve(args: argparse.Namespace) -> None:
    memtrace.start_from_env()  # FLOTILLA_TRACEMALLOC: where the memory goes (off by default)
    apply_client_urls(args)
    if not (args.store or args.placement or args.router):
        raise SystemExit("flotilla server: give a role: --placement, --store, --router, or any combination")
    metrics_urls = metrics.parse_urls(args.listen_metrics_urls, what="flotilla server")
    procs.configure_peer_tls(args, what="flotilla server")
    if args.router and not (args.store or args.placement):
        await serve_router(args)
        return
    if not args.node_id or not args.data_dir:
        raise SystemExit("flotilla server: --store and --placement need --node-id and --data-dir")
    if not 0 < args.slots <= MAX_SLOTS:
        raise SystemExit(f"flotilla server: need 0 < --slots <= {MAX_SLOTS}")
    joining = args.store and (bool(args.join) or args.placement)
    if args.store and not joining and not 0 < args.shards <= args.slots:
        raise SystemExit(f"flotilla server: need 0 < --shards <= --slots <= {MAX_SLOTS}")
    peers = parse_peers(args.peers)
    data_dir, db, store = procs.open_raft_storage(args.data_dir)
    for prop in ("rocksdb.cur-size-all-mem-tables", "rocksdb.block-cache-usage", "rocksdb.estimate-table-readers-mem"):
        memtrace.add_figure(prop, lambda prop=prop: db.property_int_value(prop))
    seed, rng = procs.seeded_rng(args.seed)
    clock = SystemClock()
    spool_dir = data_dir / "snapshots-in"  # received snapshots, spooled until installed
    spool_dir.mkdir(exist_ok=True)
    transport = GrpcTransport(
        args.node_id, listen=None, rng=random.Random(rng.getrandbits(64)), snapshot_spool_dir=str(spool_dir)
    )
    # Fault campaigns: FLOTILLA_FAULTS_FILE / FLOTILLA_CLOCK_OFFSET_MS (raft/transport/faults.py).
    host_transport, clock = wrap_from_env(transport, clock, node_id=args.node_id, rng=random.Random(seed ^ 0xFA17))
    host = GroupHost(
        args.node_id,
        store,
        host_transport,
        clock=clock,
        rng=rng,
        config=HostConfig(
            tick_interval_s=args.tick_ms / 1000,
            election_ticks=args.election_ticks,
            # Idle shards go quiet: their closed timestamps travel on the side
            # channel (shard/node/closedts.py), not as Raft entries.
            quiesce_ticks=HostConfig().quiesce_ticks,
            snapshot_entries=args.snapshot_entries,
            compaction_margin=args.compaction_margin,
        ),
    )
    host.crash_hook = procs.crash_hook_from_env()
    server = procs.grpc_server()
    transport.add_to_server(server)

    pnode = None
    if args.placement:
        voters = placement_main.placement_voters(args, peers)
        pnode = await placement_main.add_placement(
            host, db, server, node_id=args.node_id, clock=clock, rng=random.Random(rng.getrandbits(64)), voters=voters, args=args
        )
    node = None
    store_service: StoreService | None = None
    space: RocksSpace | None = None
    if args.store:
        try:
            node = StoreNode(
                args.node_id,
                host,
                RocksEngine(db),
                clock=clock,
                config=NodeConfig(
                    closed_ts_interval_s=args.closed_ts_ms / 1000,
                    watch_queue_events=args.watch_queue_events,
                    watch_progress_interval_s=args.watch_progress_ms / 1000,
                    quota_bytes=quota_bytes(args.quota_backend_bytes),
                    space_check_interval_s=args.space_check_ms / 1000,
                ),
            )
        except CodecError as exc:  # stored shards this build cannot read (e.g. the pre-#17 revision encoding)
            raise SystemExit(f"flotilla server: node {args.node_id}: data directory {data_dir}: {exc}") from None
        if joining:
            # The shards this node hosted before a restart; the map brings the rest.
            for sid in node.shards_on_disk():
                if sid != PLACEMENT_GROUP_ID:
                    await node.host_shard(sid, slot_count=args.slots, slot_ranges=(), bootstrap=False)
        else:
            voters_ = tuple(int(v) for v in args.voters.split(",") if v)
            for i in range(args.shards):
                await node.add_shard(i + 1, voters=voters_, slot_count=args.slots, slot_ranges=bootstrap_slots(i, args.shards, args.slots))
        split = await node.open_split_shards()  # shards created by splits before a restart
        if split:
            log.info("node=%d reopened split shards %s", args.node_id, split)
        store_service = StoreService(node)
        store_pb2_grpc.add_StoreServicer_to_server(store_service, server)
        store_pb2_grpc.add_StoreAdminServicer_to_server(StoreAdminService(node), server)
        space = node.space = RocksSpace(db)
    # Every group restored what it needed from its spooled snapshot (create_group):
    # what is left is from transfers that never completed or were not installed.
    for stale in spool_dir.iterdir():
        stale.unlink()

    port = tls.add_peer_port(server, args.listen)
    await server.start()
    address = f"{args.listen.rpartition(':')[0]}:{port}"
    agent = None
    if pnode is not None:
        pnode.address = address
        for nid, peer_address in peers.items():
            if nid != args.node_id:
                pnode.peers[nid] = peer_address
                host.set_peer(nid, peer_address)
    if node is not None:
        node.address = address
        if joining:
            endpoints = parse_endpoints(args.join) or [address, *(a for nid, a in sorted(peers.items()) if nid != args.node_id)]
            node.lock_resolver = StoreLockResolver(endpoints, args.slots)
            agent = StoreAgent(
                node,
                host,
                PlacementClient(endpoints),
                labels=(("zone", args.zone),) if args.zone else (),
                config=AgentConfig(heartbeat_interval_s=args.heartbeat_ms / 1000),
            )
        else:
            for nid, peer_address in peers.items():
                node.set_peer(nid, peer_address)
    router = None
    if args.router:
        local = LocalStore(store_service, node.node_id) if node is not None and store_service is not None else None
        if node is not None and not joining:
            _route_statically(args, address, peers)
        router = await _start_router(args, _router_placement(args, address, peers), 0, local=local)
        if agent is not None and router.registration is not None:
            # One heartbeat a second from this process, not two: placement
            # hears the router with the store (router/membership.py).
            agent.reporter.routers = (router.member_id,)
            router.registration.interval_s = max(router.registration.interval_s, EMBEDDED_INTERVAL_S)
    mserver = await metrics.serve(metrics_urls, host=host, transport=transport, node=node, pnode=pnode, router=router)
    info = {"port": port, "pid": os.getpid(), "node_id": args.node_id}
    if router is not None:
        info["router_port"] = router.port
        if router.gateway_urls:
            info["gateway_urls"] = router.gateway_urls
    if mserver is not None:
        info["metrics_urls"] = mserver.urls
    extra = f" router_port={router.port}" if router is not None else ""
    extra += f" metrics={','.join(mserver.urls)}" if mserver is not None else ""
    procs.announce_ready(args.ready_file, info, f"ready port={port} pid={os.getpid()} node={args.node_id}{extra}")
    procs.tune_gc()  # fewer young-generation collections under load (flotilla/procs.py)
    roles = "+".join(r for r, on in (("placement", args.placement), ("store", args.store), ("router", args.router)) if on)
    log.info("node=%d %s serving on port %d (seed %d)", args.node_id, roles, port, seed)

    async def run_all() -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(host.run(), name="raft-host")
            tg.create_task(procs.trim_malloc(), name="malloc-trim")
            if pnode is not None:
                tg.create_task(pnode.run(), name="placement-duties")
            if node is not None:
                tg.create_task(node.run(), name="store-closed-ts")
            if agent is not None:
                tg.create_task(agent.run(), name="store-agent")

    async def stop_serving() -> None:
        if mserver is not None:
            await mserver.stop()
        if router is not None:
            await router.stop()
        await server.stop(0.5)

    try:
        await procs.serve_until_signalled(run_all(), before_cancel=stop_serving)
    finally:
        if agent is not None:
            await agent.client.close()
        if space is not None:
            space.close()  # a defragment under way finishes before the DB closes
        store.close()
        db.close()


def main(args: argparse.Namespace) -> int:
    asyncio.run(serve(args))
    return 0
