"""NodeState: what the store node's jobs share.

The node's identity, address book and HLC, its GroupHost, engine and clock,
its settings, and the replicas it hosts (with the per-shard request counts
and creation events). Every job module (replicas, writes, reads, watch,
split, merge, leases, closedts, alarms, status) is handed this one object;
none keeps a second copy of any of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from raft.runtime.clock import Clock
from raft.runtime.host import GroupHost
from shard import hlc
from shard.engine import KvEngine
from shard.node.config import NodeConfig
from shard.node.replica import ShardReplica

if TYPE_CHECKING:
    from shard.txn2pc import TxnLock

LockResolver = Callable[[int, "TxnLock"], Awaitable[None]]


class NodeState:
    def __init__(self, node_id: int, host: GroupHost, engine: KvEngine, clock: Clock, cfg: NodeConfig) -> None:
        self.node_id = node_id
        self.cfg = cfg
        self.hlc = hlc.HybridClock(lane=node_id % hlc.LANES)  # stamps in this node's lane: revisions unique across shards
        self.address = ""
        """host:port of this node's own gRPC server (set once it listens)."""
        self.host = host
        self.engine = engine
        self.clock = clock
        self.replicas: dict[int, ShardReplica] = {}
        self.addresses: dict[int, str] = {}
        # Requests served per shard since start: (reads, writes). Heartbeats
        # turn them into rates for placement's scheduler.
        self.request_counts: dict[int, list[int]] = {}
        self.created: dict[int, asyncio.Event] = {}
        """A split waiting for its new shard's replica to be hosted here: set
        and dropped once it is (only waited-for shards have one)."""
        self.closed_ts_of: Callable[[int], int] = self._replicated_closed_ts
        """A hosted shard's closed timestamp for reads and watch progress:
        the replicated one or the side channel's (shard/node/closedts.py sets it)."""
        self.readable_of: Callable[[int], int] = self._replicated_readable
        """A hosted shard's readable revision: max(revision, closed_ts_of)."""
        self.closed_ts_peek: Callable[[int], int] = self._replicated_closed_ts
        """closed_ts_of for a status or a metric: the side channel's rounds do
        not speed up for it, as they do for reads and watches (closedts.py)."""
        self.lock_resolver: LockResolver | None = None
        """(shard id, its lock): decide a txn across shards whose coordinator
        left its lock here, and apply that here (flotilla/lockresolver.py: the
        store's process wires it; None: only requests that meet a lock resolve it)."""

    def _replicated_closed_ts(self, shard_id: int) -> int:
        rep = self.replicas.get(shard_id)
        return rep.sm.closed_ts if rep is not None else 0

    def _replicated_readable(self, shard_id: int) -> int:
        rep = self.replicas.get(shard_id)
        return rep.sm.readable_revision if rep is not None else 0

    def is_leader(self, shard_id: int) -> bool:
        # Not host.status(): that builds the whole Status (progress, conf
        # state) and was ~12% of a store's CPU under write load, asked on
        # every request. The core names itself leader exactly while it is one.
        return self.host.leader_of(shard_id) == self.node_id

    def address_of(self, node_id: int) -> str:
        if node_id == self.node_id:
            return self.address
        return self.addresses.get(node_id, "")

    def set_peer(self, node_id: int, address: str) -> None:
        """A node's address (its one gRPC server: Raft, Store, StoreAdmin).
        Told its own, the node takes it as what it advertises in NotLeader."""
        if node_id == self.node_id:
            self.address = address
            return
        self.addresses[node_id] = address
        self.host.set_peer(node_id, address)

    def group_nodes(self, shard_id: int) -> tuple[int, ...]:
        """Every node of the shard's group (voters, then learners)."""
        cs = self.host.status(shard_id).conf_state
        return (*cs.voters, *cs.learners)

    def stamp(self) -> int:
        """A new HLC reading: a proposal's stamp."""
        return self.hlc.now(self.clock.wall_ms())
