"""router/bbolt.py: files written by the writer read back item for item by the
reader (one page, many pages with branch levels, values spanning overflow
pages, inline and paged buckets, sub-buckets), pass the reader's tx.Check, and
have the layout bbolt defines (meta pages, checksums, page ids); damaged files
are refused with BoltError."""

from __future__ import annotations

import random
import struct

import pytest

from router import bbolt as b


def _db(buckets: dict[bytes, list[tuple[bytes, bytes]]], page_size: int = b.PAGE_SIZE) -> bytes:
    return b.write_db(sorted(buckets.items()), page_size)


def _read_all(data: bytes) -> dict[bytes, list[tuple[bytes, bytes]]]:
    r = b.BoltReader(data)
    assert r.check() == []
    root = r.root()
    out = {}
    for name in root.names():
        bucket = root.bucket(name)
        assert bucket is not None
        out[name] = list(bucket.items())
    return out


def _pages(data: bytes, page_size: int = b.PAGE_SIZE) -> dict[int, tuple[int, int, int]]:
    """page id -> (flags, count, overflow) of every page header that starts a node."""
    out = {}
    pgid = 0
    while pgid * page_size < len(data):
        pid, flags, count, overflow = b.PAGE_HEADER.unpack_from(data, pgid * page_size)
        assert pid == pgid
        out[pgid] = (flags, count, overflow)
        pgid += overflow + 1
    return out


def test_fnv64a_known_values() -> None:
    assert b.fnv64a(b"") == 0xCBF29CE484222325
    assert b.fnv64a(b"a") == 0xAF63DC4C8601EC8C
    assert b.fnv64a(b"foobar") == 0x85944171F73967E8


def test_small_round_trip_and_layout() -> None:
    buckets = {b"alpha": [(b"a", b"1"), (b"b", b"")], b"empty": [], b"z": [(b"k", b"v" * 100)]}
    data = _db(buckets)
    assert len(data) % b.PAGE_SIZE == 0
    assert _read_all(data) == buckets
    meta = struct.unpack_from("<IIIIQQQQQQ", data, 16)
    magic, version, page_size, flags, root, seq, freelist, hwm, txid, checksum = meta
    assert (magic, version, page_size, flags) == (0xED0CDAED, 2, 4096, 0)
    assert checksum == b.fnv64a(data[16 : 16 + 56])  # the meta before its checksum
    assert hwm * page_size == len(data)
    pages = _pages(data)
    assert pages[0] == (b.META_PAGE, 0, 0) and pages[1] == (b.META_PAGE, 0, 0)
    assert pages[root][0] == b.LEAF_PAGE and pages[freelist] == (b.FREELIST_PAGE, 0, 0)
    # small buckets are inline: only meta, root leaf and freelist pages
    assert sorted(pages) == [0, 1, 2, 3]
    r = b.BoltReader(data)
    for name in buckets:
        bucket = r.bucket(name)
        assert bucket is not None and bucket.inline is not None and bucket.root == 0
    assert r.freelist() == []


def test_many_keys_need_branch_pages_and_read_back_in_order() -> None:
    rng = random.Random(7)
    keys = sorted({rng.randbytes(rng.randint(1, 40)) for _ in range(20000)})
    items = [(k, rng.randbytes(rng.randint(0, 60))) for k in keys]
    data = _db({b"key": items, b"meta": [(b"x", b"y")]})
    assert _read_all(data)[b"key"] == items
    pages = _pages(data)
    flags = [f for f, _, _ in pages.values()]
    assert flags.count(b.BRANCH_PAGE) >= 2  # a root branch over branches
    r = b.BoltReader(data)
    bucket = r.bucket(b"key")
    assert bucket is not None and pages[bucket.root][0] == b.BRANCH_PAGE


def test_large_values_span_overflow_pages() -> None:
    items = [(b"a", b"x" * 10), (b"big", bytes(range(256)) * 100), (b"c", b"y"), (b"huge", b"z" * 300_000)]
    data = _db({b"key": items})
    assert _read_all(data)[b"key"] == items
    overflowing = [(pgid, o) for pgid, (f, _, o) in _pages(data).items() if o]
    # each big value alone on a leaf: header 16 + element 16 + key + value bytes, in whole pages
    assert sorted(o for _, o in overflowing) == [-(-(32 + 3 + 25_600) // 4096) - 1, -(-(32 + 4 + 300_000) // 4096) - 1]


def test_other_page_sizes() -> None:
    items = [(b"%06d" % i, b"v" * (i % 100)) for i in range(3000)]
    for size in (1024, 16384):
        data = _db({b"key": items}, size)
        assert len(data) % size == 0
        assert _read_all(data)[b"key"] == items


def test_sub_buckets_and_sequence() -> None:
    body: list[bytes] = []
    w = b.BoltWriter(body.append)
    inner = w.bucket([(b"x", b"1")], sequence=9)
    big_inner = w.bucket([(b"%05d" % i, b"v" * 50) for i in range(500)])
    outer = w.bucket([(b"a", b"plain"), (b"big", big_inner), (b"in", inner)])
    head, tail = w.finish([(b"outer", outer)])
    data = head + b"".join(body) + tail
    r = b.BoltReader(data)
    assert r.check() == []
    o = r.bucket(b"outer")
    assert o is not None and o.names() == [b"big", b"in"] and list(o.items()) == [(b"a", b"plain")]
    i = o.bucket(b"in")
    assert i is not None and i.sequence == 9 and i.inline is not None and list(i.items()) == [(b"x", b"1")]
    bi = o.bucket(b"big")
    assert bi is not None and bi.inline is None and len(list(bi.items())) == 500


def test_writer_refuses_unsorted_or_empty_keys() -> None:
    w = b.BoltWriter(lambda _: None)
    with pytest.raises(ValueError, match="sorted"):
        w.bucket([(b"b", b""), (b"a", b"")])
    with pytest.raises(ValueError, match="sorted"):
        w.bucket([(b"a", b""), (b"a", b"")])
    with pytest.raises(ValueError, match="empty"):
        w.bucket([(b"", b"")])


def _good() -> bytes:
    return _db({b"key": [(b"%05d" % i, b"v" * 30) for i in range(2000)], b"meta": [(b"a", b"b")]})


def test_not_a_database() -> None:
    for data in (b"", b"hello" * 2000, bytes(8192)):
        with pytest.raises(b.BoltError, match="not a bbolt database"):
            b.BoltReader(data)


def test_truncated() -> None:
    data = _good()
    with pytest.raises(b.BoltError, match="truncated"):
        b.BoltReader(data[: len(data) - 4096])


def test_one_damaged_meta_page_falls_back_to_the_other() -> None:
    data = bytearray(_good())
    data[20] ^= 0xFF  # page 0's meta: the checksum no longer matches
    r = b.BoltReader(bytes(data))
    assert r.check() == []
    data[4096 + 20] ^= 0xFF  # and page 1's
    with pytest.raises(b.BoltError, match="checksum|magic|version"):
        b.BoltReader(bytes(data))


def test_check_finds_damaged_pages() -> None:
    data = bytearray(_good())
    r = b.BoltReader(bytes(data))
    bucket = r.bucket(b"key")
    assert bucket is not None and bucket.root
    # A leaf page overwritten with a page header of another type.
    victim = 3
    struct.pack_into("<QHHI", data, victim * 4096, victim, 0x40, 0, 0)
    errors = b.BoltReader(bytes(data)).check()
    assert any("invalid type" in e for e in errors)
    # A page whose id field lies.
    data = bytearray(_good())
    struct.pack_into("<Q", data, victim * 4096, 99)
    assert any("says it is page 99" in e for e in b.BoltReader(bytes(data)).check())
    # An extra page nothing references nor frees.
    good = _good()
    hwm = len(good) // 4096
    extended = bytearray(good + bytes(4096))
    for meta_page in (0, 1):
        off = meta_page * 4096 + 16
        struct.pack_into("<Q", extended, off + 40, hwm + 1)
        struct.pack_into("<Q", extended, off + 56, b.fnv64a(bytes(extended[off : off + 56])))
    assert "page %d: unreachable unfreed" % hwm in b.BoltReader(bytes(extended)).check()


def test_unsynced_freelist_counts_unreachable_pages_as_free() -> None:
    """etcd opens bbolt with NoFreelistSync: meta.freelist is 2^64-1 and the
    pages no bucket reaches are the free ones (a real etcd snapshot has some)."""
    good = _good()
    hwm = len(good) // 4096
    data = bytearray(good + bytes(4096))
    for meta_page in (0, 1):
        off = meta_page * 4096 + 16
        struct.pack_into("<QQ", data, off + 32, b.NO_FREELIST, hwm + 1)
        struct.pack_into("<Q", data, off + 56, b.fnv64a(bytes(data[off : off + 56])))
    r = b.BoltReader(bytes(data))
    assert r.freelist() == [] and r.check() == []
    assert len(list(r.bucket(b"key").items())) == 2000  # type: ignore[union-attr]
