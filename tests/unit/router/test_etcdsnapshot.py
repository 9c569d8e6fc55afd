"""router/etcdsnapshot.py: etcd's layout inside the bbolt file (revision keys,
sub-revisions, meta compaction marks, leases, the empty buckets), the state a
file holds at its revision (history and tombstones as etcd writes them), the
figures `etcdctl snapshot status` prints, and the SHA-256 trailer."""

from __future__ import annotations

import hashlib

import pytest

from flotillapb.etcd.leasepb import lease_pb2
from flotillapb.etcd.mvccpb import kv_pb2 as mvccpb
from router import bbolt
from router import etcdsnapshot as es


def test_revision_keys() -> None:
    assert es.rev_bytes(1, 2) == b"\x00" * 7 + b"\x01_" + b"\x00" * 7 + b"\x02"
    assert es.rev_bytes(5, 0, tombstone=True)[-1:] == b"t"
    assert es.parse_rev(es.rev_bytes(2**53 - 1, 7)) == (2**53 - 1, 7, False)
    assert es.parse_rev(es.rev_bytes(9, 1, True)) == (9, 1, True)
    for bad in (b"", b"x" * 17, es.rev_bytes(1) + b"x"):
        with pytest.raises(es.SnapshotError):
            es.parse_rev(bad)


def test_key_items_number_subrevisions() -> None:
    items = list(es.key_items([(5, b"a"), (5, b"b"), (7, b"c"), (9, b"d"), (9, b"e"), (9, b"f")]))
    assert [es.parse_rev(k)[:2] for k, _ in items] == [(5, 0), (5, 1), (7, 0), (9, 0), (9, 1), (9, 2)]
    with pytest.raises(ValueError, match="order"):
        list(es.key_items([(5, b"a"), (4, b"b")]))


def test_crc32c_known_value() -> None:
    assert es.crc32c(b"123456789") == 0xE3069283
    assert es.crc32c(b"56789", es.crc32c(b"1234")) == 0xE3069283


def _kv(key: bytes, value: bytes, create: int, mod: int, version: int, lease: int = 0) -> mvccpb.KeyValue:
    return mvccpb.KeyValue(key=key, value=value, create_revision=create, mod_revision=mod, version=version, lease=lease)


def test_backup_round_trip_and_layout() -> None:
    kvs = [_kv(b"a", b"1", 10, 30, 3, lease=7), _kv(b"b", b"", 20, 20, 1), _kv(b"c", b"x" * 9000, 30, 30, 1)]
    data = es.snapshot_bytes(100, kvs, [es.LeaseInfo(7, 60, 45)])
    assert len(data) % 512 == 32 and data[-32:] == hashlib.sha256(data[:-32]).digest()
    r = es.open_db(data)
    assert r.root().names() == sorted([*es.EMPTY_BUCKETS, b"key", b"lease", b"meta"])
    for name in es.EMPTY_BUCKETS:
        b = r.bucket(name)
        assert b is not None and list(b.items()) == []
    meta = r.bucket(b"meta")
    assert meta is not None
    assert dict(meta.items()) == {
        b"consistent_index": (1).to_bytes(8, "big"),
        b"term": (1).to_bytes(8, "big"),
        b"finishedCompactRev": es.rev_bytes(100),
        b"scheduledCompactRev": es.rev_bytes(100),
    }
    key = r.bucket(b"key")
    assert key is not None
    assert [es.parse_rev(k) for k, _ in key.items()] == [(20, 0, False), (30, 0, False), (30, 1, False)]
    lease = r.bucket(b"lease")
    assert lease is not None
    [(lk, lv)] = list(lease.items())
    assert lk == (7).to_bytes(8, "big") and lease_pb2.Lease.FromString(lv) == lease_pb2.Lease(ID=7, TTL=60, RemainingTTL=45)
    state = es.read_state(r)
    assert state == es.SnapshotState(100, 100, tuple(kvs), (es.LeaseInfo(7, 60, 45),))
    st = es.status(r)
    assert (st.revision, st.total_key, st.total_size) == (30, 3 + 1 + 4, r.size)


def test_state_of_an_etcd_history() -> None:
    """etcd's key bucket holds every change: puts, re-puts, deletes (tombstones), re-creations."""
    changes = [
        (es.rev_bytes(2), _kv(b"a", b"1", 2, 2, 1)),
        (es.rev_bytes(3), _kv(b"b", b"1", 3, 3, 1)),
        (es.rev_bytes(4), _kv(b"a", b"2", 2, 4, 2)),
        (es.rev_bytes(5, 0, True), mvccpb.KeyValue(key=b"b")),
        (es.rev_bytes(6), _kv(b"c", b"1", 6, 6, 1)),
        (es.rev_bytes(6, 1), _kv(b"d", b"1", 6, 6, 1, lease=9)),
        (es.rev_bytes(7, 0, True), mvccpb.KeyValue(key=b"c")),
        (es.rev_bytes(8), _kv(b"c", b"again", 8, 8, 1)),
    ]
    db = bbolt.write_db(
        [
            (b"key", [(k, kv.SerializeToString()) for k, kv in changes]),
            (b"lease", [((9).to_bytes(8, "big"), lease_pb2.Lease(ID=9, TTL=30).SerializeToString())]),
            (b"meta", [(b"consistent_index", (12).to_bytes(8, "big"))]),
        ]
    )
    state = es.read_state(es.open_db(db))  # no trailer: a db copied from a data directory
    assert state.revision == 8 and state.compact_revision == 0
    assert [kv.key for kv in state.kvs] == [b"a", b"c", b"d"]
    assert state.kvs[0] == _kv(b"a", b"2", 2, 4, 2)
    assert state.kvs[1] == _kv(b"c", b"again", 8, 8, 1)
    assert state.leases == (es.LeaseInfo(9, 30, 0),)


def test_bad_files() -> None:
    good = es.snapshot_bytes(50, [_kv(b"k%d" % i, b"v" * 100, 10 + i, 10 + i, 1) for i in range(200)])
    with pytest.raises(es.SnapshotError, match="SHA-256 mismatch"):
        es.open_db(good[:5000] + bytes([good[5000] ^ 1]) + good[5001:])
    with pytest.raises(es.SnapshotError, match="SHA-256 mismatch"):
        es.open_db(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(es.SnapshotError, match="truncated"):
        es.open_db(good[: len(good) - 32 - 4096])  # a page short, no trailer left
    with pytest.raises(es.SnapshotError, match="not a bbolt database"):
        es.open_db(b"hello world\n" * 1000)
    with pytest.raises(es.SnapshotError, match="no key or meta bucket"):
        es.open_db(bbolt.write_db([(b"other", [(b"a", b"b")])]))
