"""shard/convert.py: etcd's protobuf messages and store.proto's headers and
errors <-> the shard's own types."""

from __future__ import annotations

import pytest

from flotillapb import store_pb2 as spb
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.mvccpb import kv_pb2 as mvccpb
from shard import convert
from shard import errors as se
from shard.errors import EpochNotMatch, NotLeader, ServerBusy, ShardNotFound, StaleReadNotReady, WrongShard
from shard.node import Consistency, RequestContext, ShardInfo
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
    EventType,
    KeyValue,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    SortOrder,
    SortTarget,
    TxnRequest,
    TxnResponse,
)

KV = KeyValue(b"k", create_revision=5, mod_revision=9, version=3, value=b"v", lease=77)


def test_request_header_decodes_to_a_context() -> None:
    h = spb.RequestHeader(
        shard_id=4, epoch=spb.ShardEpoch(conf_version=2, slot_version=3), router_id=9, seq=11, hlc=1 << 40, deadline_ms=123
    )
    assert convert.context_from_pb(h) == RequestContext(4, Epoch(2, 3), 9, 11, 1 << 40, 123)


def test_read_consistency_numbers_match_the_proto() -> None:
    for name, number in spb.ReadConsistency.items():
        assert convert.consistency_from_pb(number) == Consistency[name.removeprefix("READ_")]
    with pytest.raises(convert.InvalidRequest):
        convert.consistency_from_pb(99)


def test_range_request_round_trips() -> None:
    r = RangeRequest(
        b"a", b"b", limit=3, revision=7, sort_order=SortOrder.DESCEND, sort_target=SortTarget.MOD, serializable=True,
        keys_only=True, count_only=True, min_mod_revision=1, max_mod_revision=2, min_create_revision=3, max_create_revision=4,
    )
    assert convert.range_from_pb(convert.range_to_pb(r)) == r


def test_put_and_delete_round_trip() -> None:
    p = PutRequest(b"k", b"v", lease=5, prev_kv=True, ignore_value=False, ignore_lease=True)
    assert convert.put_from_pb(convert.put_to_pb(p)) == p
    d = DeleteRangeRequest(b"a", b"\x00", prev_kv=True)
    assert convert.delete_range_from_pb(convert.delete_range_to_pb(d)) == d


def test_txn_with_every_compare_target_and_nested_ops_round_trips() -> None:
    t = TxnRequest(
        compare=(
            Compare(b"a", CompareTarget.VERSION, CompareResult.EQUAL, 1),
            Compare(b"b", CompareTarget.CREATE, CompareResult.GREATER, 2),
            Compare(b"c", CompareTarget.MOD, CompareResult.LESS, 3, range_end=b"d"),
            Compare(b"e", CompareTarget.VALUE, CompareResult.NOT_EQUAL, b"x"),
            Compare(b"f", CompareTarget.LEASE, CompareResult.EQUAL, 4),
        ),
        success=(PutRequest(b"a", b"1"), RangeRequest(b"b"), TxnRequest(success=(DeleteRangeRequest(b"c"),))),
        failure=(DeleteRangeRequest(b"a", b"z", prev_kv=True),),
    )
    assert convert.txn_from_pb(convert.txn_to_pb(t)) == t


def test_compare_reads_the_operand_its_target_names() -> None:
    # etcd reads the member the target names; another member is ignored.
    c = epb.Compare(key=b"k", target=epb.Compare.MOD, result=epb.Compare.EQUAL, version=5)
    assert convert.compare_from_pb(c).operand == 0
    bad = epb.Compare(key=b"k", target=17)
    with pytest.raises(convert.InvalidRequest):
        convert.compare_from_pb(bad)


def test_an_empty_txn_op_is_invalid() -> None:
    with pytest.raises(convert.InvalidRequest):
        convert.txn_from_pb(epb.TxnRequest(success=[epb.RequestOp()]))


def test_compaction_request() -> None:
    assert convert.compaction_from_pb(epb.CompactionRequest(revision=9, physical=True)) == CompactionRequest(9, True)


def test_responses_carry_the_revision_in_etcd_header() -> None:
    rr = convert.range_response_to_pb(RangeResponse(10, (KV,), more=True, count=4))
    assert rr.header.revision == 10 and rr.more and rr.count == 4
    assert convert.kv_from_pb(rr.kvs[0]) == KV
    pr = convert.put_response_to_pb(PutResponse(11, KV))
    assert pr.header.revision == 11 and convert.kv_from_pb(pr.prev_kv) == KV
    assert not convert.put_response_to_pb(PutResponse(11)).HasField("prev_kv")
    dr = convert.delete_range_response_to_pb(DeleteRangeResponse(12, 1, (KV,)))
    assert (dr.header.revision, dr.deleted, len(dr.prev_kvs)) == (12, 1, 1)
    tr = convert.txn_response_to_pb(
        TxnResponse(13, True, (PutResponse(13), RangeResponse(13, (KV,)), DeleteRangeResponse(13), TxnResponse(13, False)))
    )
    assert tr.succeeded and [op.WhichOneof("response") for op in tr.responses] == [
        "response_put", "response_range", "response_delete_range", "response_txn"
    ]
    assert convert.compaction_response_to_pb(CompactionResponse(14)).header.revision == 14


def test_a_put_answer_written_in_place_is_the_one_built_apart() -> None:
    for r in (PutResponse(11), PutResponse(11, KV), PutResponse(12, KeyValue(b"k"))):
        out = spb.ShardPutResponse()
        convert.put_response_into(out.response, r)
        assert out.response == convert.put_response_to_pb(r)
        assert out.response.HasField("prev_kv") == (r.prev_kv is not None)
        expected = epb.PutResponse(header=epb.ResponseHeader(revision=r.revision))
        if r.prev_kv is not None:
            expected.prev_kv.CopyFrom(convert.kv_to_pb(r.prev_kv))
        assert out.response == expected


def test_events() -> None:
    put = convert.event_to_pb(Event(EventType.PUT, KV, None))
    assert put.type == mvccpb.Event.PUT and not put.HasField("prev_kv")
    dele = convert.event_to_pb(Event(EventType.DELETE, KeyValue(b"k", mod_revision=10), KV))
    assert dele.type == mvccpb.Event.DELETE and convert.kv_from_pb(dele.prev_kv) == KV


def test_watch_spec_from_request() -> None:
    r = spb.ShardWatchRequest(
        request=epb.WatchCreateRequest(
            key=b"a", range_end=b"b", start_revision=5, prev_kv=True, filters=[epb.WatchCreateRequest.NODELETE]
        ),
        progress_interval_ms=250,
    )
    spec = convert.watch_spec_from_pb(r)
    assert (spec.key, spec.range_end, spec.start_revision, spec.prev_kv) == (b"a", b"b", 5, True)
    assert (spec.no_put, spec.no_delete, spec.progress_interval_s) == (False, True, 0.25)


@pytest.mark.parametrize(
    ("exc", "which"),
    [
        (NotLeader(3, 2, "127.0.0.1:5"), "not_leader"),
        (WrongShard(17), "wrong_shard"),
        (EpochNotMatch(Epoch(1, 2), ((0, 10), (20, 30))), "epoch_not_match"),
        (StaleReadNotReady(5, 9, 1), "stale_read_not_ready"),
        (ShardNotFound(8), "shard_not_found"),
        (ServerBusy("busy", 50), "server_busy"),
    ],
)
def test_routing_errors_are_typed(exc: Exception, which: str) -> None:
    err = convert.store_error(exc)  # type: ignore[arg-type]
    assert err.WhichOneof("error") == "routing"
    assert err.routing.WhichOneof("error") == which


def test_routing_errors_carry_what_the_router_needs() -> None:
    nl = convert.store_error(NotLeader(3, 2, "127.0.0.1:5")).routing.not_leader
    assert (nl.shard_id, nl.leader_node_id, nl.leader_address) == (3, 2, "127.0.0.1:5")
    enm = convert.store_error(EpochNotMatch(Epoch(1, 2), ((0, 10), (20, 30)))).routing.epoch_not_match
    assert (enm.current_epoch.conf_version, enm.current_epoch.slot_version) == (1, 2)
    assert [(s.start, s.end) for s in enm.current_slots] == [(0, 10), (20, 30)]
    srn = convert.store_error(StaleReadNotReady(5, 9, 1)).routing.stale_read_not_ready
    assert (srn.closed_ts, srn.needed_ts, srn.leader_node_id) == (5, 9, 1)
    assert convert.store_error(WrongShard(17)).routing.wrong_shard.slot == 17
    sb = convert.store_error(ServerBusy("busy", 50)).routing.server_busy
    assert (sb.reason, sb.backoff_ms, sb.outcome_unknown) == ("busy", 50, False)
    # A proposal that timed out may still apply: the router must tell its client so.
    assert convert.store_error(ServerBusy("timed out", 100, outcome_unknown=True)).routing.server_busy.outcome_unknown


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (se.RevisionCompacted(), spb.KvError.COMPACTED),
        (se.FutureRevision(), spb.KvError.FUTURE_REVISION),
        (se.KeyNotFound(), spb.KvError.KEY_NOT_FOUND),
        (se.DuplicateKey(), spb.KvError.DUPLICATE_KEY),
        (se.TooManyOps(), spb.KvError.TOO_MANY_OPS),
        (se.OutcomeUnknown(), spb.KvError.OUTCOME_UNKNOWN),
        (se.EmptyKey(), spb.KvError.EMPTY_KEY),
        (se.ValueProvided(), spb.KvError.VALUE_PROVIDED),
        (se.LeaseProvided(), spb.KvError.LEASE_PROVIDED),
        (se.InvalidSplit(), spb.KvError.INVALID_REQUEST),
        (se.InvalidCommand(), spb.KvError.INVALID_REQUEST),
        (convert.InvalidRequest("unknown sort order 9"), spb.KvError.INVALID_REQUEST),
    ],
)
def test_kv_errors_get_their_code(exc: se.ShardError, code: int) -> None:
    err = convert.store_error(exc, compact_revision=42)
    assert err.WhichOneof("error") == "kv"
    assert err.kv.code == code
    assert err.kv.detail == exc.message
    assert err.kv.compact_revision == (42 if code == spb.KvError.COMPACTED else 0)


def test_slot_not_owned_at_apply_is_a_wrong_shard() -> None:
    assert convert.store_error(se.SlotNotOwned()).routing.WhichOneof("error") == "wrong_shard"


def test_shard_status() -> None:
    info = ShardInfo(
        shard_id=2, epoch=Epoch(1, 1), slot_count=1024, slot_ranges=((256, 512),), voters=(1, 2, 3), learners=(4,),
        leader_node_id=2, is_leader=False, term=5, commit_index=10, applied_index=9, revision=100, compact_revision=50,
        closed_ts=99, watchers=1,
    )
    st = convert.shard_status_to_pb(info, {1: "a:1", 2: "a:2", 4: "a:4"})
    d = st.descriptor
    assert (d.shard_id, d.leader_node_id, [(s.start, s.end) for s in d.slots]) == (2, 2, [(256, 512)])
    assert [(r.node_id, r.address, r.learner) for r in d.replicas] == [(1, "a:1", False), (2, "a:2", False), (3, "", False), (4, "a:4", True)]
    assert (st.term, st.applied_index, st.revision, st.compact_revision, st.closed_ts, st.watchers) == (5, 9, 100, 50, 99, 1)
