"""Slot hashing (Redis Cluster hash tags, examples from the Redis cluster
specification) and slot range arithmetic."""

from __future__ import annotations

import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st

from shard import slots


@pytest.mark.parametrize(
    "key,hashed",
    [
        (b"{user1000}.following", b"user1000"),
        (b"{user1000}.followers", b"user1000"),
        (b"foo{}{bar}", b"foo{}{bar}"),  # empty first tag: the whole key
        (b"foo{{bar}}zap", b"{bar"),  # first '{', then the first '}' after it
        (b"foo{bar}{zap}", b"bar"),  # only the first tag counts
        (b"plain", b"plain"),
        (b"", b""),
        (b"{", b"{"),
        (b"}{", b"}{"),
        (b"a}b{c", b"a}b{c"),
        (b"a{b", b"a{b"),
        (b"{}", b"{}"),
        (b"{a}", b"a"),
        (b"x{\x00\xff}y", b"\x00\xff"),
    ],
)
def test_hash_key(key, hashed):
    assert slots.hash_key(key) == hashed


def test_hash_tags_share_a_slot():
    assert slots.slot_of(b"{user1000}.following", 1024) == slots.slot_of(b"{user1000}.followers", 1024)
    assert slots.slot_of(b"{user1000}.following", 1024) == slots.slot_of(b"user1000", 1024)


def test_slot_is_xxh3_of_hash_key_mod_slots():
    for key in (b"foo", b"{tag}rest", b"\x00\x01"):
        for n in (1, 16, 1024, 65536):
            assert slots.slot_of(key, n) == xxhash.xxh3_64_intdigest(slots.hash_key(key)) % n
    with pytest.raises(ValueError):
        slots.slot_of(b"k", 0)
    with pytest.raises(ValueError):
        slots.slot_of(b"k", 65537)


TAG_KEYS = st.binary(max_size=12)


@given(prefix=st.binary(max_size=4), tag=st.binary(min_size=1, max_size=4).filter(lambda t: b"}" not in t), tail=st.binary(max_size=6), extra=st.binary(max_size=6))
def test_single_slot_holds_for_every_key_of_the_range(prefix, tag, tail, extra):
    if b"{" in prefix:
        return
    start = prefix + b"{" + tag + b"}" + tail
    end = start + b"\xff"  # a range below start+0xff: every key starts with start... or is between
    one = slots.single_slot(start, end, 1024)
    assert one == slots.slot_of(start, 1024)
    key = start + extra
    if start <= key < end:
        assert slots.slot_of(key, 1024) == one


@pytest.mark.parametrize(
    "key,range_end,decided",
    [
        (b"{u1}.a", b"", True),  # a single key always
        (b"plain", b"", True),
        (b"{u1}.", b"{u1}/", True),  # a prefix inside a tag
        (b"{u1}", b"{u2}", False),  # the tag itself differs
        (b"a", b"b", False),
        (b"{u1}.a", b"\x00", False),  # from-key: any slot
        (b"{", b"{\x00", False),
        (b"x{}", b"x{}\xff", False),  # an empty tag decides nothing
    ],
)
def test_single_slot(key, range_end, decided):
    assert (slots.single_slot(key, range_end, 64) is not None) is decided


def test_range_arithmetic():
    assert slots.normalize([(5, 8), (0, 2), (2, 3), (7, 10), (12, 12)]) == ((0, 3), (5, 10))
    r = ((0, 3), (5, 10))
    assert [s for s in range(12) if slots.contains(r, s)] == [0, 1, 2, 5, 6, 7, 8, 9]
    assert slots.count(r) == 8
    assert list(slots.iter_slots(((1, 3),))) == [1, 2]
    assert slots.merge(r, [(3, 5)]) == ((0, 10),)
    assert slots.subtract(r, ((1, 6),)) == ((0, 1), (6, 10))
    assert slots.intersect(r, ((2, 7),)) == ((2, 3), (5, 7))
    assert slots.is_subset(((6, 8),), r) and not slots.is_subset(((2, 6),), r)
    assert slots.split(r, 6) == (((0, 3), (5, 6)), ((6, 10),))
    assert slots.split_half(((0, 1024),)) == (((0, 512),), ((512, 1024),))
    assert slots.split_half(r) == (((0, 3), (5, 6)), ((6, 10),))
    assert slots.full(16) == ((0, 16),)
    with pytest.raises(ValueError):
        slots.split_half(((4, 5),))
    assert not slots.contains((), 0)


RANGES = st.lists(st.tuples(st.integers(0, 64), st.integers(0, 64)), max_size=6).map(slots.normalize)


@given(a=RANGES, b=RANGES)
def test_range_set_algebra(a, b):
    sa, sb = set(slots.iter_slots(a)), set(slots.iter_slots(b))
    assert set(slots.iter_slots(slots.merge(a, b))) == sa | sb
    assert set(slots.iter_slots(slots.subtract(a, b))) == sa - sb
    assert set(slots.iter_slots(slots.intersect(a, b))) == sa & sb
    assert slots.is_subset(a, b) == (sa <= sb)
    assert all(slots.contains(a, s) == (s in sa) for s in range(70))
    lo, hi = slots.split(a, 32)
    assert set(slots.iter_slots(lo)) == {s for s in sa if s < 32}
    assert set(slots.iter_slots(hi)) == {s for s in sa if s >= 32}
    assert slots.normalize(a) == a


TAGGY = st.lists(st.sampled_from(list(b"{}ab\x00\xff")), max_size=8).map(bytes)


@given(key=TAGGY, range_end=TAGGY, probe=TAGGY)
def test_single_slot_is_never_wrong(key, range_end, probe):
    one = slots.single_slot(key, range_end, 1 << 16)
    if one is None:
        return
    in_range = probe == key if not range_end else key <= probe < range_end
    if in_range:
        assert slots.slot_of(probe, 1 << 16) == one
