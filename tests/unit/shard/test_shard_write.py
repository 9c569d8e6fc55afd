"""Put and DeleteRange against etcd's semantics (server/etcdserver/txn/put.go,
delete.go, storage/mvcc): create/mod revision, version and its reset after a
delete, leases, prev_kv, ignore_value/ignore_lease, range_end rules, and
compaction. Every test runs on MemoryEngine and RocksEngine."""

from __future__ import annotations

import pytest

from shard import keys, slots
from shard.engine import scan
from shard.errors import FutureRevision, KeyNotFound, LeaseProvided, RevisionCompacted, ValueProvided
from shard.types import (
    CompactionRequest,
    CompactionResponse,
    DeleteRangeRequest,
    DeleteRangeResponse,
    KeyValue,
    PutRequest,
    PutResponse,
)


def test_put_creates_then_updates(shard):
    assert shard.put(b"k", b"v1") == PutResponse(1, None)
    assert shard.get(b"k") == KeyValue(b"k", 1, 1, 1, b"v1")
    assert shard.put(b"k", b"v2") == PutResponse(2, None)
    assert shard.get(b"k") == KeyValue(b"k", 1, 2, 2, b"v2")


def test_put_prev_kv(shard):
    assert shard.put(b"k", b"v1", prev_kv=True).prev_kv is None
    assert shard.put(b"k", b"v2", prev_kv=True).prev_kv == KeyValue(b"k", 1, 1, 1, b"v1")


def test_put_with_lease_and_lease_zero(shard):
    shard.put(b"k", b"v", lease=42)
    assert shard.get(b"k").lease == 42
    shard.put(b"k", b"v")  # lease 0 detaches
    assert shard.get(b"k").lease == 0


def test_put_empty_value(shard):
    shard.put(b"k", b"")
    assert shard.get(b"k") == KeyValue(b"k", 1, 1, 1, b"")


def test_ignore_value_keeps_value(shard):
    shard.put(b"k", b"v", lease=5)
    resp = shard.put(b"k", ignore_value=True, lease=6, prev_kv=True)
    assert resp.prev_kv == KeyValue(b"k", 1, 1, 1, b"v", 5)
    assert shard.get(b"k") == KeyValue(b"k", 1, 2, 2, b"v", 6)


def test_ignore_lease_keeps_lease(shard):
    shard.put(b"k", b"v", lease=5)
    shard.put(b"k", b"w", ignore_lease=True)
    assert shard.get(b"k") == KeyValue(b"k", 1, 2, 2, b"w", 5)


@pytest.mark.parametrize("flags", [{"ignore_value": True}, {"ignore_lease": True}, {"ignore_value": True, "ignore_lease": True}])
def test_ignore_flags_need_existing_key(shard, flags):
    err = shard.error(PutRequest(b"k", **flags))
    assert isinstance(err, KeyNotFound)
    assert err.message == "etcdserver: key not found"
    assert shard.sm.revision == 0
    shard.put(b"k", b"v")
    shard.delete(b"k")
    assert isinstance(shard.error(PutRequest(b"k", **flags)), KeyNotFound)
    assert shard.sm.revision == 2


def test_ignore_value_with_value_and_ignore_lease_with_lease(shard):
    shard.put(b"k", b"v")
    err = shard.error(PutRequest(b"k", b"x", ignore_value=True))
    assert isinstance(err, ValueProvided) and err.message == "etcdserver: value is provided"
    err = shard.error(PutRequest(b"k", lease=3, ignore_lease=True))
    assert isinstance(err, LeaseProvided) and err.message == "etcdserver: lease is provided"


def test_version_resets_after_delete(shard):
    shard.put(b"k", b"1")
    shard.put(b"k", b"2")
    assert shard.get(b"k").version == 2
    assert shard.delete(b"k") == DeleteRangeResponse(3, 1)
    assert shard.get(b"k") is None
    shard.put(b"k", b"3")
    assert shard.get(b"k") == KeyValue(b"k", 4, 4, 1, b"3")  # new create_revision, version 1
    assert shard.get(b"k", revision=2) == KeyValue(b"k", 1, 2, 2, b"2")
    assert shard.get(b"k", revision=3) is None


def test_delete_single_key(shard):
    shard.put(b"a")
    shard.put(b"ab")
    assert shard.delete(b"a") == DeleteRangeResponse(3, 1)
    assert shard.keys() == [b"ab"]


def test_delete_missing_key_keeps_revision(shard):
    shard.put(b"a")
    assert shard.delete(b"zz") == DeleteRangeResponse(1, 0)
    assert shard.sm.revision == 1


def test_delete_range_prefix_and_from_key(shard):
    for k in [b"a", b"b", b"b/1", b"b/2", b"c", b"d"]:
        shard.put(k, k)
    resp = shard.delete(b"b/", b"b0", prev_kv=True)
    assert (resp.revision, resp.deleted) == (7, 2)
    assert [kv.key for kv in resp.prev_kvs] == [b"b/1", b"b/2"]
    assert resp.prev_kvs[0] == KeyValue(b"b/1", 3, 3, 1, b"b/1")
    assert shard.keys() == [b"a", b"b", b"c", b"d"]
    resp = shard.delete(b"c", b"\x00")
    assert (resp.revision, resp.deleted, resp.prev_kvs) == (8, 2, ())
    assert shard.keys() == [b"a", b"b"]
    assert shard.delete(b"a", b"c").deleted == 2
    assert shard.keys() == []


def test_delete_all_keys(shard):
    for k in [b"\x00", b"a", b"\xff"]:
        shard.put(k)
    assert shard.delete(b"\x00", b"\x00").deleted == 3
    assert shard.range(b"\x00", b"\x00").count == 0


@pytest.mark.parametrize("range_end", [b"a", b"0"])
def test_delete_range_end_at_or_below_key_deletes_nothing(shard, range_end):
    shard.put(b"a")
    assert shard.delete(b"a", range_end).deleted == 0
    assert shard.sm.revision == 1


def test_deleted_keys_are_not_deleted_again(shard):
    shard.put(b"a")
    shard.delete(b"a")
    assert shard.delete(b"a", b"\x00").deleted == 0


# --- compaction ---------------------------------------------------------------------


def _versions(shard, key: bytes) -> list[tuple[int, bool]]:
    slot = slots.slot_of(key, shard.sm.slot_count)
    return [
        (keys.revision_of(k), keys.is_tombstone(v))
        for k, v in scan(shard.engine, keys.key_prefix(slot, key), keys.key_end(slot, key))
    ]


def test_compact_errors(shard):
    shard.put(b"a")
    shard.put(b"a")
    err = shard.error(CompactionRequest(3))
    assert isinstance(err, FutureRevision)
    assert shard.ok(CompactionRequest(1)) == CompactionResponse(2)
    for rev in (0, 1):
        err = shard.error(CompactionRequest(rev))
        assert isinstance(err, RevisionCompacted)
        assert err.message == "etcdserver: mvcc: required revision has been compacted"
    assert shard.ok(CompactionRequest(2)) == CompactionResponse(2)
    assert shard.sm.compact_revision == 2


def test_compaction_keeps_latest_version_at_or_below(shard):
    for v in (b"1", b"2", b"3", b"4"):
        shard.put(b"k", v)  # revisions 1..4
    shard.ok(CompactionRequest(2))
    assert _versions(shard, b"k") == [(4, False), (3, False), (2, False)]
    assert shard.get(b"k", revision=2).value == b"2"
    assert shard.get(b"k", revision=3).value == b"3"
    assert shard.sm.revision == 4  # compaction is not a write


def test_compaction_drops_tombstones_below(shard):
    shard.put(b"gone")  # 1
    shard.delete(b"gone")  # 2
    shard.put(b"stay")  # 3
    shard.put(b"back")  # 4
    shard.delete(b"back")  # 5
    shard.put(b"back", b"again")  # 6
    shard.ok(CompactionRequest(5))
    assert _versions(shard, b"gone") == []
    assert _versions(shard, b"stay") == [(3, False)]
    # the tombstone at exactly the compact revision stays (a watch may start there)
    assert _versions(shard, b"back") == [(6, False), (5, True)]
    shard.ok(CompactionRequest(6))
    assert _versions(shard, b"back") == [(6, False)]
    assert shard.keys() == [b"back", b"stay"]


def test_repeated_compactions_only_visit_recent_changes(shard):
    for i in range(5):
        for k in (b"a", b"b", b"c"):
            shard.put(k, b"%d" % i)
    shard.ok(CompactionRequest(6))
    shard.ok(CompactionRequest(12))
    for k in (b"a", b"b", b"c"):
        assert [r for r, _ in _versions(shard, k)] == [
            r for r in range(15, 0, -1) if r >= 10 and (r - {b"a": 1, b"b": 2, b"c": 3}[k]) % 3 == 0
        ]
    assert [kv.value for kv in shard.range(b"a", b"\x00").kvs] == [b"4", b"4", b"4"]


def test_compact_to_closed_timestamp(shard):
    shard.ok(PutRequest(b"a"), closed_ts=100)
    assert shard.sm.revision == 101
    shard.ok(PutRequest(b"b"), closed_ts=500)
    # nothing can be written at or below 500 any more: 500 is readable and compactable
    assert shard.sm.readable_revision == 501
    shard.ok(CompactionRequest(501))
    assert shard.keys() == [b"a", b"b"]


def test_delete_request_type(shard):
    resp = shard.ok(DeleteRangeRequest(b"nothing"))
    assert resp == DeleteRangeResponse(0, 0)
