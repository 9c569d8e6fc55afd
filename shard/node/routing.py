"""Routing checks: may this replica serve this request now?

In this order: the shard is hosted here (ShardNotFound), the request's epoch
is the replica's (EpochNotMatch, naming the shards hosted here that took
slots from it or own the request's keys), the request is valid (etcd's
RequestError, checked by the caller), its keys are in the shard's slots
(WrongShard), the shard is not frozen for a merge (WrongShard), and for
writes this replica leads the shard (NotLeader, with the leader's id and
Store address). The errors are shard/errors.py's RoutingError tree.
"""

from __future__ import annotations

from shard import slots
from shard.errors import EpochNotMatch, NotLeader, ServerBusy, ShardNotFound, WrongShard
from shard.node.replica import ShardReplica
from shard.node.requests import RequestContext
from shard.node.state import NodeState
from shard.node.status import shard_info
from shard.types import DeleteRangeRequest, PutRequest, RangeRequest, Request, RequestOp, ShardInfo, TxnRequest


def request_keys(op: Request | RequestOp) -> list[tuple[bytes, bytes]]:
    """The (key, range_end) pairs a request touches, a txn's compares and branches included."""
    if isinstance(op, TxnRequest):
        out = [(c.key, c.range_end) for c in op.compare]
        for sub in (*op.success, *op.failure):
            out.extend(request_keys(sub))
        return out
    if isinstance(op, PutRequest):
        return [(op.key, b"")]
    if isinstance(op, (RangeRequest, DeleteRangeRequest)):
        return [(op.key, op.range_end)]
    return []


def check_owned(rep: ShardReplica, request: Request | RequestOp) -> None:
    sm = rep.sm
    for key, range_end in request_keys(request):
        one = slots.single_slot(key, range_end, sm.slot_count)
        if one is not None and not slots.contains(sm.slot_ranges, one):
            raise WrongShard(one)


def refuse_frozen(rep: ShardReplica, request: Request | RequestOp) -> None:
    """A shard frozen for a merge serves no reads or writes: WrongShard,
    so the router refreshes its map and retries (on the merge's target
    once the merge is in the map). Watches are still served: the frozen
    history is final."""
    if not rep.sm.frozen:
        return
    for key, range_end in request_keys(request):
        one = slots.single_slot(key, range_end, rep.sm.slot_count)
        if one is not None:
            raise WrongShard(one)
    raise WrongShard(rep.sm.slot_ranges[0][0] if rep.sm.slot_ranges else 0)


class RoutingChecks:
    """The checks that need the node: hosted replicas, epochs, leadership, deadlines."""

    def __init__(self, state: NodeState) -> None:
        self._s = state

    def replica(self, ctx: RequestContext) -> ShardReplica:
        """The replica a request names, at the epoch it names; advances the node's HLC to the request's."""
        rep = self._s.replicas.get(ctx.shard_id)
        if rep is None:
            raise ShardNotFound(ctx.shard_id)
        if ctx.epoch != rep.epoch:
            raise self.epoch_not_match(rep)
        if ctx.hlc > 0:
            self._s.hlc.update(ctx.hlc)
        return rep

    def epoch_not_match(self, rep: ShardReplica, request: Request | RequestOp | None = None) -> EpochNotMatch:
        s = self._s
        related: dict[int, ShardInfo] = {}
        for child in rep.sm.children:
            if child in s.replicas:
                related[child] = shard_info(s, child)
        if request is not None:
            for key, range_end in request_keys(request):
                one = slots.single_slot(key, range_end, rep.sm.slot_count)
                if one is None:
                    continue
                for sid, other in s.replicas.items():
                    if sid != rep.shard_id and sid not in related and slots.contains(other.sm.slot_ranges, one):
                        related[sid] = shard_info(s, sid)
        infos = tuple(related.values())
        addresses = {n: s.address_of(n) for info in infos for n in (*info.voters, *info.learners)}
        return EpochNotMatch(rep.epoch, rep.sm.slot_ranges, infos, addresses)

    def not_leader(self, shard_id: int) -> NotLeader | ShardNotFound:
        s = self._s
        if shard_id not in s.replicas or shard_id not in s.host.group_ids():
            return ShardNotFound(shard_id)  # destroyed meanwhile
        leader = s.host.leader_of(shard_id)
        if leader == s.node_id:
            leader = 0  # we were, but the proposal was dropped: an election is under way
        return NotLeader(shard_id, leader, s.address_of(leader) if leader else "")

    def timeout_s(self, ctx: RequestContext, default: float) -> float:
        if not ctx.deadline_ms:
            return default
        left = (ctx.deadline_ms - self._s.clock.wall_ms()) / 1000
        if left <= 0:
            raise ServerBusy("the request's deadline passed before it started")
        return min(default, left)
