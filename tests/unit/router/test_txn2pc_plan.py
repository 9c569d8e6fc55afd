"""The coordinator's pure parts (router/txn2pc.py): numbering compares and
ops as the participants do (shard/txn2pc.py), etcd's compareToPath over the
combined compare results, and which ops the path runs."""

from __future__ import annotations

from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from router import txn2pc
from shard import convert
from shard import txn2pc as shard_txn2pc


def put(k: bytes) -> epb.RequestOp:
    return epb.RequestOp(request_put=epb.PutRequest(key=k, value=b"v"))


def cmp(k: bytes) -> epb.Compare:
    return epb.Compare(key=k, target=epb.Compare.VERSION, result=epb.Compare.EQUAL, version=0)


def nested() -> epb.TxnRequest:
    inner_then = epb.TxnRequest(compare=[cmp(b"i1")], success=[put(b"p1")], failure=[put(b"p2")])
    inner_else = epb.TxnRequest(compare=[cmp(b"i2")], success=[put(b"p3")], failure=[put(b"p4")])
    return epb.TxnRequest(
        compare=[cmp(b"o1"), cmp(b"o2")],
        success=[put(b"s1"), epb.RequestOp(request_txn=inner_then)],
        failure=[epb.RequestOp(request_txn=inner_else), put(b"f1")],
    )


def test_router_and_shard_number_compares_and_ops_alike() -> None:
    t = nested()
    mine = [c.key for c in txn2pc.flat_compares(t)]
    theirs = [c.key for c in shard_txn2pc.flat_compares(convert.txn_from_pb(t))]
    assert mine == theirs == [b"o1", b"o2", b"i1", b"i2"]
    ops = [txn2pc.op_range(op)[0] for op in txn2pc.flat_ops(t)]
    assert ops == [b"s1", b"", b"p1", b"p2", b"", b"p3", b"p4", b"f1"]
    assert len(list(shard_txn2pc.flat_ops(convert.txn_from_pb(t)))) == len(ops)


def test_path_and_executed_ops_follow_the_branches_taken() -> None:
    t = nested()
    # outer true, inner (then) false
    path = txn2pc.decide_path(t, [True, True, False, True])
    assert path == [True, False]
    assert txn2pc.executed_ops(t, path) == {0, 1, 3}  # s1, the inner txn, p2
    # outer false (one compare false), inner (else) true
    path = txn2pc.decide_path(t, [True, False, True, True])
    assert path == [False, True]
    assert txn2pc.executed_ops(t, path) == {4, 5, 7}  # the inner txn, p3, f1


def test_compares_combine_over_participants() -> None:
    T, F, TE, FE = txn2pc.COMPARE_TRUE, txn2pc.COMPARE_FALSE, txn2pc.COMPARE_TRUE_EMPTY, txn2pc.COMPARE_FALSE_EMPTY
    # one owner per key compare; a range compare seen by both: every shard with keys must agree
    assert txn2pc.combine_compares(3, [[T, 0, T], [0, F, FE]]) == [True, False, True]
    assert txn2pc.combine_compares(1, [[F], [T]]) == [False]
    # no keys anywhere: the compare against an absent key
    assert txn2pc.combine_compares(1, [[TE], [TE]]) == [True]
    # a compare no participant evaluated: the map changed
    assert txn2pc.combine_compares(2, [[T, 0]]) is None
