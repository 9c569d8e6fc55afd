"""The storage layout: the key escaping keeps byte order and is prefix-free,
versions of a key are contiguous and newest first, bounds of etcd ranges are
exact, and every record round-trips (with bad ones refused)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shard import keys
from shard.errors import CodecError

USER_KEYS = st.binary(max_size=10) | st.lists(st.sampled_from([0, 1, 0xFF, 0x61]), max_size=6).map(bytes)
REVS = st.integers(0, keys.MAX_U64)


def _enc(k: bytes) -> bytes:
    return keys.escape(k) + keys.TERMINATOR


@given(a=USER_KEYS, b=USER_KEYS)
def test_escaping_preserves_order(a, b):
    assert (a < b) == (_enc(a) < _enc(b))
    assert (a == b) == (_enc(a) == _enc(b))
    assert keys.unescape(keys.escape(a)) == a


@given(a=USER_KEYS, b=USER_KEYS)
def test_encodings_are_prefix_free(a, b):
    if a != b:
        assert not _enc(b).startswith(_enc(a))


@given(a=USER_KEYS, b=USER_KEYS, ra=REVS, rb=REVS, slot=st.integers(0, 65535))
def test_mvcc_key_order_is_key_then_newest_first(a, b, ra, rb, slot):
    ka, kb = keys.mvcc_key(slot, a, ra), keys.mvcc_key(slot, b, rb)
    if a != b:
        assert (ka < kb) == (a < b)
    else:
        assert (ka < kb) == (ra > rb)


@given(k=USER_KEYS, rev=REVS, slot=st.integers(0, 65535))
def test_mvcc_key_roundtrip_and_helpers(k, rev, slot):
    sk = keys.mvcc_key(slot, k, rev)
    assert keys.parse_mvcc_key(sk) == (slot, k, rev)
    assert keys.revision_of(sk) == rev and keys.user_key_of(sk) == k
    assert keys.key_prefix(slot, k) <= sk < keys.key_end(slot, k)
    assert keys.key_end_of(sk) == keys.key_end(slot, k)
    assert keys.seek_key_of(sk, 5) == keys.mvcc_key(slot, k, 5)
    assert keys.data_prefix(slot) <= sk < keys.data_slot_end(slot)


@given(key=USER_KEYS, range_end=USER_KEYS, probe=USER_KEYS, rev=REVS)
def test_mvcc_bounds_hold_exactly_the_range(key, range_end, probe, rev):
    lo, hi = keys.mvcc_bounds(3, key, range_end)
    inside = lo <= keys.mvcc_key(3, probe, rev) < hi
    if not range_end:
        assert inside == (probe == key)
    elif range_end == b"\x00":
        assert inside == (probe >= key)
    else:
        assert inside == (key <= probe < range_end)


def test_slot_prefixes_nest_and_do_not_overlap():
    assert keys.data_slot_end(5) == keys.data_prefix(6)
    assert keys.data_slot_end(65535) == b"\x05"
    assert keys.rev_slot_end(65535) == b"\x06"
    assert keys.rev_key(2, 10, 1) < keys.rev_key(2, 10, 2) < keys.rev_key(2, 11, 0) < keys.rev_slot_end(2)
    assert keys.parse_rev_key(keys.rev_key(9, 123, 4)) == (9, 123, 4)
    assert keys.meta_prefix(1) < keys.state_key(1) < keys.slots_key(1) < keys.dedup_key(1, 0) < keys.meta_end(1)
    assert keys.router_of_dedup_key(keys.dedup_key(1, 77)) == 77
    assert keys.meta_end(1) <= keys.meta_prefix(2)
    for prefix in (keys.DATA_PREFIX, keys.REV_PREFIX, keys.META_PREFIX):
        assert prefix not in (b"\x01", b"\x03")  # the Raft log store's and RegisterMachine's


@pytest.mark.parametrize(
    "record",
    [
        keys.MvccRecord(1, 1, 0, b"v"),
        keys.MvccRecord(5, 9, -3, b"\x00" * 100),
        keys.MvccRecord(tombstone=True),
        keys.MvccRecord(7, 2, 1 << 62, b""),
    ],
)
def test_mvcc_record_roundtrip(record):
    raw = keys.encode_mvcc(record)
    assert keys.decode_mvcc(raw) == record
    assert keys.is_tombstone(raw) == record.tombstone


def test_meta_records_roundtrip():
    st_ = keys.ShardState(1, 2, 3, 4)
    assert keys.decode_state(keys.encode_state(st_)) == st_
    assert keys.decode_slots(keys.encode_slots(1024, ((0, 5), (9, 1024)))) == (1024, ((0, 5), (9, 1024)))
    assert keys.decode_dedup(keys.encode_dedup(9, b"outcome")) == (9, b"outcome")


@pytest.mark.parametrize(
    "decode,raw",
    [
        (keys.decode_mvcc, b"\x02" + b"\x00" * 30),
        (keys.decode_mvcc, b"\x01\x00"),
        (keys.decode_state, b"\x01" * 10),
        (keys.decode_slots, keys.encode_slots(4, ((0, 4),))[:-1]),
        (keys.decode_dedup, b"\x09" + b"\x00" * 8),
        (keys.parse_mvcc_key, b"\x04\x00\x01abc"),
        (keys.parse_rev_key, b"\x05\x00"),
    ],
)
def test_bad_records_are_refused(decode, raw):
    with pytest.raises(CodecError):
        decode(raw)
