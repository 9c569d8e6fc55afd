"""The placement node: group 0 of a GroupHost running the placement state
machine, its leader's in-memory duties, the map watch hub and the gRPC servicer.

- `PlacementServer` holds the wiring and the leader's memory: when each node
  was last heard (down detection), their latest heartbeat figures, and lease
  deadlines (placement/leases.py). A server that becomes leader first waits
  for a ReadIndex (so its state has every entry committed before its term),
  then counts every node as heard now and renews every lease to its full
  TTL. Only then does it serve writes that depend on that memory.
- Its duty loop (leader only) marks down the nodes unheard for
  `down_after_s`, revokes expired leases, and deletes the keys of ended
  leases shard by shard through the KeyDeleter seam, logging each shard's
  completion (LeaseKeysDeleted) so a new leader resumes where it stopped.
- `MapWatchHub` fans each applied MapChange out to the WatchMap streams.
- `PlacementService` is the thin servicer: decode, call, encode; one helper
  (`abort_with`) maps errors to gRPC statuses (lease errors carry etcd's
  codes and texts, so a router relays them unchanged).

Lease keys: shard leaders report attachments with LeaseAttach (see
placement.proto); a key has at most one lease.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

import grpc
import grpc.aio

from flotillapb import placement_pb2 as ppb
from flotillapb import placement_pb2_grpc
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from placement import codec
from placement.deleter import KeyDeleter, KeyDeletionFailed
from placement.leases import ExpiryTable, clamp_ttl
from placement.machine import PlacementMachine
from placement.rebalancer import OperatorError, Rebalancer, op_to_pb
from placement.state import (
    AttachKeys,
    Bootstrap,
    Command,
    GrantLease,
    KeyChange,
    Lease,
    LeaseKeysDeleted,
    MapChange,
    NodeKind,
    NodeState,
    PlacementState,
    RegisterNode,
    RejectCode,
    Rejected,
    ReportOutcome,
    ReportResult,
    ReportShard,
    RevokeLease,
    SetNodeState,
    Shard,
    encode_command,
)
from raft.core import ProposalDropped, StateRole
from raft.runtime.clock import Clock
from raft.runtime.host import GroupHost

log = logging.getLogger(__name__)

NOSPACE = epb.AlarmType.NOSPACE

PLACEMENT_GROUP_ID = 0
LEADER_METADATA_KEY = "placement-leader"


@dataclass(frozen=True, slots=True)
class PlacementConfig:
    down_after_s: float = 30.0
    suspect_after_s: float = 3.0
    """A store unheard this long (or down_after_s, if shorter) is suspect: the
    scheduler aims no step at it and does not count it when balancing."""
    min_lease_ttl_s: int = 2
    duty_interval_s: float = 0.1
    revoke_wait_s: float = 5.0
    """LeaseRevoke waits this long for the keys' deletion, then answers anyway (deletion goes on)."""
    delete_retry_s: float = 1.0
    watch_queue: int = 1024
    bootstrap_stores: int = 0
    """Once this many store nodes are registered and up, the leader
    bootstraps the cluster (Bootstrap is idempotent: a cluster that exists
    stays as it is). 0: only the Bootstrap RPC does."""
    slot_count: int = 1024
    initial_shards: int = 0
    """Shards of an automatic bootstrap (0: one per up store node)."""
    replicas: int = 3
    split_keys: int = 0
    """The scheduler splits a shard with at least this many live keys (0: never on key count)."""
    split_size_bytes: int = 0
    """The scheduler splits a shard with at least this many live bytes (0: never on size)."""
    merge_keys: int = 0
    """The scheduler merges two small shards each with fewer live keys than this (0: never on key count)."""
    merge_size_bytes: int = 0
    """The scheduler merges two small shards each with fewer live bytes than this (0: never on size)."""


# ----------------------------------------------------------------- errors


class PlacementError(Exception):
    pass


class NotLeaderError(PlacementError):
    def __init__(self, leader_id: int, address: str) -> None:
        super().__init__(f"placement: not leader (leader is node {leader_id} at {address or 'unknown'})")
        self.leader_id = leader_id
        self.address = address


class LeaderNotReady(PlacementError):
    pass


class RejectedError(PlacementError):
    def __init__(self, rejected: Rejected) -> None:
        super().__init__(rejected.message)
        self.rejected = rejected


_EXPECTED = (PlacementError, ProposalDropped, TimeoutError)
"""What an RPC may meet: answered with a status by abort_with; anything else is a bug."""


_REJECT_STATUS: dict[RejectCode, tuple[grpc.StatusCode, str | None]] = {
    # etcd's own (api/v3rpc/rpctypes/error.go): code and text, since clients match the text.
    RejectCode.LEASE_NOT_FOUND: (grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found"),
    RejectCode.LEASE_EXISTS: (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: lease already exists"),
    RejectCode.LEASE_TTL_TOO_LARGE: (grpc.StatusCode.OUT_OF_RANGE, "etcdserver: too large lease TTL"),
    # placement's own: the state's message says what to change.
    RejectCode.INVALID: (grpc.StatusCode.INVALID_ARGUMENT, None),
    RejectCode.NOT_BOOTSTRAPPED: (grpc.StatusCode.FAILED_PRECONDITION, None),
    RejectCode.ALREADY_BOOTSTRAPPED: (grpc.StatusCode.ALREADY_EXISTS, None),
    RejectCode.NO_STORE_NODES: (grpc.StatusCode.FAILED_PRECONDITION, None),
    RejectCode.NODE_NOT_FOUND: (grpc.StatusCode.NOT_FOUND, None),
}


async def abort_with(context: grpc.aio.ServicerContext, err: BaseException) -> None:  # type: ignore[type-arg]
    """The one place placement errors become gRPC statuses."""
    if isinstance(err, NotLeaderError):
        if err.address:
            context.set_trailing_metadata(((LEADER_METADATA_KEY, err.address),))
        await context.abort(grpc.StatusCode.UNAVAILABLE, str(err))
    if isinstance(err, LeaderNotReady):
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"placement: {err}")
    if isinstance(err, RejectedError):
        code, text = _REJECT_STATUS[err.rejected.code]
        await context.abort(code, text or f"placement: {err.rejected.message}")
    if isinstance(err, ProposalDropped):
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"placement: proposal dropped ({err}); retry")
    if isinstance(err, TimeoutError):
        await context.abort(grpc.StatusCode.UNAVAILABLE, "placement: timed out; the outcome is unknown")
    raise err


# ------------------------------------------------------------- map watch


class _Subscriber:
    __slots__ = ("items", "event", "overflow", "limit")

    def __init__(self, limit: int) -> None:
        self.items: collections.deque[ppb.WatchMapResponse] = collections.deque()
        self.event = asyncio.Event()
        self.overflow = False
        self.limit = limit

    async def get(self) -> ppb.WatchMapResponse | None:
        """The next change, or None when this subscriber fell too far behind."""
        while not self.items and not self.overflow:
            self.event.clear()
            await self.event.wait()
        return None if self.overflow else self.items.popleft()


class MapWatchHub:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._subs: set[_Subscriber] = set()

    def __len__(self) -> int:
        return len(self._subs)

    def subscribe(self) -> _Subscriber:
        sub = _Subscriber(self._limit)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: _Subscriber) -> None:
        self._subs.discard(sub)

    def publish(self, resp: ppb.WatchMapResponse) -> None:
        for sub in list(self._subs):
            if len(sub.items) >= sub.limit:
                sub.overflow = True
                self._subs.discard(sub)
            else:
                sub.items.append(resp)
            sub.event.set()


# ---------------------------------------------------------------- server


class PlacementServer:
    def __init__(
        self,
        node_id: int,
        host: GroupHost,
        machine: PlacementMachine,
        *,
        clock: Clock,
        rng: random.Random,
        deleter: KeyDeleter,
        config: PlacementConfig | None = None,
    ) -> None:
        self.node_id = node_id
        self.host = host
        self.machine = machine
        self.clock = clock
        self.rng = rng
        self.deleter = deleter
        self.cfg = config or PlacementConfig()
        self.peers: dict[int, str] = {}
        self.address = ""
        self.hub = MapWatchHub(self.cfg.watch_queue)
        self.expiry = ExpiryTable()
        self.heartbeats = 0
        self.node_stats: dict[int, ppb.StoreHeartbeatRequest] = {}
        self._heard: dict[int, float] = {}
        self._leader_term = 0
        self._ready_at: float | None = None
        self._revoking: set[int] = set()
        self._delete_retry_at = 0.0
        self._kick = asyncio.Event()
        self._applied_fut: asyncio.Future[None] | None = None
        machine.add_listener(self._on_change)
        machine.add_apply_listener(self._on_apply)
        self.rebalancer = Rebalancer(self)
        """Running operators and the scheduler (placement/rebalancer.py)."""

    # -- state ---------------------------------------------------------------------
    @property
    def state(self) -> PlacementState:
        return self.machine.state

    def _on_change(self, ch: MapChange) -> None:
        self.hub.publish(codec.change_to_pb(ch, self.state))

    def _on_apply(self) -> None:
        fut, self._applied_fut = self._applied_fut, None
        if fut is not None and not fut.done():
            fut.set_result(None)
        if self.state.ending:
            self._kick.set()

    async def wait_state(self, predicate: Callable[[PlacementState], bool], timeout_s: float) -> bool:
        """Wait until predicate(state) holds after some apply; False at the deadline."""
        try:
            async with asyncio.timeout(timeout_s):
                while not predicate(self.state):
                    if self._applied_fut is None:
                        self._applied_fut = asyncio.get_running_loop().create_future()
                    await asyncio.shield(self._applied_fut)
        except TimeoutError:
            return False
        return True

    # -- leadership -------------------------------------------------------------------
    def is_leader(self) -> bool:
        return self.host.status(PLACEMENT_GROUP_ID).soft_state.role == StateRole.LEADER

    def leader_id(self) -> int:
        return self.host.leader_of(PLACEMENT_GROUP_ID)

    def _leader_term_now(self) -> int:
        st = self.host.status(PLACEMENT_GROUP_ID)
        return st.hard_state.term if st.soft_state.role == StateRole.LEADER else 0

    def require_leader(self, *, ready: bool = True) -> None:
        if not self.is_leader():
            lid = self.leader_id()
            raise NotLeaderError(lid, self.address if lid == self.node_id else self.peers.get(lid, ""))
        if ready and (self._ready_at is None or self._leader_term != self._leader_term_now()):
            raise LeaderNotReady("leader not ready yet (catching up after the election); retry")

    async def propose(self, cmd: Command, *, timeout_s: float = 5.0) -> object:
        self.require_leader(ready=False)
        return await self.host.propose(PLACEMENT_GROUP_ID, encode_command(cmd), timeout_s=timeout_s)

    async def _propose_ok(self, cmd: Command) -> object:
        out = await self.propose(cmd)
        if isinstance(out, Rejected):
            raise RejectedError(out)
        return out

    # -- operations (the servicer calls these) ----------------------------------------
    async def bootstrap(self, slot_count: int, initial_shards: int, replicas: int) -> bool:
        """Create the cluster; False if it already existed."""
        self.require_leader()
        cluster_id = self.rng.getrandbits(63) | 1
        out = await self.propose(Bootstrap(cluster_id, slot_count, initial_shards, replicas))
        if isinstance(out, Rejected):
            if out.code == RejectCode.ALREADY_BOOTSTRAPPED:
                return False
            raise RejectedError(out)
        log.info("placement node=%d bootstrapped cluster=%x slots=%d shards=%d", self.node_id, cluster_id, slot_count, len(self.state.shards))
        return True

    async def register_node(self, node_id: int, kind: NodeKind, address: str, labels: tuple[tuple[str, str], ...]) -> int:
        self.require_leader()
        nid = await self._propose_ok(RegisterNode(node_id, kind, address, labels))
        assert isinstance(nid, int)
        self._heard[nid] = self.clock.monotonic()
        return nid

    def leader_shard_stats(self) -> list[ppb.ShardStats]:
        """Each shard's figures from the latest heartbeat of the store that
        leads it (in memory on the placement leader only)."""
        out: dict[int, ppb.ShardStats] = {}
        for hb in self.node_stats.values():
            for st in hb.shards:
                if st.is_leader and (st.shard_id not in out or st.term > out[st.shard_id].term):
                    out[st.shard_id] = st
        return [out[sid] for sid in sorted(out)]

    def nospace_nodes(self) -> list[int]:
        """Nodes whose last heartbeat to this leader reported NOSPACE (a new
        leader learns them again within one heartbeat interval)."""
        return sorted(nid for nid, hb in self.node_stats.items() if NOSPACE in hb.alarms and nid in self.state.nodes)

    async def heartbeat(self, req: ppb.StoreHeartbeatRequest) -> NodeState:
        self.require_leader()
        node = self.state.nodes.get(req.node_id)
        if node is None:
            raise RejectedError(Rejected(RejectCode.NODE_NOT_FOUND, f"node {req.node_id} is not registered: call RegisterNode first"))
        self.heartbeats += 1
        self._heard[req.node_id] = self.clock.monotonic()
        self.node_stats[req.node_id] = req
        if node.state == NodeState.DOWN:
            await self._propose_ok(SetNodeState(req.node_id, NodeState.UP))
            log.info("placement node=%d: node %d is up again", self.node_id, req.node_id)
        for s in req.shards:
            if s.is_leader and s.HasField("descriptor"):
                await self.report_shard(codec.shard_from_pb(s.descriptor, s.term))
        return self.state.nodes[req.node_id].state

    async def report_shard(self, shard: Shard) -> ReportResult:
        self.require_leader()
        outcome = self.state.judge_report(shard)
        if outcome != ReportOutcome.ACCEPTED:
            return ReportResult(outcome, self.state.shards.get(shard.shard_id))
        out = await self.propose(ReportShard(shard))
        assert isinstance(out, ReportResult)
        return out

    async def read_barrier(self) -> None:
        await self.host.read_index(PLACEMENT_GROUP_ID)

    async def lease_grant(self, ttl_s: int, lease_id: int) -> Lease:
        self.require_leader()
        ttl = clamp_ttl(ttl_s, self.cfg.min_lease_ttl_s)
        while True:
            lid = lease_id or (self.rng.getrandbits(63) or 1)
            out = await self.propose(GrantLease(lid, ttl))
            if isinstance(out, Rejected) and out.code == RejectCode.LEASE_EXISTS and not lease_id:
                continue  # our random pick is taken: pick again
            if isinstance(out, Rejected):
                raise RejectedError(out)
            assert isinstance(out, Lease)
            self.expiry.track(out.lease_id, out.ttl_s, self.clock.monotonic())
            return out

    async def lease_revoke(self, lease_id: int) -> None:
        self.require_leader()
        self._revoking.add(lease_id)
        try:
            await self._propose_ok(RevokeLease(lease_id))
        finally:
            self._revoking.discard(lease_id)
            self.expiry.forget(lease_id)
        self._kick.set()
        await self.wait_state(lambda st: lease_id not in st.ending, self.cfg.revoke_wait_s)

    def lease_keep_alive(self, lease_id: int) -> int:
        """The renewed TTL, or 0 if the lease does not exist (etcd's answer)."""
        self.require_leader()
        lease = self.state.leases.get(lease_id)
        if lease is None or lease_id in self._revoking:
            return 0
        now = self.clock.monotonic()
        if lease_id not in self.expiry:
            self.expiry.track(lease_id, lease.ttl_s, now)
            return lease.ttl_s
        return self.expiry.keep_alive(lease_id, now) or 0

    def lease_time_to_live(self, lease_id: int) -> tuple[int, int, tuple[bytes, ...]] | None:
        """(seconds left, granted TTL, keys), or None if the lease does not exist."""
        self.require_leader()
        lease = self.state.leases.get(lease_id)
        if lease is None:
            return None
        left = self.expiry.remaining_s(lease_id, self.clock.monotonic())
        return (lease.ttl_s if left is None else int(left)), lease.ttl_s, tuple(sorted(lease.keys))

    async def lease_attach(self, changes: Iterable[KeyChange]) -> tuple[int, ...]:
        self.require_leader()
        out = await self._propose_ok(AttachKeys(tuple(changes)))
        assert isinstance(out, tuple)
        return out

    # -- the leader's duties --------------------------------------------------------------
    async def run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.cfg.duty_interval_s):
                    await self._kick.wait()
            except TimeoutError:
                pass
            self._kick.clear()
            try:
                await self.duty_round()
            except (ProposalDropped, TimeoutError, NotLeaderError) as exc:
                log.debug("placement node=%d duty round interrupted: %s", self.node_id, exc)

    async def duty_round(self) -> None:
        term = self._leader_term_now()
        if term == 0:
            if self._ready_at is not None:
                log.info("placement node=%d no longer leads: dropping lease deadlines and heartbeat data", self.node_id)
            self._ready_at = None
            self._leader_term = 0
            self.expiry.clear()
            self._heard.clear()
            self.node_stats.clear()
            self.rebalancer.reset()
            return
        if term != self._leader_term or self._ready_at is None:
            self._ready_at = None
            self.expiry.clear()
            await self.read_barrier()  # our state now holds every entry committed before our term
            if self._leader_term_now() != term:
                return
            now = self.clock.monotonic()
            self._leader_term = term
            self._ready_at = now
            self._heard.clear()
            self.rebalancer.reset()
            self.expiry.sync({lid: lease.ttl_s for lid, lease in self.state.leases.items()}, now)
            log.info(
                "placement node=%d leads term=%d: map_version=%d nodes=%d leases=%d renewed to full TTL",
                self.node_id, term, self.state.map_version, len(self.state.nodes), len(self.expiry),
            )
        await self._mark_down_nodes()
        await self._maybe_bootstrap()
        await self._expire_leases()
        await self._delete_ended_lease_keys()
        await self.rebalancer.round()

    async def _maybe_bootstrap(self) -> None:
        n = self.cfg.bootstrap_stores
        if n <= 0 or self.state.bootstrapped:
            return
        up = [x for x in self.state.nodes.values() if x.kind == NodeKind.STORE and x.state == NodeState.UP]
        if len(up) < n:
            return
        try:
            await self.bootstrap(self.cfg.slot_count, self.cfg.initial_shards, self.cfg.replicas)
        except (RejectedError, LeaderNotReady) as exc:
            log.warning("placement node=%d automatic bootstrap failed: %s", self.node_id, exc)

    async def _mark_down_nodes(self) -> None:
        assert self._ready_at is not None
        now = self.clock.monotonic()
        for nid in self.state.nodes_to_mark_down(self._heard, now, self.cfg.down_after_s, self._ready_at):
            await self._propose_ok(SetNodeState(nid, NodeState.DOWN))
            log.info("placement node=%d: node %d unheard for %.1fs, marked down", self.node_id, nid, self.cfg.down_after_s)

    async def _expire_leases(self) -> None:
        now = self.clock.monotonic()
        self.expiry.sync({lid: lease.ttl_s for lid, lease in self.state.leases.items() if lid not in self._revoking}, now)
        for lid in self.expiry.expired(now):
            self.expiry.forget(lid)
            self._revoking.add(lid)
            try:
                await self.propose(RevokeLease(lid))  # Rejected (already gone) is fine
            finally:
                self._revoking.discard(lid)
            log.debug("placement node=%d lease %x expired", self.node_id, lid)

    async def _delete_ended_lease_keys(self) -> None:
        now = self.clock.monotonic()
        if not self.state.ending or now < self._delete_retry_at:
            return
        for lid, keys in list(self.state.ending.items()):
            for shard_id, shard_keys in self.state.keys_by_shard(keys).items():
                try:
                    await self.deleter.delete_keys(shard_id, lid, shard_keys)
                except (KeyDeletionFailed, TimeoutError) as exc:
                    log.warning("placement node=%d lease %x: deleting keys of shard %d failed (%s); retrying", self.node_id, lid, shard_id, exc)
                    self._delete_retry_at = now + self.cfg.delete_retry_s
                    return
                await self.propose(LeaseKeysDeleted(lid, shard_keys))

    # -- status ---------------------------------------------------------------------------
    def status(self) -> ppb.StatusResponse:
        st = self.host.status(PLACEMENT_GROUP_ID)
        keys_deleted = getattr(self.deleter, "keys_deleted", 0)
        return ppb.StatusResponse(
            node_id=self.node_id,
            is_leader=st.soft_state.role == StateRole.LEADER,
            leader_node_id=st.soft_state.leader_id,
            term=st.hard_state.term,
            applied_index=self.machine.applied_index(),
            map_version=self.state.map_version,
            cluster_id=self.state.cluster_id,
            leases=len(self.state.leases),
            leases_pending_delete=len(self.state.ending),
            keys_deleted=int(keys_deleted),
            heartbeats=self.heartbeats,
            voters=st.conf_state.voters,
        )


# --------------------------------------------------------------- servicer


class PlacementService(placement_pb2_grpc.PlacementServicer):
    def __init__(self, server: PlacementServer) -> None:
        self.s = server

    def _header(self) -> epb.ResponseHeader:
        return epb.ResponseHeader(cluster_id=self.s.state.cluster_id, member_id=self.s.node_id)

    async def Bootstrap(self, request: ppb.BootstrapRequest, context: grpc.aio.ServicerContext) -> ppb.BootstrapResponse:  # type: ignore[type-arg]  # noqa: N802
        try:
            created = await self.s.bootstrap(request.slot_count or 1024, request.initial_shards, request.replicas or 3)
        except _EXPECTED as exc:
            await abort_with(context, exc)
        return ppb.BootstrapResponse(already_bootstrapped=not created, map=codec.map_to_pb(self.s.state))

    async def GetCluster(self, request: ppb.GetClusterRequest, context: grpc.aio.ServicerContext) -> ppb.GetClusterResponse:  # type: ignore[type-arg]  # noqa: N802
        st = self.s.state
        servers = {**self.s.peers, self.s.node_id: self.s.address}
        return ppb.GetClusterResponse(
            cluster_id=st.cluster_id,
            slot_count=st.slot_count,
            map_version=st.map_version,
            leader_node_id=self.s.leader_id(),
            placement_servers=[codec.spb.NodeAddress(node_id=n, address=a) for n, a in sorted(servers.items())],
        )

    async def RegisterNode(self, request: ppb.RegisterNodeRequest, context: grpc.aio.ServicerContext) -> ppb.RegisterNodeResponse:  # type: ignore[type-arg]  # noqa: N802
        if request.kind not in (NodeKind.STORE, NodeKind.ROUTER) or not request.address:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "placement: RegisterNode needs kind STORE or ROUTER and an address")
        try:
            nid = await self.s.register_node(request.node_id, NodeKind(request.kind), request.address, codec.labels_from_pb(request.labels))
        except _EXPECTED as exc:
            await abort_with(context, exc)
        return ppb.RegisterNodeResponse(node_id=nid, map_version=self.s.state.map_version, cluster_id=self.s.state.cluster_id)

    async def StoreHeartbeat(self, request: ppb.StoreHeartbeatRequest, context: grpc.aio.ServicerContext) -> ppb.StoreHeartbeatResponse:  # type: ignore[type-arg]  # noqa: N802
        try:
            state = await self.s.heartbeat(request)
        except _EXPECTED as exc:
            await abort_with(context, exc)
        return ppb.StoreHeartbeatResponse(
            map_version=self.s.state.map_version,
            state=int(state),
            steps=self.s.rebalancer.steps_for(request),
            nospace_nodes=self.s.nospace_nodes(),
        )

    async def ReportShard(self, request: ppb.ReportShardRequest, context: grpc.aio.ServicerContext) -> ppb.ReportShardResponse:  # type: ignore[type-arg]  # noqa: N802
        try:
            out = await self.s.report_shard(codec.shard_from_pb(request.descriptor, request.term))
        except _EXPECTED as exc:
            await abort_with(context, exc)
        resp = ppb.ReportShardResponse(outcome=int(out.outcome), map_version=self.s.state.map_version)
        if out.current is not None:
            resp.current.CopyFrom(codec.shard_to_pb(out.current, self.s.state.nodes))
        return resp

    async def GetMap(self, request: ppb.GetMapRequest, context: grpc.aio.ServicerContext) -> ppb.GetMapResponse:  # type: ignore[type-arg]  # noqa: N802
        if request.linearizable:
            try:
                await self.s.read_barrier()
            except TimeoutError as exc:
                await abort_with(context, exc)
        return ppb.GetMapResponse(map=codec.map_to_pb(self.s.state), shard_stats=self.s.leader_shard_stats())

    async def WatchMap(self, request: ppb.WatchMapRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[ppb.WatchMapResponse]:  # type: ignore[override, type-arg]  # noqa: N802
        sub = self.s.hub.subscribe()  # no await between this and the full map: no change is missed
        first = ppb.WatchMapResponse(map_version=self.s.state.map_version, full=codec.map_to_pb(self.s.state))
        try:
            yield first
            while True:
                item = await sub.get()
                if item is None:
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "placement: map watcher fell behind; watch again")
                yield item
        finally:
            self.s.hub.unsubscribe(sub)

    async def LeaseGrant(self, request: epb.LeaseGrantRequest, context: grpc.aio.ServicerContext) -> epb.LeaseGrantResponse:  # type: ignore[type-arg]  # noqa: N802
        try:
            lease = await self.s.lease_grant(request.TTL, request.ID)
        except _EXPECTED as exc:
            await abort_with(context, exc)
        return epb.LeaseGrantResponse(header=self._header(), ID=lease.lease_id, TTL=lease.ttl_s)

    async def LeaseRevoke(self, request: epb.LeaseRevokeRequest, context: grpc.aio.ServicerContext) -> epb.LeaseRevokeResponse:  # type: ignore[type-arg]  # noqa: N802
        try:
            await self.s.lease_revoke(request.ID)
        except _EXPECTED as exc:
            await abort_with(context, exc)
        return epb.LeaseRevokeResponse(header=self._header())

    async def LeaseKeepAlive(self, request_iterator: AsyncIterator[epb.LeaseKeepAliveRequest], context: grpc.aio.ServicerContext) -> AsyncIterator[epb.LeaseKeepAliveResponse]:  # type: ignore[override, type-arg]  # noqa: N802
        async for req in request_iterator:
            try:
                ttl = self.s.lease_keep_alive(req.ID)
            except PlacementError as exc:
                await abort_with(context, exc)
            yield epb.LeaseKeepAliveResponse(header=self._header(), ID=req.ID, TTL=ttl)

    async def LeaseTimeToLive(self, request: epb.LeaseTimeToLiveRequest, context: grpc.aio.ServicerContext) -> epb.LeaseTimeToLiveResponse:  # type: ignore[type-arg]  # noqa: N802
        try:
            out = self.s.lease_time_to_live(request.ID)
        except PlacementError as exc:
            await abort_with(context, exc)
        if out is None:
            return epb.LeaseTimeToLiveResponse(header=self._header(), ID=request.ID, TTL=-1)
        left, granted, keys = out
        return epb.LeaseTimeToLiveResponse(header=self._header(), ID=request.ID, TTL=left, grantedTTL=granted, keys=list(keys) if request.keys else [])

    async def LeaseLeases(self, request: epb.LeaseLeasesRequest, context: grpc.aio.ServicerContext) -> epb.LeaseLeasesResponse:  # type: ignore[type-arg]  # noqa: N802
        try:
            await self.s.read_barrier()
        except TimeoutError as exc:
            await abort_with(context, exc)
        return epb.LeaseLeasesResponse(header=self._header(), leases=[epb.LeaseStatus(ID=lid) for lid in sorted(self.s.state.leases)])

    async def LeaseAttach(self, request: ppb.LeaseAttachRequest, context: grpc.aio.ServicerContext) -> ppb.LeaseAttachResponse:  # type: ignore[type-arg]  # noqa: N802
        changes = [KeyChange(c.lease_id, bytes(c.key), c.detach) for c in request.changes]
        try:
            missing = await self.s.lease_attach(changes)
        except _EXPECTED as exc:
            await abort_with(context, exc)
        return ppb.LeaseAttachResponse(lease_not_found=list(missing))

    async def SetPeers(self, request: ppb.SetPeersRequest, context: grpc.aio.ServicerContext) -> ppb.SetPeersResponse:  # type: ignore[type-arg]  # noqa: N802
        for p in request.peers:
            if p.node_id != self.s.node_id:
                self.s.peers[p.node_id] = p.address
                self.s.host.set_peer(p.node_id, p.address)
        return ppb.SetPeersResponse()

    async def Status(self, request: ppb.StatusRequest, context: grpc.aio.ServicerContext) -> ppb.StatusResponse:  # type: ignore[type-arg]  # noqa: N802
        return self.s.status()

    # -- rebalancing (placement/rebalancer.py) ------------------------------------------------
    async def ListOperators(self, request: ppb.ListOperatorsRequest, context: grpc.aio.ServicerContext) -> ppb.ListOperatorsResponse:  # type: ignore[type-arg]  # noqa: N802
        try:
            self.s.require_leader()
        except _EXPECTED as exc:
            await abort_with(context, exc)
        return ppb.ListOperatorsResponse(operators=self.s.rebalancer.list())

    async def _operator(self, context: grpc.aio.ServicerContext, start: Callable[[], object]) -> ppb.OperatorResponse:  # type: ignore[type-arg]
        try:
            op = start()
        except OperatorError as exc:
            await context.abort(exc.code, str(exc))
        except _EXPECTED as exc:
            await abort_with(context, exc)
        return ppb.OperatorResponse(operator=op_to_pb(op, self.s.clock.monotonic()))  # type: ignore[arg-type]

    async def CancelOperator(self, request: ppb.CancelOperatorRequest, context: grpc.aio.ServicerContext) -> ppb.CancelOperatorResponse:  # type: ignore[type-arg]  # noqa: N802
        try:
            rb = self.s.rebalancer.cancel(request.id)
        except OperatorError as exc:
            await context.abort(exc.code, str(exc))
        except _EXPECTED as exc:
            await abort_with(context, exc)
        resp = ppb.CancelOperatorResponse()
        if rb is not None:
            resp.rollback.CopyFrom(op_to_pb(rb, self.s.clock.monotonic()))
        return resp

    async def Split(self, request: ppb.SplitRequest, context: grpc.aio.ServicerContext) -> ppb.OperatorResponse:  # type: ignore[type-arg]  # noqa: N802
        return await self._operator(context, lambda: self.s.rebalancer.split(request.shard_id, request.at_slot))

    async def Merge(self, request: ppb.MergeRequest, context: grpc.aio.ServicerContext) -> ppb.OperatorResponse:  # type: ignore[type-arg]  # noqa: N802
        # shard_id is the target (it keeps its id and takes the other's slots).
        return await self._operator(context, lambda: self.s.rebalancer.merge(request.shard_id, request.other_shard_id))

    async def Move(self, request: ppb.MoveRequest, context: grpc.aio.ServicerContext) -> ppb.OperatorResponse:  # type: ignore[type-arg]  # noqa: N802
        return await self._operator(context, lambda: self.s.rebalancer.move(request.shard_id, request.from_node, request.to_node))

    async def TransferLeader(self, request: ppb.TransferLeaderRequest, context: grpc.aio.ServicerContext) -> ppb.OperatorResponse:  # type: ignore[type-arg]  # noqa: N802
        return await self._operator(context, lambda: self.s.rebalancer.transfer_leader(request.shard_id, request.node_id))

    async def Drain(self, request: ppb.DrainRequest, context: grpc.aio.ServicerContext) -> ppb.DrainResponse:  # type: ignore[type-arg]  # noqa: N802
        try:
            state = await self.s.rebalancer.drain(request.node_id, request.undo)
        except OperatorError as exc:
            await context.abort(exc.code, str(exc))
        except _EXPECTED as exc:
            await abort_with(context, exc)
        return ppb.DrainResponse(state=int(state))
