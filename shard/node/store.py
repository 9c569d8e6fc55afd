"""StoreNode: the shards one store process hosts, each a Raft group on the
GroupHost, behind one object that the Store servicer (shard/service.py) and
the store agent (shard/agent/) call.

It composes the node's jobs and forwards to them; it holds no logic of its
own. Which module does what: see shard/node/__init__.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from raft.runtime.clock import Clock
from raft.runtime.host import GroupHost
from shard import hlc, slots
from shard.engine import KvEngine
from shard.leasekeys import LeaseRegistry
from shard.node import status
from shard.node.alarms import SpaceAlarms
from shard.node.closedts import ClosedTimestamps
from shard.node.config import NodeConfig
from shard.node.leases import LeaseAttachment
from shard.node.merge import Merges
from shard.node.reads import Reads
from shard.node.replica import ShardReplica
from shard.node.replicas import ReplicaSet
from shard.node.requests import Consistency, RequestContext, WatchBatch, WatchSpec
from shard.node.routing import RoutingChecks
from shard.node.split import Splits
from shard.node.state import LockResolver, NodeState
from shard.node.watch import WatchHub
from shard.node.writes import Writes
from shard.quota import SpaceQuota
from shard.space import SpaceMeter
from shard.types import CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse, Response, ShardInfo, TxnPart, TxnRequest


class StoreNode:
    def __init__(
        self,
        node_id: int,
        host: GroupHost,
        engine: KvEngine,
        *,
        clock: Clock,
        config: NodeConfig | None = None,
    ) -> None:
        s = self._state = NodeState(node_id, host, engine, clock, config or NodeConfig())
        checks = RoutingChecks(s)
        self._alarms = SpaceAlarms(s)
        self._closed = ClosedTimestamps(s, self._alarms)
        self._leases = LeaseAttachment(s, checks)
        self._replica_set = ReplicaSet(s, self._closed)
        self._splits = Splits(s, checks, self._replica_set)
        self._merges = Merges(s, checks, self._replica_set)
        self._replica_set.on_split = self._splits.queue
        self._replica_set.on_merge = self._merges.queue
        self._replica_set.on_events = self._leases.on_applied_events
        self._writes = Writes(s, checks, self._alarms, self._leases, self._closed)
        self._reads = Reads(s, checks)
        self._watches = WatchHub(s, checks)
        self._replica_set.check_stored_format()  # before hosting anything: refuse data this build cannot read

    # -- identity and shared state ---------------------------------------------------------
    @property
    def node_id(self) -> int:
        return self._state.node_id

    @property
    def cfg(self) -> NodeConfig:
        return self._state.cfg

    @property
    def hlc(self) -> hlc.HybridClock:
        return self._state.hlc

    @property
    def address(self) -> str:
        """host:port of this node's own gRPC server (set once it listens)."""
        return self._state.address

    @address.setter
    def address(self, value: str) -> None:
        self._state.address = value

    @property
    def request_counts(self) -> dict[int, list[int]]:
        """Requests served per shard since start: [reads, writes]."""
        return self._state.request_counts

    @property
    def _replicas(self) -> dict[int, ShardReplica]:
        """The hosted replicas (tests read them)."""
        return self._state.replicas

    @property
    def quota(self) -> SpaceQuota:
        """The node's quota and alarms: its shard leaders refuse growing writes while NOSPACE is active."""
        return self._alarms.quota

    @quota.setter
    def quota(self, quota: SpaceQuota) -> None:
        self._alarms.quota = quota

    @property
    def space(self) -> SpaceMeter | None:
        """Measures the space used, every space_check_interval_s; None: no measurement."""
        return self._alarms.space

    @space.setter
    def space(self, meter: SpaceMeter | None) -> None:
        self._alarms.space = meter

    @property
    def leases(self) -> LeaseRegistry | None:
        """Placement's leases; None: puts with a lease are not checked (static clusters)."""
        return self._leases.registry

    @leases.setter
    def leases(self, registry: LeaseRegistry | None) -> None:
        self._leases.registry = registry

    @property
    def lock_resolver(self) -> LockResolver | None:
        """Resolves txn locks left on shards led here (NodeState.lock_resolver)."""
        return self._state.lock_resolver

    @lock_resolver.setter
    def lock_resolver(self, resolver: LockResolver | None) -> None:
        self._state.lock_resolver = resolver

    def set_peer(self, node_id: int, address: str) -> None:
        self._state.set_peer(node_id, address)

    def address_of(self, node_id: int) -> str:
        return self._state.address_of(node_id)

    def shard_ids(self) -> list[int]:
        return sorted(self._state.replicas)

    # -- replicas (shard/node/replicas.py) ---------------------------------------------
    async def add_shard(
        self, shard_id: int, *, voters: Sequence[int], slot_count: int = slots.DEFAULT_SLOTS, slot_ranges: slots.SlotRanges | None = None
    ) -> None:
        await self._replica_set.add_shard(shard_id, voters=voters, slot_count=slot_count, slot_ranges=slot_ranges)

    async def host_shard(
        self,
        shard_id: int,
        *,
        slot_count: int,
        slot_ranges: slots.SlotRanges,
        voters: Sequence[int] = (),
        learners: Sequence[int] = (),
        bootstrap: bool,
        conf_version: int = 0,
    ) -> None:
        await self._replica_set.host_shard(
            shard_id, slot_count=slot_count, slot_ranges=slot_ranges, voters=voters, learners=learners, bootstrap=bootstrap, conf_version=conf_version
        )

    async def destroy_replica(self, shard_id: int) -> None:
        await self._replica_set.destroy_replica(shard_id)

    def shards_on_disk(self) -> list[int]:
        return self._replica_set.shards_on_disk()

    def merged_away(self, shard_id: int) -> bool:
        return self._replica_set.merged_away(shard_id)

    # -- splits and merges (shard/node/split.py, merge.py) ------------------------------------
    async def split(
        self, shard_id: int, new_shard_id: int, split_slot: int, *, timeout_s: float | None = None
    ) -> tuple[ShardInfo, ShardInfo]:
        return await self._splits.split(shard_id, new_shard_id, split_slot, timeout_s=timeout_s)

    async def open_split_shards(self) -> list[int]:
        return await self._splits.open_split_shards()

    def merge_target(self, shard_id: int) -> int:
        return self._merges.merge_target(shard_id)

    async def prepare_merge(self, source_id: int, target_id: int, *, timeout_s: float | None = None) -> ShardInfo:
        return await self._merges.prepare_merge(source_id, target_id, timeout_s=timeout_s)

    async def commit_merge(self, target_id: int, source_id: int, *, timeout_s: float | None = None) -> ShardInfo:
        return await self._merges.commit_merge(target_id, source_id, timeout_s=timeout_s)

    # -- requests (writes.py, reads.py, watch.py, leases.py) -------------------------------
    async def write(self, ctx: RequestContext, request: PutRequest | DeleteRangeRequest | TxnRequest | CompactionRequest | TxnPart) -> Response:
        return await self._writes.write(ctx, request)

    async def range(
        self, ctx: RequestContext, request: RangeRequest, consistency: Consistency, max_staleness_ms: int = 0
    ) -> RangeResponse:
        return await self._reads.range(ctx, request, consistency, max_staleness_ms)

    async def watch(self, ctx: RequestContext, spec: WatchSpec) -> AsyncIterator[WatchBatch]:
        return await self._watches.watch(ctx, spec)

    async def delete_lease_keys(self, shard_id: int, lease_id: int, lease_keys: Sequence[bytes]) -> int:
        return await self._leases.delete_lease_keys(shard_id, lease_id, lease_keys)

    # -- space (alarms.py) -------------------------------------------------------------------
    def save_alarms(self) -> None:
        self._alarms.save_alarms()

    def measure_space(self) -> int:
        return self._alarms.measure_space()

    async def defragment(self) -> tuple[int, int]:
        return await self._alarms.defragment()

    # -- status (status.py) ------------------------------------------------------------------
    def hosts(self, shard_id: int) -> bool:
        return shard_id in self._state.replicas

    def leads(self, shard_id: int) -> bool:
        """Whether this node's replica is the shard's leader (cheap: no ShardInfo built)."""
        return self._state.host.term_and_leader(shard_id)[1] == self._state.node_id

    def replica_changes(self) -> int:
        """A count that moves whenever a replica is hosted, forgotten, applies or changes role."""
        return self._closed.generation

    def take_changed(self) -> set[int]:
        """The shards whose role, term, leader or applied state changed since the last call."""
        out, self._closed.changed = self._closed.changed, set()
        self._closed.changes.clear()
        return out

    async def changes(self, timeout_s: float) -> None:
        """Until take_changed has something to give, or timeout_s passed."""
        if self._closed.changed:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await self._closed.changes.wait()
        except TimeoutError:
            pass

    def take_stats_changed(self) -> set[int]:
        """take_changed's twin for a second reader (the heartbeat's per-shard figures)."""
        out, self._closed.stats_changed = self._closed.stats_changed, set()
        return out

    def shard_info(self, shard_id: int) -> ShardInfo:
        return status.shard_info(self._state, shard_id)

    def shard_figures(self, shard_id: int) -> tuple[int, int]:
        return status.shard_figures(self._state, shard_id)

    def closed_ts(self, shard_id: int) -> int:
        return status.closed_ts(self._state, shard_id)

    def compact_revision(self, shard_id: int) -> int:
        return status.compact_revision(self._state, shard_id)

    async def hash_kv(self, shard_id: int, revision: int = 0) -> tuple[int, int, int, int]:
        return await status.hash_kv(self._state, shard_id, revision)

    # -- the loops ---------------------------------------------------------------------------
    async def run(self) -> None:
        """The node's loops, until cancelled: splits, merges, lease reports,
        space, and closed timestamps. Proposals they start run in its
        TaskGroup: an unexpected failure of one ends the node."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._splits.run(), name="store-splits")
            tg.create_task(self._merges.run(), name="store-merges")
            tg.create_task(self._leases.run(), name="store-lease-reports")
            tg.create_task(self._alarms.run(), name="store-space")
            await self._closed.run(tg)
