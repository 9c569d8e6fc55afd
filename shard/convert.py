"""Protobuf <-> shard types: etcd's KV messages and store.proto's headers and
errors on one side, shard/types.py and shard/node/requests.py's values on the other.

Pure (no I/O): the Store servicer decodes with the ``*_from_pb`` functions,
calls the node, and encodes with the ``*_to_pb`` ones. ``store_error`` is the
one place that maps a RoutingError or ShardError to store.proto's typed
``StoreError``. A protobuf value that has no shard meaning (an unknown enum
number, a compare without its operand) raises ``InvalidRequest``.
"""

from __future__ import annotations

from collections.abc import Iterable

from flotillapb import store_pb2 as spb
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.mvccpb import kv_pb2 as mvccpb
from shard import errors as se
from shard.errors import EpochNotMatch, NotLeader, RoutingError, ServerBusy, ShardNotFound, StaleReadNotReady, StoreError, WrongShard
from shard.node.requests import Consistency, RequestContext, WatchSpec
from shard.slots import SlotRanges
from shard.types import (
    Epoch,
    Compare,
    CompareResult,
    CompareTarget,
    CompactionRequest,
    CompactionResponse,
    DeleteRangeRequest,
    DeleteRangeResponse,
    Event,
    KeyValue,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    RequestOp,
    ResponseOp,
    ShardInfo,
    SortOrder,
    SortTarget,
    TxnPart,
    TxnPartResponse,
    TxnPhase,
    TxnRequest,
    TxnResponse,
)


class InvalidRequest(se.RequestError):
    """A request that does not convert; never stored in a log or dedup table."""

    code = 0
    message = "invalid request"


def _enum(cls: type, value: int, what: str) -> object:
    try:
        return cls(value)
    except ValueError:
        raise InvalidRequest(f"unknown {what} {value}") from None


# --- headers ------------------------------------------------------------------------------


def epoch_from_pb(e: spb.ShardEpoch) -> Epoch:
    return Epoch(e.conf_version, e.slot_version)


def epoch_to_pb(e: Epoch) -> spb.ShardEpoch:
    return spb.ShardEpoch(conf_version=e.conf_version, slot_version=e.slot_version)


def slots_to_pb(ranges: SlotRanges) -> list[spb.SlotRange]:
    return [spb.SlotRange(start=lo, end=hi) for lo, hi in ranges]


def context_from_pb(h: spb.RequestHeader) -> RequestContext:
    return RequestContext(
        shard_id=h.shard_id,
        epoch=epoch_from_pb(h.epoch),
        router_id=h.router_id,
        seq=h.seq,
        seq_floor=h.seq_floor,
        hlc=h.hlc,
        deadline_ms=h.deadline_ms,
    )


def consistency_from_pb(c: int) -> Consistency:
    return _enum(Consistency, c, "read consistency")  # type: ignore[return-value]


def watch_spec_from_pb(r: spb.ShardWatchRequest) -> WatchSpec:
    c = r.request
    filters = set(c.filters)
    return WatchSpec(
        key=c.key,
        range_end=c.range_end,
        start_revision=c.start_revision,
        prev_kv=c.prev_kv,
        no_put=epb.WatchCreateRequest.NOPUT in filters,
        no_delete=epb.WatchCreateRequest.NODELETE in filters,
        progress_interval_s=r.progress_interval_ms / 1000,
    )


# --- requests -----------------------------------------------------------------------------------


def range_from_pb(r: epb.RangeRequest) -> RangeRequest:
    return RangeRequest(
        key=r.key,
        range_end=r.range_end,
        limit=r.limit,
        revision=r.revision,
        sort_order=_enum(SortOrder, r.sort_order, "sort order"),  # type: ignore[arg-type]
        sort_target=_enum(SortTarget, r.sort_target, "sort target"),  # type: ignore[arg-type]
        serializable=r.serializable,
        keys_only=r.keys_only,
        count_only=r.count_only,
        min_mod_revision=r.min_mod_revision,
        max_mod_revision=r.max_mod_revision,
        min_create_revision=r.min_create_revision,
        max_create_revision=r.max_create_revision,
    )


def put_from_pb(r: epb.PutRequest) -> PutRequest:
    return PutRequest(
        key=r.key,
        value=r.value,
        lease=r.lease,
        prev_kv=r.prev_kv,
        ignore_value=r.ignore_value,
        ignore_lease=r.ignore_lease,
    )


def delete_range_from_pb(r: epb.DeleteRangeRequest) -> DeleteRangeRequest:
    return DeleteRangeRequest(key=r.key, range_end=r.range_end, prev_kv=r.prev_kv)


_COMPARE_OPERAND = {
    CompareTarget.VERSION: "version",
    CompareTarget.CREATE: "create_revision",
    CompareTarget.MOD: "mod_revision",
    CompareTarget.VALUE: "value",
    CompareTarget.LEASE: "lease",
}


def compare_from_pb(c: epb.Compare) -> Compare:
    target: CompareTarget = _enum(CompareTarget, c.target, "compare target")  # type: ignore[assignment]
    result: CompareResult = _enum(CompareResult, c.result, "compare result")  # type: ignore[assignment]
    field = _COMPARE_OPERAND[target]
    # etcd reads the member the target names; an unset one is the zero value.
    operand: int | bytes = getattr(c, field)
    return Compare(key=c.key, target=target, result=result, operand=operand, range_end=c.range_end)


def request_op_from_pb(op: epb.RequestOp) -> RequestOp:
    which = op.WhichOneof("request")
    if which == "request_range":
        return range_from_pb(op.request_range)
    if which == "request_put":
        return put_from_pb(op.request_put)
    if which == "request_delete_range":
        return delete_range_from_pb(op.request_delete_range)
    if which == "request_txn":
        return txn_from_pb(op.request_txn)
    raise InvalidRequest("a txn operation is empty")


def txn_from_pb(t: epb.TxnRequest) -> TxnRequest:
    return TxnRequest(
        compare=tuple(compare_from_pb(c) for c in t.compare),
        success=tuple(request_op_from_pb(op) for op in t.success),
        failure=tuple(request_op_from_pb(op) for op in t.failure),
    )


def compaction_from_pb(r: epb.CompactionRequest) -> CompactionRequest:
    return CompactionRequest(revision=r.revision, physical=r.physical)


# The other direction, for routers, tools and tests.


def range_to_pb(r: RangeRequest) -> epb.RangeRequest:
    return epb.RangeRequest(
        key=r.key,
        range_end=r.range_end,
        limit=r.limit,
        revision=r.revision,
        sort_order=int(r.sort_order),
        sort_target=int(r.sort_target),
        serializable=r.serializable,
        keys_only=r.keys_only,
        count_only=r.count_only,
        min_mod_revision=r.min_mod_revision,
        max_mod_revision=r.max_mod_revision,
        min_create_revision=r.min_create_revision,
        max_create_revision=r.max_create_revision,
    )


def put_to_pb(r: PutRequest) -> epb.PutRequest:
    return epb.PutRequest(
        key=r.key, value=r.value, lease=r.lease, prev_kv=r.prev_kv, ignore_value=r.ignore_value, ignore_lease=r.ignore_lease
    )


def delete_range_to_pb(r: DeleteRangeRequest) -> epb.DeleteRangeRequest:
    return epb.DeleteRangeRequest(key=r.key, range_end=r.range_end, prev_kv=r.prev_kv)


def compare_to_pb(c: Compare) -> epb.Compare:
    out = epb.Compare(key=c.key, target=int(c.target), result=int(c.result), range_end=c.range_end)
    setattr(out, _COMPARE_OPERAND[c.target], c.operand)
    return out


def request_op_to_pb(op: RequestOp) -> epb.RequestOp:
    if isinstance(op, RangeRequest):
        return epb.RequestOp(request_range=range_to_pb(op))
    if isinstance(op, PutRequest):
        return epb.RequestOp(request_put=put_to_pb(op))
    if isinstance(op, DeleteRangeRequest):
        return epb.RequestOp(request_delete_range=delete_range_to_pb(op))
    return epb.RequestOp(request_txn=txn_to_pb(op))


def txn_to_pb(t: TxnRequest) -> epb.TxnRequest:
    return epb.TxnRequest(
        compare=[compare_to_pb(c) for c in t.compare],
        success=[request_op_to_pb(op) for op in t.success],
        failure=[request_op_to_pb(op) for op in t.failure],
    )


# --- responses -------------------------------------------------------------------------------------


def kv_to_pb(kv: KeyValue) -> mvccpb.KeyValue:
    return mvccpb.KeyValue(
        key=kv.key,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
        value=kv.value,
        lease=kv.lease,
    )


def kv_from_pb(kv: mvccpb.KeyValue) -> KeyValue:
    return KeyValue(kv.key, kv.create_revision, kv.mod_revision, kv.version, kv.value, kv.lease)


def event_to_pb(ev: Event) -> mvccpb.Event:
    out = mvccpb.Event(type=int(ev.type), kv=kv_to_pb(ev.kv))
    if ev.prev_kv is not None:
        out.prev_kv.CopyFrom(kv_to_pb(ev.prev_kv))
    return out


def events_to_pb(events: Iterable[Event]) -> list[mvccpb.Event]:
    return [event_to_pb(ev) for ev in events]


def _header(revision: int) -> epb.ResponseHeader:
    return epb.ResponseHeader(revision=revision)


def range_response_to_pb(r: RangeResponse) -> epb.RangeResponse:
    return epb.RangeResponse(header=_header(r.revision), kvs=[kv_to_pb(kv) for kv in r.kvs], more=r.more, count=r.count)


def put_response_to_pb(r: PutResponse) -> epb.PutResponse:
    out = epb.PutResponse()
    put_response_into(out, r)
    return out


def put_response_into(out: epb.PutResponse, r: PutResponse) -> None:
    """put_response_to_pb written into a message that exists (a field of the answer), copying nothing."""
    out.header.revision = r.revision
    if r.prev_kv is not None:
        kv, p = r.prev_kv, out.prev_kv
        p.SetInParent()
        p.key, p.create_revision, p.mod_revision, p.version, p.value, p.lease = (
            kv.key, kv.create_revision, kv.mod_revision, kv.version, kv.value, kv.lease,
        )


def delete_range_response_to_pb(r: DeleteRangeResponse) -> epb.DeleteRangeResponse:
    return epb.DeleteRangeResponse(
        header=_header(r.revision), deleted=r.deleted, prev_kvs=[kv_to_pb(kv) for kv in r.prev_kvs]
    )


def response_op_to_pb(r: ResponseOp) -> epb.ResponseOp:
    if isinstance(r, RangeResponse):
        return epb.ResponseOp(response_range=range_response_to_pb(r))
    if isinstance(r, PutResponse):
        return epb.ResponseOp(response_put=put_response_to_pb(r))
    if isinstance(r, DeleteRangeResponse):
        return epb.ResponseOp(response_delete_range=delete_range_response_to_pb(r))
    return epb.ResponseOp(response_txn=txn_response_to_pb(r))


def txn_response_to_pb(r: TxnResponse) -> epb.TxnResponse:
    return epb.TxnResponse(
        header=_header(r.revision), succeeded=r.succeeded, responses=[response_op_to_pb(op) for op in r.responses]
    )


def compaction_response_to_pb(r: CompactionResponse) -> epb.CompactionResponse:
    return epb.CompactionResponse(header=_header(r.revision))


def txn_part_from_pb(r: spb.ShardTxnPartRequest) -> TxnPart:
    phase = _enum(TxnPhase, r.phase, "txn phase")
    return TxnPart(
        phase,  # type: ignore[arg-type]
        bytes(r.txn_id),
        r.primary_shard_id,
        txn_from_pb(r.txn) if r.HasField("txn") else None,
        tuple(r.path),
        r.commit,
        r.revision,
        r.slot_version,
    )


def txn_part_response_to_pb(r: TxnPartResponse) -> spb.ShardTxnPartResponse:
    out = spb.ShardTxnPartResponse(
        state=int(r.state),
        revision=r.revision,
        compares=list(r.compares),
        owned=list(r.owned),
        failed=[spb.TxnFailedOp(op=i, code=c) for i, c in r.failed],
        path=list(r.path),
    )
    if r.txn is not None:
        out.txn.CopyFrom(txn_response_to_pb(r.txn))
        out.has_txn = True
    return out


# --- errors ------------------------------------------------------------------------------------------

_KV_CODES: dict[type[se.ShardError], int] = {
    se.RevisionCompacted: spb.KvError.COMPACTED,
    se.FutureRevision: spb.KvError.FUTURE_REVISION,
    se.KeyNotFound: spb.KvError.KEY_NOT_FOUND,
    se.DuplicateKey: spb.KvError.DUPLICATE_KEY,
    se.TooManyOps: spb.KvError.TOO_MANY_OPS,
    se.OutcomeUnknown: spb.KvError.OUTCOME_UNKNOWN,
    se.EmptyKey: spb.KvError.EMPTY_KEY,
    se.ValueProvided: spb.KvError.VALUE_PROVIDED,
    se.LeaseProvided: spb.KvError.LEASE_PROVIDED,
    se.LeaseNotFound: spb.KvError.LEASE_NOT_FOUND,
    se.NoSpace: spb.KvError.NO_SPACE,
}


def store_error(exc: StoreError, *, compact_revision: int = 0) -> spb.StoreError:
    """The typed StoreError for a routing or KV error (compact_revision goes
    with COMPACTED)."""
    if isinstance(exc, RoutingError):
        return spb.StoreError(routing=_routing_error(exc))
    if isinstance(exc, se.SlotNotOwned):  # found at apply time: the slots changed meanwhile
        return spb.StoreError(routing=spb.RoutingError(wrong_shard=spb.WrongShard()))
    if isinstance(exc, se.TxnLocked):
        return spb.StoreError(
            routing=spb.RoutingError(
                txn_locked=spb.TxnLocked(txn_id=exc.txn_id, primary_shard_id=exc.primary, locked_at=exc.locked_at)
            )
        )
    assert isinstance(exc, se.ShardError), exc  # StoreError has these two branches only
    code = _KV_CODES.get(type(exc), spb.KvError.INVALID_REQUEST)
    kv = spb.KvError(code=code, detail=exc.message)
    if code == spb.KvError.COMPACTED:
        kv.compact_revision = compact_revision
    return spb.StoreError(kv=kv)


def _routing_error(exc: RoutingError) -> spb.RoutingError:
    if isinstance(exc, NotLeader):
        return spb.RoutingError(
            not_leader=spb.NotLeader(
                shard_id=exc.shard_id, leader_node_id=exc.leader_node_id, leader_address=exc.leader_address
            )
        )
    if isinstance(exc, WrongShard):
        return spb.RoutingError(wrong_shard=spb.WrongShard(slot=exc.slot, map_version=exc.map_version))
    if isinstance(exc, EpochNotMatch):
        return spb.RoutingError(
            epoch_not_match=spb.EpochNotMatch(
                current_epoch=epoch_to_pb(exc.current_epoch),
                current_slots=slots_to_pb(exc.current_slots),
                related=[descriptor_to_pb(info, exc.addresses) for info in exc.related],
            )
        )
    if isinstance(exc, StaleReadNotReady):
        return spb.RoutingError(
            stale_read_not_ready=spb.StaleReadNotReady(
                closed_ts=exc.closed_ts, needed_ts=exc.needed_ts, leader_node_id=exc.leader_node_id
            )
        )
    if isinstance(exc, ShardNotFound):
        return spb.RoutingError(shard_not_found=spb.ShardNotFound(shard_id=exc.shard_id))
    if isinstance(exc, ServerBusy):
        return spb.RoutingError(server_busy=spb.ServerBusy(reason=exc.reason, backoff_ms=exc.backoff_ms, outcome_unknown=exc.outcome_unknown))
    raise TypeError(f"unmapped routing error {type(exc).__name__}")


# --- admin --------------------------------------------------------------------------------------------


def descriptor_to_pb(info: ShardInfo, addresses: dict[int, str]) -> spb.ShardDescriptor:
    replicas = [spb.Replica(node_id=n, address=addresses.get(n, "")) for n in info.voters]
    replicas += [spb.Replica(node_id=n, address=addresses.get(n, ""), learner=True) for n in info.learners]
    return spb.ShardDescriptor(
        shard_id=info.shard_id,
        epoch=epoch_to_pb(info.epoch),
        slots=slots_to_pb(info.slot_ranges),
        replicas=replicas,
        leader_node_id=info.leader_node_id,
    )


def shard_status_to_pb(info: ShardInfo, addresses: dict[int, str]) -> spb.ShardStatus:
    return spb.ShardStatus(
        descriptor=descriptor_to_pb(info, addresses),
        is_leader=info.is_leader,
        term=info.term,
        commit_index=info.commit_index,
        applied_index=info.applied_index,
        revision=info.revision,
        compact_revision=info.compact_revision,
        closed_ts=info.closed_ts,
        watchers=info.watchers,
        reads=info.reads,
        writes=info.writes,
    )
