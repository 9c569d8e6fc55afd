"""Txns whose compares and writes span shards (router/txn2pc.py,
shard/txn2pc.py), through a real cluster: placement, three stores, four
shards and a router process, driven with etcd's own gRPC API."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from flotilla.cluster import Cluster
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc
from shard import slots
from tests.integration.routerproc import cluster_with_router

SHARDS = 4


class Env:
    def __init__(self, c: Cluster, address: str) -> None:
        self.c = c
        self.channel = grpc.insecure_channel(address)
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.watch = rpc_pb2_grpc.WatchStub(self.channel)
        self.map = c.get_map()

    def shard_of(self, key: bytes) -> int:
        slot = slots.slot_of(key, self.map.slot_count)
        return next(s.descriptor.shard_id for s in self.map.shards if any(r.start <= slot < r.end for r in s.descriptor.slots))

    def keys_on_shards(self, prefix: str, n: int) -> list[bytes]:
        """n keys starting with prefix, each on a shard of its own."""
        found: dict[int, bytes] = {}
        for i in range(10_000):
            k = f"{prefix}{i}".encode()
            found.setdefault(self.shard_of(k), k)
            if len(found) == n:
                return [found[s] for s in sorted(found)]
        raise AssertionError(f"no {n} keys on distinct shards")

    def get(self, key: bytes, **kw: Any) -> epb.RangeResponse:
        return self.kv.Range(epb.RangeRequest(key=key, **kw), timeout=30)

    def put(self, key: bytes, value: bytes) -> epb.PutResponse:
        return self.kv.Put(epb.PutRequest(key=key, value=value), timeout=30)

    def txn(self, req: epb.TxnRequest) -> epb.TxnResponse:
        return self.kv.Txn(req, timeout=30)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp: Path = tmp_path_factory.mktemp("txncross")
    c = Cluster(tmp, initial_shards=SHARDS)
    with cluster_with_router(c, tmp) as router:
        e = Env(c, router.address)
        yield e
        e.channel.close()


def put_op(key: bytes, value: bytes, **kw: Any) -> epb.RequestOp:
    return epb.RequestOp(request_put=epb.PutRequest(key=key, value=value, **kw))


def get_op(key: bytes, **kw: Any) -> epb.RequestOp:
    return epb.RequestOp(request_range=epb.RangeRequest(key=key, **kw))


def mod_is(key: bytes, rev: int) -> epb.Compare:
    return epb.Compare(key=key, target=epb.Compare.MOD, result=epb.Compare.EQUAL, mod_revision=rev)


def value_is(key: bytes, value: bytes) -> epb.Compare:
    return epb.Compare(key=key, target=epb.Compare.VALUE, result=epb.Compare.EQUAL, value=value)


def test_a_txn_over_two_shards_applies_at_one_revision(env: Env) -> None:
    a, b = env.keys_on_shards("two/", 2)
    ra = env.put(a, b"1").header.revision
    rb = env.put(b, b"1").header.revision
    resp = env.txn(
        epb.TxnRequest(compare=[mod_is(a, ra), mod_is(b, rb)], success=[put_op(a, b"2", prev_kv=True), put_op(b, b"2"), get_op(a), get_op(b)])
    )
    assert resp.succeeded
    rev = resp.header.revision
    assert rev > max(ra, rb)
    assert resp.responses[0].response_put.prev_kv.value == b"1"
    # ranges inside the txn see the txn's own writes
    assert [kv.value for kv in resp.responses[2].response_range.kvs] == [b"2"]
    assert [kv.value for kv in resp.responses[3].response_range.kvs] == [b"2"]
    for k in (a, b):
        kv = env.get(k).kvs[0]
        assert (kv.value, kv.mod_revision) == (b"2", rev)
    # the state just before the txn's revision is the old one on both shards
    for k in (a, b):
        assert env.get(k, revision=rev - 1).kvs[0].value == b"1"


def test_a_failed_compare_on_one_shard_writes_nothing_anywhere(env: Env) -> None:
    a, b, c = env.keys_on_shards("fail/", 3)
    env.put(a, b"x")
    env.put(b, b"y")
    resp = env.txn(
        epb.TxnRequest(
            compare=[value_is(a, b"x"), value_is(b, b"not-y")],
            success=[put_op(a, b"s"), put_op(b, b"s"), put_op(c, b"s")],
            failure=[put_op(c, b"f"), get_op(a)],
        )
    )
    assert not resp.succeeded
    assert env.get(a).kvs[0].value == b"x"
    assert env.get(b).kvs[0].value == b"y"
    assert env.get(c).kvs[0].value == b"f"
    assert resp.responses[1].response_range.kvs[0].value == b"x"


def test_a_refused_op_on_the_branch_fails_the_txn_with_etcds_error(env: Env) -> None:
    a, b = env.keys_on_shards("ign/", 2)
    env.put(a, b"keep")
    with pytest.raises(grpc.RpcError) as err:
        env.txn(epb.TxnRequest(success=[put_op(a, b"new"), epb.RequestOp(request_put=epb.PutRequest(key=b, ignore_value=True))]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "etcdserver: key not found"
    assert env.get(a).kvs[0].value == b"keep"


def test_nested_txns_and_deletes_across_shards(env: Env) -> None:
    a, b, c = env.keys_on_shards("nest/", 3)
    env.put(a, b"1")
    env.put(b, b"1")
    inner = epb.TxnRequest(compare=[value_is(b, b"1")], success=[put_op(c, b"inner")], failure=[put_op(c, b"wrong")])
    resp = env.txn(
        epb.TxnRequest(
            compare=[value_is(a, b"1")],
            success=[
                epb.RequestOp(request_delete_range=epb.DeleteRangeRequest(key=a, prev_kv=True)),
                epb.RequestOp(request_txn=inner),
            ],
        )
    )
    assert resp.succeeded
    assert resp.responses[0].response_delete_range.deleted == 1
    assert resp.responses[1].response_txn.succeeded
    assert not env.get(a).kvs
    assert env.get(c).kvs[0].value == b"inner"
    assert env.get(c).kvs[0].mod_revision == resp.header.revision


def test_concurrent_read_modify_write_txns_lose_no_increment(env: Env) -> None:
    """Several clients increment counters on different shards, each by a
    txn over two of them guarded by their mod revisions (etcd's STM):
    every txn that reports success is counted once, and no other."""
    keys = env.keys_on_shards("ctr/", SHARDS)
    for k in keys:
        env.put(k, b"0")
    committed = [0] * 4
    errors: list[BaseException] = []

    def client(n: int) -> None:
        try:
            for i in range(15):
                pair = (keys[(n + i) % len(keys)], keys[(n + i + 1) % len(keys)])
                for _ in range(200):
                    got = [env.get(k).kvs[0] for k in pair]
                    resp = env.txn(
                        epb.TxnRequest(
                            compare=[mod_is(kv.key, kv.mod_revision) for kv in got],
                            success=[put_op(kv.key, str(int(kv.value) + 1).encode()) for kv in got],
                        )
                    )
                    if resp.succeeded:
                        committed[n] += 1
                        break
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert not errors, errors
    assert sum(committed) == 60
    total = sum(int(env.get(k).kvs[0].value) for k in keys)
    assert total == 2 * sum(committed)


def test_a_watcher_sees_every_event_of_the_txn_in_one_response(env: Env) -> None:
    """A watch over a prefix on every shard gets a txn's writes on three
    shards together, at the txn's revision, never part of them first."""
    keys = env.keys_on_shards("w/", 3)
    start = env.put(b"w/start", b"").header.revision
    requests: list[epb.WatchRequest] = [
        epb.WatchRequest(create_request=epb.WatchCreateRequest(key=b"w/", range_end=b"w0", start_revision=start + 1))
    ]
    stream = env.watch.Watch(iter(requests), timeout=60)
    first = next(stream)
    assert first.created
    revisions = []
    for i in range(3):
        resp = env.txn(epb.TxnRequest(success=[put_op(k, f"{i}".encode()) for k in keys]))
        revisions.append(resp.header.revision)
    responses: list[list[tuple[int, bytes]]] = []
    seen = 0
    for resp in stream:
        if resp.events:
            responses.append([(e.kv.mod_revision, e.kv.key) for e in resp.events])
            seen += len(resp.events)
        if seen >= 3 * len(keys):
            break
    stream.cancel()
    for rev in revisions:
        holding = [r for r in responses if any(er == rev for er, _ in r)]
        # every event of the txn's revision, in one response (etcd never splits a revision)
        assert len(holding) == 1, responses
        assert sorted(k for er, k in holding[0] if er == rev) == sorted(keys)
    assert [er for r in responses for er, _ in r] == sorted(er for r in responses for er, _ in r)


def test_a_txn_reading_single_keys_on_several_shards(env: Env) -> None:
    """Only ranges, of one key each, on different shards (the campaign found
    it looping on WrongShard): every key is read, at one revision."""
    a, b, c = env.keys_on_shards("ro/", 3)
    for k in (a, b, c):
        env.put(k, k)
    resp = env.txn(epb.TxnRequest(success=[get_op(a), get_op(b), epb.RequestOp(request_range=epb.RangeRequest(key=b"ro/", range_end=b"ro0"))]))
    assert resp.succeeded
    assert [r.response_range.kvs[0].value for r in resp.responses[:2]] == [a, b]
    assert sorted(kv.key for kv in resp.responses[2].response_range.kvs) == sorted([a, b, c])
    # with a compare on one shard and a read on another
    resp = env.txn(epb.TxnRequest(compare=[value_is(a, a)], success=[get_op(c)], failure=[get_op(b)]))
    assert resp.succeeded and resp.responses[0].response_range.kvs[0].value == c
