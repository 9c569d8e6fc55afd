"""What a replica reports about itself: its status (ShardInfo), its figures
for placement's scheduler, and the hash of its MVCC state (HashKV)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from raft.core import StateRole
from shard.errors import FutureRevision, RevisionCompacted, ShardNotFound, StaleReadNotReady
from shard.hashkv import KvHash
from shard.hashkv import records as mvcc_records
from shard.types import ShardInfo

if TYPE_CHECKING:
    from shard.node.state import NodeState


def shard_info(state: NodeState, shard_id: int) -> ShardInfo:
    rep = state.replicas[shard_id]
    st = state.host.status(shard_id)
    sm = rep.sm
    return ShardInfo(
        shard_id=shard_id,
        epoch=rep.epoch,
        slot_count=sm.slot_count,
        slot_ranges=sm.slot_ranges,
        voters=tuple(st.conf_state.voters),
        learners=tuple(st.conf_state.learners),
        leader_node_id=st.soft_state.leader_id,
        is_leader=st.soft_state.role == StateRole.LEADER,
        term=st.hard_state.term,
        commit_index=st.hard_state.commit,
        applied_index=st.applied,
        revision=sm.revision,
        compact_revision=sm.compact_revision,
        closed_ts=state.closed_ts_peek(shard_id),
        watchers=len(rep.watchers),
        reads=state.request_counts.get(shard_id, (0, 0))[0],
        writes=state.request_counts.get(shard_id, (0, 0))[1],
    )


def shard_figures(state: NodeState, shard_id: int) -> tuple[int, int]:
    """(live key count, approximate live size in bytes) of a hosted shard
    as this replica applied it; (0, 0) when not hosted or not known."""
    rep = state.replicas.get(shard_id)
    if rep is None:
        return 0, 0
    return max(rep.sm.key_count, 0), max(rep.sm.size_bytes, 0)


def closed_ts(state: NodeState, shard_id: int) -> int:
    return state.closed_ts_peek(shard_id)


def compact_revision(state: NodeState, shard_id: int) -> int:
    rep = state.replicas.get(shard_id)
    return rep.sm.compact_revision if rep is not None else 0


async def hash_kv(state: NodeState, shard_id: int, revision: int = 0) -> tuple[int, int, int, int]:
    """(hash, compact_revision, hash_revision, versions hashed) of this
    replica's MVCC state of the shard at revision (0: its newest
    readable one); shard/hashkv.py says what is hashed. Read from one
    RocksDB snapshot, yielding to the loop every few thousand versions."""
    rep = state.replicas.get(shard_id)
    if rep is None:
        raise ShardNotFound(shard_id)
    sm = rep.sm
    # the replicated closed timestamp, or the side channel's (shard/node/closedts.py), as reads use
    readable = state.readable_of(shard_id)
    rev = revision or readable
    if rev > readable:
        if state.is_leader(shard_id):
            raise FutureRevision()
        raise StaleReadNotReady(state.closed_ts_of(shard_id), rev, state.host.leader_of(shard_id))
    if rev < sm.compact_revision:
        raise RevisionCompacted()
    h = KvHash(rev, sm.compact_revision)
    view = state.engine.snapshot()  # no await since the checks: the view is the state they saw
    for i, (k, v) in enumerate(mvcc_records(view, sm.slot_ranges)):
        h.add(k, v)
        if i % 4096 == 4095:
            await asyncio.sleep(0)
    return h.result(), h.compact_revision, rev, h.versions
