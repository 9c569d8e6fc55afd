"""The store node (runtime side): the shards one store process hosts, each a
Raft group on the GroupHost (raft/runtime), over the process's one RocksDB.

Every shard replica is a ``ShardStateMachine`` (the pure apply step,
shard/statemachine.py) plugged into the runtime through ``ShardReplica``.
``StoreNode`` is a façade over one module per job:

    store.py      StoreNode: composes the jobs below and forwards to them
    state.py      NodeState: what the jobs share (ids, HLC, host, engine, clock, hosted replicas)
    config.py     NodeConfig (pure)
    requests.py   RequestContext, Consistency, WatchSpec, WatchBatch (pure values;
                  ShardInfo is in shard/types.py)
    replica.py    ShardReplica: one replica as the runtime's StateMachine; feeds the HLC, watchers, loops
    replicas.py   ReplicaSet: create replicas (add_shard, host_shard), destroy them, tombstones, on-disk meta
    routing.py    the routing checks (ShardNotFound, EpochNotMatch, WrongShard, frozen, NotLeader, deadline)
    writes.py     Writes: Put/DeleteRange/Txn/Compact proposed by the leader (quota, leases, HLC stamp)
    reads.py      Reads: Range at four consistencies (linearizable, serializable, bounded staleness, at revision)
    watch.py      Watcher (a stream's live queue) and WatchHub (history, then live events, progress)
    split.py      Splits: propose a split, open the new shard's replica, reopen split shards at restart
    merge.py      Merges: freeze the source, commit the merge, destroy the merged source
    leases.py     LeaseAttachment: attach lease puts in placement before proposing; report applied changes
    closedts.py   ClosedTimestamps: the idle leader's ClosedTs proposals
    alarms.py     SpaceAlarms: space measurement, the NOSPACE alarm kept on disk, defragment
    status.py     ShardInfo, figures for placement, HashKV

Epochs live in the shard's replicated meta (ShardStateMachine.epoch):
conf_version grows with each conf change the group applies, slot_version
with each split. The node's HLC advances to every request's HLC and every
applied revision; the leader stamps each write with it.

Errors: shard/errors.py (RoutingError and ShardError under StoreError);
shard/service.py turns them into store.proto's typed StoreError; nothing
here knows protobuf.
"""

from __future__ import annotations

from shard.node.config import NodeConfig
from shard.node.requests import Consistency, RequestContext, WatchBatch, WatchSpec
from shard.node.store import StoreNode
from shard.types import ShardInfo

__all__ = ["Consistency", "NodeConfig", "RequestContext", "ShardInfo", "StoreNode", "WatchBatch", "WatchSpec"]
