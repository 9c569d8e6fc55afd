"""Reads at the four consistencies (store.proto's ReadConsistency):

- linearizable: a ReadIndex on any replica (a follower asks its leader),
  then the epoch checked again: a replica that applied a split while the
  read waited answers EpochNotMatch, never from its pre-split view;
- serializable: this replica's state as it is;
- bounded staleness: this replica if its closed timestamp is within the
  bound, else StaleReadNotReady (the leader proves itself with a ReadIndex);
- at a revision: this replica if it can read that revision (closed
  timestamp), else StaleReadNotReady (the leader: a ReadIndex, then
  FutureRevision if still ahead).

While a txn across shards holds the shard's lock (shard/txn2pc.py), a read
that must see the newest state of a key the txn may write (linearizable, or
bounded staleness served by the leader) answers TxnLocked instead, and so
does a read at a revision the shard cannot close until the txn is decided:
the router retries once it is, so no read sees one participant's part of a
txn without the others'.
"""

from __future__ import annotations

from raft.runtime.host import GroupNotFound
from shard import hlc, txn2pc
from shard.errors import FutureRevision, StaleReadNotReady
from shard.node.requests import Consistency, RequestContext
from shard.node.routing import RoutingChecks, check_owned, refuse_frozen
from shard.node.replica import ShardReplica
from shard.node.writes import LOCK_WAIT_S
from shard.node.state import NodeState
from shard.txn import validate
from shard.types import RangeRequest, RangeResponse


WAIT_FIRST_CLOSED_ROUNDS = 5
"""Side-channel intervals a read of a shard that has closed nothing yet waits for its first closed timestamp."""


class Reads:
    def __init__(self, state: NodeState, checks: RoutingChecks) -> None:
        self._s = state
        self._checks = checks

    async def range(
        self, ctx: RequestContext, request: RangeRequest, consistency: Consistency, max_staleness_ms: int = 0
    ) -> RangeResponse:
        s = self._s
        rep = self._checks.replica(ctx)
        validate(request)
        check_owned(rep, request)
        refuse_frozen(rep, request)
        sid = ctx.shard_id
        sm = rep.sm
        s.request_counts.setdefault(sid, [0, 0])[0] += 1
        if consistency == Consistency.LINEARIZABLE:
            await self._refuse_locked(ctx, rep, request)
            await self._read_index(ctx)
            # The wait may have applied a split (or conf change): the read is
            # linearizable only if this replica still serves its keys at the
            # epoch the request named. (The multi-Raft "read on the old
            # leader of a shard that just split" bug.)
            if ctx.epoch != rep.epoch or s.replicas.get(sid) is not rep:
                raise self._checks.epoch_not_match(rep, request)
            check_owned(rep, request)
            await self._refuse_locked(ctx, rep, request)
        elif consistency == Consistency.BOUNDED_STALENESS:
            now = s.stamp()
            needed = max(0, now - hlc.span(max_staleness_ms))
            closed = s.closed_ts_of(sid)
            if closed < needed:
                if not s.is_leader(sid):
                    raise StaleReadNotReady(closed, needed, s.host.leader_of(sid))
                # The leader is the fallback, but a deposed leader may not know
                # it yet: a ReadIndex proves its state is current, which meets
                # any staleness bound.
                await self._read_index(ctx)
                await self._refuse_locked(ctx, rep, request)
        elif consistency == Consistency.AT_REVISION:
            # readable_of: the side channel's closed timestamp counts too, but
            # never while the shard holds a txn lock (shard/node/closedts.py).
            if request.revision > s.readable_of(sid) and sm.txn_lock is not None:
                await rep.lock_change(self._checks.timeout_s(ctx, LOCK_WAIT_S))
                if request.revision > s.readable_of(sid) and sm.txn_lock is not None:
                    raise sm.locked_error()
            if request.revision > s.readable_of(sid):
                if not s.is_leader(sid):
                    raise StaleReadNotReady(s.closed_ts_of(sid), request.revision, s.host.leader_of(sid))
                await self._read_index(ctx)  # a new leader may not have applied all it committed
                if request.revision > s.readable_of(sid):
                    raise FutureRevision()
        readable = s.readable_of(sid)
        if readable == 0 and request.revision == 0:
            readable = await self._first_closed(ctx, sid)
        return rep.sm.range(request, readable=readable)

    async def _first_closed(self, ctx: RequestContext, sid: int) -> int:
        """A shard never written that has closed no timestamp yet (the first
        moments of a new cluster: an idle store's side channel runs once a
        second until a read asks it to hurry, as readable_of just did): wait
        a few rounds for one, so the response's header revision is not 0
        (etcd's never is once anything was written; `etcdctl make-mirror`
        panics on 0). Gives up after WAIT_FIRST_CLOSED_ROUNDS and answers 0."""
        s = self._s
        interval = s.cfg.closed_ts_interval_s
        readable = 0
        for _ in range(WAIT_FIRST_CLOSED_ROUNDS):
            await s.clock.sleep(min(interval, self._checks.timeout_s(ctx, interval)))
            readable = s.readable_of(sid)
            if readable:
                break
        return readable

    async def _refuse_locked(self, ctx: RequestContext, rep: ShardReplica, request: RangeRequest) -> None:
        """TxnLocked if a txn's lock covers a key of the read, after waiting
        for it a little (LOCK_WAIT_S)."""
        lock = rep.sm.txn_lock
        if lock is None or not txn2pc.overlaps(request.key, request.range_end, lock.writes()):
            return
        await rep.lock_change(self._checks.timeout_s(ctx, LOCK_WAIT_S))
        lock = rep.sm.txn_lock
        if lock is not None and txn2pc.overlaps(request.key, request.range_end, lock.writes()):
            raise rep.sm.locked_error()

    async def _read_index(self, ctx: RequestContext) -> None:
        s = self._s
        sid = ctx.shard_id
        try:
            await s.host.read_index(sid, timeout_s=self._checks.timeout_s(ctx, s.cfg.read_index_timeout_s))
        except (TimeoutError, GroupNotFound):
            raise self._checks.not_leader(sid) from None
