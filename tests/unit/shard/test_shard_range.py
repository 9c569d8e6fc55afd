"""Range against etcd's documented semantics (server/etcdserver/txn/range.go,
the KV API reference): limit/more/count, revision, every sort order x target,
keys_only, count_only, the min/max revision filters, prefix and from-key
ranges. Every test runs on MemoryEngine and RocksEngine."""

from __future__ import annotations

import pytest

from shard.errors import EmptyKey, FutureRevision, RevisionCompacted
from shard.types import CompactionRequest, KeyValue, SortOrder, SortTarget

A, D = SortOrder.ASCEND, SortOrder.DESCEND


@pytest.fixture
def data(shard):
    """Revisions 1..7. Final state:
    a create=1 mod=4 version=2 value=4
    b create=2 mod=7 version=3 value=6
    c create=3 mod=3 version=1 value=2
    d create=5 mod=5 version=1 value=0"""
    for key, value in [(b"a", b"3"), (b"b", b"1"), (b"c", b"2"), (b"a", b"4"), (b"d", b"0"), (b"b", b"5"), (b"b", b"6")]:
        shard.put(key, value)
    assert shard.sm.revision == 7
    return shard


def test_kv_fields(data):
    assert data.range(b"a").kvs == (KeyValue(b"a", 1, 4, 2, b"4"),)
    assert data.range(b"b").kvs == (KeyValue(b"b", 2, 7, 3, b"6"),)


def test_header_revision_is_current(data):
    assert data.range(b"a").revision == 7
    assert data.range(b"a", revision=2).revision == 7


def test_missing_key(data):
    r = data.range(b"zz")
    assert (r.kvs, r.count, r.more) == ((), 0, False)


def test_empty_key_is_refused(data):
    with pytest.raises(EmptyKey, match="^etcdserver: key is not provided$"):
        data.range(b"")


@pytest.mark.parametrize(
    "limit,keys,more",
    [(0, b"abcd", False), (1, b"a", True), (2, b"ab", True), (3, b"abc", True), (4, b"abcd", False), (5, b"abcd", False)],
)
def test_limit_more_count(data, limit, keys, more):
    r = data.range(b"a", b"\x00", limit=limit)
    assert [kv.key for kv in r.kvs] == [bytes([k]) for k in keys]
    assert r.more is more
    assert r.count == 4


@pytest.mark.parametrize(
    "order,target,expected",
    [
        (SortOrder.NONE, SortTarget.KEY, b"abcd"),
        (A, SortTarget.KEY, b"abcd"),
        (D, SortTarget.KEY, b"dcba"),
        # order NONE with another target sorts ASCEND (etcd's default)
        (SortOrder.NONE, SortTarget.VERSION, b"cdab"),
        (A, SortTarget.VERSION, b"cdab"),
        (D, SortTarget.VERSION, b"bacd"),
        (SortOrder.NONE, SortTarget.CREATE, b"abcd"),
        (A, SortTarget.CREATE, b"abcd"),
        (D, SortTarget.CREATE, b"dcba"),
        (SortOrder.NONE, SortTarget.MOD, b"cadb"),
        (A, SortTarget.MOD, b"cadb"),
        (D, SortTarget.MOD, b"bdac"),
        (SortOrder.NONE, SortTarget.VALUE, b"dcab"),
        (A, SortTarget.VALUE, b"dcab"),
        (D, SortTarget.VALUE, b"bacd"),
    ],
)
def test_sort(data, order, target, expected):
    r = data.range(b"a", b"\x00", sort_order=order, sort_target=target)
    assert b"".join(kv.key for kv in r.kvs) == expected
    assert (r.count, r.more) == (4, False)


def test_sort_then_limit(data):
    r = data.range(b"a", b"e", sort_order=D, sort_target=SortTarget.MOD, limit=2)
    assert [kv.key for kv in r.kvs] == [b"b", b"d"]
    assert (r.more, r.count) == (True, 4)


@pytest.mark.parametrize(
    "filters,expected",
    [
        ({"min_mod_revision": 4}, b"abd"),
        ({"max_mod_revision": 4}, b"ac"),
        ({"min_create_revision": 2}, b"bcd"),
        ({"max_create_revision": 2}, b"ab"),
        ({"min_mod_revision": 4, "max_mod_revision": 5}, b"ad"),
        ({"min_create_revision": 3, "max_mod_revision": 4}, b"c"),
        ({"min_mod_revision": 8}, b""),
    ],
)
def test_revision_filters(data, filters, expected):
    r = data.range(b"a", b"\x00", **filters)
    assert b"".join(kv.key for kv in r.kvs) == expected
    assert r.count == 4  # count is before the filters


def test_filters_apply_before_limit(data):
    r = data.range(b"a", b"\x00", min_mod_revision=4, limit=1)
    assert [kv.key for kv in r.kvs] == [b"a"]
    assert (r.more, r.count) == (True, 4)
    r = data.range(b"a", b"\x00", min_mod_revision=5, limit=2)
    assert [kv.key for kv in r.kvs] == [b"b", b"d"]
    assert (r.more, r.count) == (False, 4)


def test_keys_only(data):
    r = data.range(b"a", b"c", keys_only=True)
    assert r.kvs == (KeyValue(b"a", 1, 4, 2, b""), KeyValue(b"b", 2, 7, 3, b""))


def test_count_only(data):
    for kw in ({}, {"limit": 1}, {"min_mod_revision": 5}, {"sort_order": D}):
        r = data.range(b"a", b"\x00", count_only=True, **kw)
        assert (r.kvs, r.count, r.more) == ((), 4, False)
    assert data.range(b"b", count_only=True).count == 1
    assert data.range(b"x", count_only=True).count == 0


def test_prefix_and_from_key(shard):
    for k in [b"foo", b"foo/1", b"foo/2", b"foo/2/x", b"fop", b"fo", b"g"]:
        shard.put(k)
    assert shard.keys(b"foo/", b"foo0") == [b"foo/1", b"foo/2", b"foo/2/x"]
    assert shard.keys(b"foo", b"fop") == [b"foo", b"foo/1", b"foo/2", b"foo/2/x"]
    assert shard.keys(b"foo/2", b"\x00") == [b"foo/2", b"foo/2/x", b"fop", b"g"]
    assert shard.keys(b"\x00", b"\x00") == [b"fo", b"foo", b"foo/1", b"foo/2", b"foo/2/x", b"fop", b"g"]


@pytest.mark.parametrize("range_end", [b"a", b"0", b"a\x00"[:1]])
def test_range_end_at_or_below_key_is_empty(data, range_end):
    r = data.range(b"a", range_end)
    assert (r.kvs, r.count) == ((), 0)


def test_binary_keys_sort_as_raw_bytes(shard):
    ks = [b"\x00", b"\x00\x00", b"\x00\x01", b"\x00\xff", b"\x01", b"a\x00", b"a", b"a\x00b", b"\xff", b"\xff\xff"]
    for k in ks:
        shard.put(k, k)
    assert shard.keys() == sorted(ks)
    assert shard.keys(b"a", b"a\x01") == [b"a", b"a\x00", b"a\x00b"]
    assert [kv.value for kv in shard.range(b"\x00", b"\x00").kvs] == sorted(ks)


def test_historical_reads(data):
    assert [(kv.key, kv.value) for kv in data.range(b"a", b"\x00", revision=1).kvs] == [(b"a", b"3")]
    assert [(kv.key, kv.value) for kv in data.range(b"a", b"\x00", revision=3).kvs] == [
        (b"a", b"3"),
        (b"b", b"1"),
        (b"c", b"2"),
    ]
    assert data.get(b"b", revision=6) == KeyValue(b"b", 2, 6, 2, b"5")
    assert data.get(b"a", revision=4) == KeyValue(b"a", 1, 4, 2, b"4")
    assert data.get(b"d", revision=4) is None
    r = data.range(b"a", b"\x00", revision=3, limit=2)
    assert (len(r.kvs), r.more, r.count) == (2, True, 3)


def test_historical_read_of_deleted_key(data):
    data.delete(b"b")  # revision 8
    assert data.get(b"b") is None
    assert data.get(b"b", revision=7) == KeyValue(b"b", 2, 7, 3, b"6")
    assert data.range(b"a", b"\x00", revision=8).count == 3


def test_future_revision(data):
    data.range(b"a", revision=7)
    with pytest.raises(FutureRevision, match="^etcdserver: mvcc: required revision is a future revision$"):
        data.range(b"a", revision=8)


def test_compacted_revision(data):
    data.ok(CompactionRequest(3))
    with pytest.raises(RevisionCompacted, match="^etcdserver: mvcc: required revision has been compacted$"):
        data.range(b"a", revision=2)
    assert [kv.value for kv in data.range(b"a", b"\x00", revision=3).kvs] == [b"3", b"1", b"2"]
    assert data.get(b"b", revision=6).value == b"5"


def test_many_slots_merge_in_key_order(shard):
    # 200 keys spread over all 16 slots come back in raw key order.
    ks = [f"k{i:03d}".encode() for i in range(200)]
    for k in reversed(ks):
        shard.put(k, k)
    assert shard.keys(b"k", b"l") == ks
    r = shard.range(b"k050", b"k150", limit=10)
    assert [kv.key for kv in r.kvs] == ks[50:60]
    assert (r.more, r.count) == (True, 100)


def test_hash_tag_prefix_reads_one_slot(shard):
    for i in range(5):
        shard.put(b"{user1}.f%d" % i)
        shard.put(b"{user2}.f%d" % i)
    assert shard.keys(b"{user1}.", b"{user1}/") == [b"{user1}.f%d" % i for i in range(5)]


def test_keys_only_sorted_by_value(data):
    r = data.range(b"a", b"\x00", keys_only=True, sort_order=D, sort_target=SortTarget.VALUE, limit=3)
    assert [(kv.key, kv.value) for kv in r.kvs] == [(b"b", b""), (b"a", b""), (b"c", b"")]
    assert (r.more, r.count) == (True, 4)


def test_negative_revision_reads_current(data):
    assert data.get(b"b", revision=-1).value == b"6"
    data.ok(CompactionRequest(2))
    assert data.get(b"b", revision=-1).value == b"6"
