"""Txn against etcd's semantics (server/etcdserver/txn/txn.go and
api/v3rpc/key.go): every compare target x result, range compares, branches,
nested txns (compares decided before any op runs), one revision per txn,
reads of the txn's own writes, the duplicate-key rule, the op limit, and the
checks that make a txn fail without writing anything."""

from __future__ import annotations

import itertools

import pytest

from shard.errors import (
    DuplicateKey,
    EmptyKey,
    FutureRevision,
    KeyNotFound,
    RevisionCompacted,
    TooManyOps,
)
from shard.txn import validate
from shard.types import (
    Compare,
    CompareResult,
    CompareTarget,
    CompactionRequest,
    DeleteRangeRequest,
    DeleteRangeResponse,
    EventType,
    KeyValue,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    TxnRequest,
    TxnResponse,
)

EQ, GT, LT, NE = CompareResult.EQUAL, CompareResult.GREATER, CompareResult.LESS, CompareResult.NOT_EQUAL
T = CompareTarget


def put(key: bytes, value: bytes = b"", **kw) -> PutRequest:
    return PutRequest(key, value, **kw)


def cmp(key: bytes, target: CompareTarget, result: CompareResult, operand, range_end: bytes = b"") -> Compare:
    return Compare(key, target, result, operand, range_end)


@pytest.fixture
def k_shard(shard):
    """k: create=1 mod=3 version=2 value=b"mid" lease=5 (revision 3)."""
    shard.put(b"k", b"old")
    shard.put(b"other")
    shard.put(b"k", b"mid", lease=5)
    return shard


ACTUAL = {T.VERSION: 2, T.CREATE: 1, T.MOD: 3, T.LEASE: 5}
CASES = [
    (target, result, delta)
    for target in (T.VERSION, T.CREATE, T.MOD, T.LEASE, T.VALUE)
    for result in (EQ, GT, LT, NE)
    for delta in (-1, 0, 1)
]


def _operand(target: CompareTarget, delta: int):
    if target == T.VALUE:
        return {-1: b"mic", 0: b"mid", 1: b"mie"}[delta]
    return ACTUAL[target] + delta


def _expected(result: CompareResult, delta: int) -> bool:
    # delta is operand - actual; GREATER means actual > operand
    return {EQ: delta == 0, NE: delta != 0, GT: delta < 0, LT: delta > 0}[result]


@pytest.mark.parametrize("target,result,delta", CASES, ids=[f"{t.name}-{r.name}-{d:+d}" for t, r, d in CASES])
def test_compare_on_existing_key(k_shard, target, result, delta):
    resp = k_shard.txn([cmp(b"k", target, result, _operand(target, delta))], [put(b"r/s")], [put(b"r/f")])
    assert resp.succeeded is _expected(result, delta)
    assert k_shard.keys(b"r/", b"r0") == ([b"r/s"] if resp.succeeded else [b"r/f"])


@pytest.mark.parametrize(
    "target,result,operand,expected",
    [
        (T.VERSION, EQ, 0, True),
        (T.VERSION, GT, 0, False),
        (T.CREATE, EQ, 0, True),
        (T.CREATE, LT, 1, True),
        (T.MOD, EQ, 0, True),
        (T.MOD, GT, 0, False),
        (T.LEASE, EQ, 0, True),
        (T.LEASE, NE, 0, False),
        # a value compare on a missing key always fails, whatever the result
        (T.VALUE, EQ, b"", False),
        (T.VALUE, NE, b"x", False),
        (T.VALUE, LT, b"x", False),
        (T.VALUE, GT, b"", False),
    ],
)
def test_compare_on_missing_key(shard, target, result, operand, expected):
    assert shard.txn([cmp(b"nope", target, result, operand)]).succeeded is expected


def test_compare_on_deleted_key_sees_zero_values(shard):
    shard.put(b"k", b"v")
    shard.delete(b"k")
    assert shard.txn([cmp(b"k", T.CREATE, EQ, 0)]).succeeded


def test_range_compares_need_every_key(shard):
    shard.put(b"p/1", b"a")
    shard.put(b"p/2", b"b")
    shard.put(b"p/2", b"b")
    assert shard.txn([cmp(b"p/", T.VERSION, GT, 0, b"p0")]).succeeded
    assert not shard.txn([cmp(b"p/", T.VERSION, EQ, 1, b"p0")]).succeeded
    assert shard.txn([cmp(b"p/", T.VALUE, LT, b"c", b"p0")]).succeeded
    assert not shard.txn([cmp(b"p/", T.VALUE, LT, b"b", b"p0")]).succeeded
    assert shard.txn([cmp(b"p/1", T.MOD, LT, 3, b"\x00")]).succeeded is False  # p/2 mod=3
    # an empty range: zero values, and value compares fail
    assert shard.txn([cmp(b"q/", T.VERSION, EQ, 0, b"q0")]).succeeded
    assert not shard.txn([cmp(b"q/", T.VALUE, NE, b"x", b"q0")]).succeeded


def test_all_compares_must_hold(k_shard):
    ok = cmp(b"k", T.VERSION, EQ, 2)
    bad = cmp(b"k", T.VERSION, EQ, 3)
    assert k_shard.txn([ok, ok]).succeeded
    assert not k_shard.txn([ok, bad]).succeeded
    assert k_shard.txn([]).succeeded  # no compares: success


def test_branches_and_responses(k_shard):
    resp = k_shard.txn(
        [cmp(b"k", T.VALUE, EQ, b"mid")],
        [put(b"k", b"new", prev_kv=True), RangeRequest(b"k"), DeleteRangeRequest(b"other", prev_kv=True)],
        [put(b"never")],
    )
    assert resp.succeeded and resp.revision == 4
    p, r, d = resp.responses
    assert p == PutResponse(4, KeyValue(b"k", 1, 3, 2, b"mid", 5))
    assert isinstance(r, RangeResponse) and r.kvs == (KeyValue(b"k", 1, 4, 3, b"new"),)  # sees its own write
    assert d == DeleteRangeResponse(4, 1, (KeyValue(b"other", 2, 2, 1, b""),))
    assert k_shard.get(b"never") is None
    resp = k_shard.txn([cmp(b"k", T.VALUE, EQ, b"mid")], [put(b"never")], [RangeRequest(b"k", keys_only=True)])
    assert not resp.succeeded and resp.revision == 4  # read-only branch: no new revision
    assert resp.responses[0].kvs[0].value == b""


def test_one_revision_for_the_whole_txn(shard):
    shard.put(b"c", b"0")
    applied = shard.apply(TxnRequest((), (put(b"a"), put(b"b"), DeleteRangeRequest(b"c"))))
    assert applied.revision == 2 and shard.sm.revision == 2
    assert [kv.mod_revision for kv in shard.range(b"a", b"\x00").kvs] == [2, 2]
    assert [(e.type, e.kv.key, e.kv.mod_revision) for e in applied.events] == [
        (EventType.PUT, b"a", 2),
        (EventType.PUT, b"b", 2),
        (EventType.DELETE, b"c", 2),
    ]
    shard.put(b"d")
    assert shard.sm.revision == 3


def test_range_in_txn_before_any_write_reports_old_revision(shard):
    shard.put(b"a")
    resp = shard.txn([], [RangeRequest(b"a"), put(b"b"), RangeRequest(b"a")])
    assert [r.revision for r in resp.responses] == [1, 2, 2]


def test_delete_of_nothing_in_txn(shard):
    shard.put(b"a")
    resp = shard.txn([], [DeleteRangeRequest(b"zz")])
    assert resp.revision == 1 and resp.responses[0] == DeleteRangeResponse(1, 0)
    resp = shard.txn([], [put(b"b"), DeleteRangeRequest(b"zz")])
    assert resp.responses[1] == DeleteRangeResponse(2, 0)


def test_nested_txn(shard):
    shard.put(b"flag", b"on")
    inner = TxnRequest(
        (cmp(b"flag", T.VALUE, EQ, b"on"),),
        (put(b"inner-yes"),),
        (put(b"inner-no"),),
    )
    resp = shard.txn([cmp(b"flag", T.VERSION, EQ, 1)], [put(b"outer"), inner])
    assert resp.succeeded and resp.revision == 2
    assert isinstance(resp.responses[1], TxnResponse) and resp.responses[1].succeeded
    assert shard.keys() == [b"flag", b"inner-yes", b"outer"]
    assert {kv.mod_revision for kv in shard.range(b"\x00", b"\x00").kvs} == {1, 2}


def test_nested_compares_are_decided_before_any_op_runs(shard):
    shard.put(b"x", b"old")
    inner = TxnRequest((cmp(b"x", T.VALUE, EQ, b"new"),), (put(b"saw-new"),), (put(b"saw-old"),))
    shard.txn([], [put(b"x", b"new"), inner])
    assert shard.keys() == [b"saw-old", b"x"]


def test_nested_txn_in_failure_branch_and_deep_nesting(shard):
    deep = TxnRequest((), (put(b"d3"),))
    mid = TxnRequest((cmp(b"nope", T.VERSION, GT, 0),), (put(b"never"),), (deep, put(b"d2")))
    resp = shard.txn([cmp(b"nope", T.VERSION, GT, 0)], [put(b"never2")], [mid, put(b"d1")])
    assert not resp.succeeded
    assert shard.keys() == [b"d1", b"d2", b"d3"]
    assert not resp.responses[0].succeeded and resp.responses[0].responses[0].succeeded


# --- checks that fail a txn as a whole ----------------------------------------------------


def test_ignore_value_on_missing_key_fails_whole_txn(shard):
    err = shard.error(TxnRequest((), (put(b"a"), put(b"b", ignore_value=True))))
    assert isinstance(err, KeyNotFound)
    assert shard.keys() == [] and shard.sm.revision == 0
    # only the branch that runs is checked
    assert shard.txn([], [put(b"a")], [put(b"b", ignore_value=True)]).succeeded


def test_range_revision_checks_fail_whole_txn(shard):
    for _ in range(3):
        shard.put(b"a")
    assert isinstance(shard.error(TxnRequest((), (put(b"b"), RangeRequest(b"a", revision=4)))), FutureRevision)
    shard.ok(CompactionRequest(2))
    assert isinstance(shard.error(TxnRequest((), (put(b"b"), RangeRequest(b"a", revision=1)))), RevisionCompacted)
    assert shard.keys() == [b"a"] and shard.sm.revision == 3
    resp = shard.txn([], [RangeRequest(b"a", revision=2), put(b"b")])
    assert resp.responses[0].kvs[0].mod_revision == 2


def test_nested_check_follows_the_path(shard):
    inner = TxnRequest((cmp(b"a", T.VERSION, EQ, 0),), (put(b"x", ignore_lease=True),), (put(b"y"),))
    assert isinstance(shard.error(TxnRequest((), (inner,))), KeyNotFound)
    shard.put(b"a")
    assert shard.txn([], [inner]).responses[0].succeeded is False
    assert shard.keys() == [b"a", b"y"]


# --- duplicate keys --------------------------------------------------------------------------


def _txn(success=(), failure=()) -> TxnRequest:
    return TxnRequest((), tuple(success), tuple(failure))


def _nested(success=(), failure=()) -> TxnRequest:
    return TxnRequest((cmp(b"c", T.VERSION, EQ, 0),), tuple(success), tuple(failure))


DUPLICATES = {
    "put-put": _txn([put(b"a"), put(b"a")]),
    "put-delete": _txn([put(b"a"), DeleteRangeRequest(b"a")]),
    "delete-put": _txn([DeleteRangeRequest(b"a"), put(b"a")]),
    "range-delete-put": _txn([DeleteRangeRequest(b"a", b"c"), put(b"b")]),
    "put-nested-put": _txn([put(b"a"), _nested([put(b"a")])]),
    "nested-put-nested-put": _txn([_nested([put(b"a")]), _nested([put(b"a")])]),
    "delete-nested-put": _txn([DeleteRangeRequest(b"a", b"c"), _nested([], [put(b"b")])]),
    "nested-delete-put": _txn([_nested([DeleteRangeRequest(b"a", b"c")]), put(b"b")]),
    "deep": _txn([_nested([_nested([put(b"z")])]), put(b"z")]),
    "failure-branch": _txn([], [put(b"a"), put(b"a")]),
}
ALLOWED = {
    "delete-delete": _txn([DeleteRangeRequest(b"a", b"c"), DeleteRangeRequest(b"b", b"d")]),
    "success-and-failure": _txn([put(b"a")], [put(b"a")]),
    "nested-then-else": _txn([_nested([put(b"a")], [put(b"a")])]),
    "range-and-put": _txn([RangeRequest(b"a"), put(b"a")]),
    "different-keys": _txn([put(b"a"), put(b"b"), DeleteRangeRequest(b"c")]),
    # etcd takes a delete's range_end literally: "\0" overlaps nothing
    "from-key-delete-and-put": _txn([DeleteRangeRequest(b"a", b"\x00"), put(b"b")]),
}


@pytest.mark.parametrize("name", DUPLICATES)
def test_duplicate_keys_are_refused(shard, name):
    with pytest.raises(DuplicateKey, match="^etcdserver: duplicate key given in txn request$"):
        validate(DUPLICATES[name])
    assert isinstance(shard.error(DUPLICATES[name]), DuplicateKey)  # and again at apply
    assert shard.sm.revision == 0


@pytest.mark.parametrize("name", ALLOWED)
def test_overlaps_etcd_allows(shard, name):
    validate(ALLOWED[name])
    shard.ok(ALLOWED[name])


def test_put_then_from_key_delete_in_one_txn(shard):
    shard.put(b"b", b"old")
    applied = shard.apply(_txn([put(b"b", b"new"), DeleteRangeRequest(b"a", b"\x00")]))
    assert [(e.type, e.kv.key) for e in applied.events] == [(EventType.PUT, b"b"), (EventType.DELETE, b"b")]
    assert applied.outcome.responses[1].deleted == 1
    assert shard.get(b"b") is None and shard.sm.revision == 2
    applied = shard.apply(_txn([DeleteRangeRequest(b"a", b"\x00"), put(b"c", b"v")]))
    assert shard.get(b"c") == KeyValue(b"c", 3, 3, 1, b"v")


# --- limits and empty keys ------------------------------------------------------------------


def test_max_ops(shard):
    many = tuple(put(b"k%03d" % i) for i in range(129))
    for req in (_txn(many), _txn([], many), TxnRequest(tuple(cmp(b"k", T.VERSION, EQ, 0) for _ in range(129)))):
        with pytest.raises(TooManyOps, match="^etcdserver: too many operations in txn request$"):
            validate(req)
        assert isinstance(shard.error(req), TooManyOps)
    resp = shard.txn([], many[:128])
    assert len(resp.responses) == 128
    assert shard.range(b"k", b"l", count_only=True).count == 128


def test_nested_txn_gets_what_the_parent_leaves(shard):
    outer = tuple(put(b"o%03d" % i) for i in range(99))
    inner_ok = _txn([put(b"i%03d" % i) for i in range(28)])
    inner_big = _txn([put(b"i%03d" % i) for i in range(29)])
    validate(_txn([*outer, inner_ok]))  # 100 ops outside, 28 inside
    with pytest.raises(TooManyOps):
        validate(_txn([*outer, inner_big]))
    assert isinstance(shard.error(_txn([*outer, inner_big])), TooManyOps)


@pytest.mark.parametrize(
    "req",
    [
        PutRequest(b""),
        DeleteRangeRequest(b""),
        RangeRequest(b""),
        _txn([put(b"")]),
        _txn([], [RangeRequest(b"")]),
        TxnRequest((cmp(b"", T.VERSION, EQ, 0),)),
        _txn([_nested([DeleteRangeRequest(b"")])]),
    ],
    ids=lambda r: type(r).__name__,
)
def test_empty_keys(req):
    with pytest.raises(EmptyKey):
        validate(req)


def test_compare_operand_combinations_roundtrip(shard):
    # every target with an operand of the right type goes through the log
    shard.put(b"k", b"v")
    for target, result in itertools.product(CompareTarget, CompareResult):
        operand = b"v" if target == T.VALUE else 0
        shard.txn([cmp(b"k", target, result, operand)])


def test_negative_range_revision_in_txn(shard):
    shard.put(b"a", b"1")
    shard.put(b"a", b"2")
    resp = shard.txn([], [RangeRequest(b"a", revision=-1)])
    assert resp.responses[0].kvs[0].value == b"2"
    shard.ok(CompactionRequest(1))
    assert isinstance(shard.error(TxnRequest((), (RangeRequest(b"a", revision=-1),))), RevisionCompacted)
