"""Writes: Put, DeleteRange, Txn and Compact, proposed by the shard's leader.

After the routing checks (shard/node/routing.py), a write is refused while
the NOSPACE alarm is active (shard/quota.py), has its lease puts attached
first (shard/node/leases.py), and is proposed stamped with the node's HLC,
carrying ``closed_ts = stamp - 1`` (shard/node/closedts.py) and its
(router_id, seq) for exactly-once retries.
"""

from __future__ import annotations

from raft.core import ProposalDropped
from raft.runtime.host import GroupNotFound
from shard import slots, txn2pc
from shard.codec import encode_command
from shard.errors import ServerBusy, ShardError, SlotNotOwned
from shard.node.alarms import SpaceAlarms
from shard.node.closedts import ClosedTimestamps
from shard.node.leases import LeaseAttachment
from shard.node.requests import RequestContext
from shard.node.routing import RoutingChecks, check_owned, refuse_frozen
from shard.node.state import NodeState
from shard.statemachine import Applied
from shard.txn import validate
from shard.node.replica import ShardReplica
from shard.types import Request, CompactionRequest, Command, DeleteRangeRequest, PutRequest, Response, TxnPart, TxnPhase, TxnRequest

WriteRequest = PutRequest | DeleteRangeRequest | TxnRequest | CompactionRequest | TxnPart

LOCK_WAIT_S = 0.5
"""How long a request that meets a txn's lock waits here for it to go before
answering TxnLocked (the router then retries, and resolves a lock that stays)."""


def releases_lock(rep: ShardReplica, request: object) -> bool:
    """Whether request, applied, takes the shard's txn lock away (a step that
    decides the locked txn here)."""
    lock = rep.sm.txn_lock
    return (
        lock is not None
        and isinstance(request, TxnPart)
        and request.txn_id == lock.txn_id
        and request.phase in (TxnPhase.DECIDE, TxnPhase.COMMIT, TxnPhase.ABORT, TxnPhase.RESOLVE)
    )


async def wait_unlocked(rep: ShardReplica, request: object, max_wait_s: float) -> txn2pc.TxnLock | None:
    """The shard's txn lock once it no longer stands in request's way, or as
    it is after max_wait_s. A PREPARE of a txn younger than the lock's does
    not wait: it gives up at once (wait-die: router/txn2pc.py). A request
    arriving once the step that releases the lock is proposed does not wait
    either: proposed after it, it applies after it (were that step dropped,
    the apply answers TxnLocked with no effect, and the router retries)."""
    lock = rep.sm.txn_lock
    if lock is None or txn2pc.is_part(request, lock):
        return lock
    if rep.releasing == lock.txn_id:
        return None
    if isinstance(request, TxnPart) and request.phase == TxnPhase.PREPARE and lock.txn_id[:16] < request.txn_id[:16]:
        return lock
    await rep.lock_change(max_wait_s)
    return rep.sm.txn_lock


def owned_puts(rep: ShardReplica, txn: TxnRequest) -> TxnRequest:
    """The puts of txn (either branch, nested ones included) whose keys this
    shard owns: a participant attaches (and settles) leases of its own keys
    only."""
    sm = rep.sm
    puts = tuple(
        op
        for op in txn2pc.flat_ops(txn)
        if isinstance(op, PutRequest) and slots.contains(sm.slot_ranges, slots.slot_of(op.key, sm.slot_count))
    )
    return TxnRequest(success=puts)


class Writes:
    def __init__(
        self, state: NodeState, checks: RoutingChecks, alarms: SpaceAlarms, leases: LeaseAttachment, closed: ClosedTimestamps
    ) -> None:
        self._s = state
        self._checks = checks
        self._alarms = alarms
        self._leases = leases
        self._closed = closed

    async def write(self, ctx: RequestContext, request: WriteRequest) -> Response:
        """Propose a write as the shard's leader; return etcd's response once
        applied here. A retry with the same (router_id, seq) gets the first
        outcome and is not applied again."""
        s = self._s
        rep = self._checks.replica(ctx)
        validate(request)
        check_owned(rep, request)
        refuse_frozen(rep, request)
        sid = ctx.shard_id
        if not s.is_leader(sid):
            raise self._checks.not_leader(sid)
        lock = await wait_unlocked(rep, request, self._checks.timeout_s(ctx, LOCK_WAIT_S))
        if lock is not None and not txn2pc.is_part(request, lock):
            raise rep.sm.locked_error()  # the apply would refuse it too: save the round
        if not s.is_leader(sid):
            raise self._checks.not_leader(sid)
        # Leases are attached (and settled) for the puts this shard applies:
        # a txn part's are those of its txn on this shard's keys.
        leased: Request | None = request
        if isinstance(request, TxnPart):
            if request.phase == TxnPhase.PREPARE and request.txn is not None:
                leased = owned_puts(rep, request.txn)
            elif lock is not None and lock.txn_id == request.txn_id:
                leased = owned_puts(rep, lock.txn)
            else:
                leased = None
        # NoSpace while the NOSPACE alarm is active here or on a node with a
        # replica of this shard (etcd's capped applier)
        self._alarms.quota.admit(leased if isinstance(request, TxnPart) and leased is not None else request, lambda: s.group_nodes(sid))
        s.request_counts.setdefault(sid, [0, 0])[1] += 1
        timeout_s = self._checks.timeout_s(ctx, s.cfg.propose_timeout_s)
        if leased is not None and not (isinstance(request, TxnPart) and request.phase != TxnPhase.PREPARE):
            await self._leases.check(leased)
        stamp = s.stamp()
        cmd = Command(request, ctx.router_id, ctx.seq, stamp, stamp - 1, ctx.seq_floor)
        self._closed.proposed(sid)
        releasing = rep.sm.txn_lock.txn_id if rep.sm.txn_lock is not None and releases_lock(rep, request) else None
        if releasing is not None:
            rep.releasing = releasing
        try:
            try:
                applied = await s.host.propose(sid, encode_command(cmd), timeout_s=timeout_s)
            except BaseException:
                if releasing is not None and rep.releasing == releasing:
                    rep.releasing = None  # not applied (or not known to be): requests wait for the lock again
                raise
        except (ProposalDropped, GroupNotFound):
            raise self._checks.not_leader(sid) from None
        except TimeoutError:
            if rep.retired:
                # Destroyed after a merge with this proposal pending: every
                # entry up to the freeze was applied here before (the merge
                # needed it), so its entry, if any, came after the freeze,
                # which applies nothing. The keys are the target's now.
                refuse_frozen(rep, request)
            raise ServerBusy(
                "the write was not applied in time: its outcome is unknown; retry it with the same seq", 100, outcome_unknown=True
            ) from None
        assert isinstance(applied, Applied), applied
        outcome = applied.outcome
        if isinstance(request, TxnPart):
            # A txn part settles when its txn is decided here (or refused).
            if leased is not None and (request.phase != TxnPhase.PREPARE or isinstance(outcome, ShardError)):
                self._leases.settle(sid, leased)
        elif isinstance(request, TxnRequest) or isinstance(outcome, ShardError):
            # Only a txn's branch that did not run, or a refused write, can
            # leave a lease attached that the apply did not give: a plain
            # put that applied carries exactly the lease it named.
            self._leases.settle(sid, request)
        if isinstance(outcome, SlotNotOwned):  # the slots changed between the check and the apply
            check_owned(rep, request)
            raise outcome
        if isinstance(outcome, ShardError):
            raise outcome
        return outcome
