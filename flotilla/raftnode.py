"""`flotilla raftnode`: one process hosting many Raft groups of RegisterMachines.

It is the multi-group runtime (raft/runtime) with nothing on top: a real
process with real RocksDB and real gRPC, used by the runtime's integration
tests and by `flotilla bench raft`. One gRPC server on --listen carries both
the peer transport (RaftTransport) and the admin service (RaftAdmin,
proto/flotillapb/raftadmin.proto). Peers are told each other's addresses
through RaftAdmin.SetPeers, since every process binds port 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sys
import time

import grpc
import grpc.aio

from flotilla import procs
from flotilla.procs import MAX_MESSAGE_BYTES as MAX_MESSAGE_BYTES  # noqa: F401 - kept importable from here
from flotillapb import raftadmin_pb2 as pb
from flotillapb import raftadmin_pb2_grpc
from raft.core import ConfState, ProposalDropped, StateRole
from raft.runtime.clock import SystemClock
from raft.runtime.host import GroupHost, HostConfig
from raft.runtime.registers import RegisterMachine
from raft.transport.grpc_transport import GrpcTransport
from rpc import tls

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    procs.add_node_arguments(p)
    p.add_argument("--groups", type=int, default=1, help="host groups 1..N")
    p.add_argument("--voters", default="1,2,3", help="node ids of every group's initial voters")
    p.add_argument("--quiesce-ticks", type=int, default=30, help="0 disables quiescence")
    procs.add_raft_arguments(p)
    procs.add_peer_tls_arguments(p)


class _Admin(raftadmin_pb2_grpc.RaftAdminServicer):
    def __init__(self, host: GroupHost, machines: dict[int, RegisterMachine], transport: GrpcTransport) -> None:
        self.host = host
        self.machines = machines
        self.transport = transport

    async def SetPeers(self, request: pb.SetPeersRequest, context: grpc.aio.ServicerContext) -> pb.SetPeersResponse:  # noqa: N802
        for peer in request.peers:
            self.host.set_peer(peer.node_id, peer.address)
        return pb.SetPeersResponse()

    async def Propose(self, request: pb.ProposeRequest, context: grpc.aio.ServicerContext) -> pb.ProposeResponse:  # noqa: N802
        gid = request.group_id
        if gid not in self.machines:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"group {gid} is not hosted here")
        st = self.host.status(gid)
        if st.soft_state.role != StateRole.LEADER:
            return pb.ProposeResponse(not_leader=True, not_leader_hint=st.soft_state.leader_id)
        timeout_s = (request.timeout_ms or 5000) / 1000
        try:
            index = await self.host.propose(gid, bytes(request.data), timeout_s=timeout_s)
        except ProposalDropped as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"proposal dropped: {exc}")
        except TimeoutError:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "timed out: the outcome of the proposal is unknown")
        assert isinstance(index, int)
        return pb.ProposeResponse(index=index)

    async def Read(self, request: pb.ReadRequest, context: grpc.aio.ServicerContext) -> pb.ReadResponse:  # noqa: N802
        gid = request.group_id
        sm = self.machines.get(gid)
        if sm is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"group {gid} is not hosted here")
        if request.linearizable:
            try:
                await self.host.read_index(gid)
            except TimeoutError:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "read index timed out")
        v = sm.get(bytes(request.key))
        return pb.ReadResponse(found=v is not None, value=v or b"", applied_index=sm.applied_index())

    async def Status(self, request: pb.StatusRequest, context: grpc.aio.ServicerContext) -> pb.StatusResponse:  # noqa: N802
        gids = list(request.group_ids) or self.host.group_ids()
        out = []
        for gid in gids:
            if gid not in self.machines:
                continue
            st = self.host.status(gid)
            sm = self.machines[gid]
            out.append(
                pb.GroupStatus(
                    group_id=gid,
                    leader=st.soft_state.leader_id,
                    term=st.hard_state.term,
                    commit=st.hard_state.commit,
                    applied=st.applied,
                    first_index=st.first_index,
                    last_index=st.last_index,
                    is_leader=st.soft_state.role == StateRole.LEADER,
                    quiet=self.host.is_quiet(gid),
                    applied_count=sm.count,
                    digest=sm.digest,
                    voters=st.conf_state.voters,
                    learners=st.conf_state.learners,
                )
            )
        s = self.host.stats
        ts = self.transport.stats()
        return pb.StatusResponse(
            node_id=self.host.node_id,
            groups=out,
            stats=pb.HostStats(
                rounds=s.rounds,
                syncs=s.syncs,
                entries_persisted=s.entries_persisted,
                entries_applied=s.entries_applied,
                messages_sent=s.messages_sent,
                messages_dropped=s.messages_dropped,
                proposals=s.proposals,
                snapshots_created=s.snapshots_created,
                snapshots_restored=s.snapshots_restored,
                ticks=s.ticks,
                transport_batches=ts.batches,
                transport_received=ts.received,
                cpu_seconds=time.process_time(),
            ),
        )

    async def TransferLeader(self, request: pb.TransferLeaderRequest, context: grpc.aio.ServicerContext) -> pb.TransferLeaderResponse:  # noqa: N802
        if request.group_id not in self.machines:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"group {request.group_id} is not hosted here")
        self.host.transfer_leader(request.group_id, request.target)
        return pb.TransferLeaderResponse()

    async def Load(self, request: pb.LoadRequest, context: grpc.aio.ServicerContext) -> pb.LoadResponse:  # noqa: N802
        gids = list(request.group_ids) or self.host.group_ids()
        led = [g for g in gids if g in self.machines and self.host.status(g).soft_state.role == StateRole.LEADER]
        in_flight = max(1, request.in_flight)
        total = request.total or (1 << 62)
        deadline = time.monotonic() + (request.duration_ms or 60_000) / 1000
        value = b"v" * max(0, request.value_size)
        latencies: list[float] = []
        counters = {"issued": 0, "ok": 0, "failed": 0}

        async def worker(gid: int, w: int) -> None:
            while counters["issued"] < total and time.monotonic() < deadline:
                counters["issued"] += 1
                key = f"k{w}-{counters['issued'] % 1024}".encode()
                t0 = time.perf_counter()
                try:
                    await self.host.propose(gid, key + b"=" + value, timeout_s=5.0)
                except (ProposalDropped, TimeoutError):
                    counters["failed"] += 1
                    if self.host.status(gid).soft_state.role != StateRole.LEADER:
                        return
                    continue
                latencies.append(time.perf_counter() - t0)
                counters["ok"] += 1

        syncs0, cpu0, t0 = self.host.stats.syncs, time.process_time(), time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for gid in led:
                for w in range(in_flight):
                    tg.create_task(worker(gid, w))
        secs = time.perf_counter() - t0
        latencies.sort()

        def pct(q: float) -> float:
            return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0.0

        return pb.LoadResponse(
            committed=counters["ok"],
            failed=counters["failed"],
            seconds=secs,
            syncs=self.host.stats.syncs - syncs0,
            cpu_seconds=time.process_time() - cpu0,
            p50_ms=pct(0.5),
            p99_ms=pct(0.99),
        )


async def serve(args: argparse.Namespace) -> None:
    procs.configure_peer_tls(args, what="flotilla raftnode")
    _, db, store = procs.open_raft_storage(args.data_dir)
    seed, rng = procs.seeded_rng(args.seed)
    transport = GrpcTransport(args.node_id, listen=None, rng=random.Random(rng.getrandbits(64)))
    host = GroupHost(
        args.node_id,
        store,
        transport,
        clock=SystemClock(),
        rng=rng,
        config=HostConfig(
            tick_interval_s=args.tick_ms / 1000,
            election_ticks=args.election_ticks,
            quiesce_ticks=args.quiesce_ticks,
            snapshot_entries=args.snapshot_entries,
            compaction_margin=args.compaction_margin,
        ),
    )
    host.crash_hook = procs.crash_hook_from_env()
    voters = tuple(int(v) for v in args.voters.split(",") if v)
    machines: dict[int, RegisterMachine] = {}
    for gid in range(1, args.groups + 1):
        machines[gid] = RegisterMachine(db, gid)
        await host.create_group(gid, machines[gid], bootstrap=ConfState(voters=voters))

    server = procs.grpc_server()
    transport.add_to_server(server)
    raftadmin_pb2_grpc.add_RaftAdminServicer_to_server(_Admin(host, machines, transport), server)
    port = tls.add_peer_port(server, args.listen)
    await server.start()
    info = {"port": port, "pid": os.getpid(), "node_id": args.node_id}
    procs.announce_ready(args.ready_file, info, f"ready port={port} pid={os.getpid()} node={args.node_id}")
    log.info("node=%d serving on port %d with %d groups (seed %d)", args.node_id, port, len(machines), seed)
    try:
        await procs.serve_until_signalled(host.run())
    finally:
        await server.stop(0.5)
        store.close()
        db.close()


def main(args: argparse.Namespace) -> int:
    asyncio.run(serve(args))
    return 0
