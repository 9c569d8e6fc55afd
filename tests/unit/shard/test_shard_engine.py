"""The KvEngine seam: MemoryEngine and RocksEngine answer alike (cursor bounds,
seeks, batches, consistent snapshots), and StagedView reads exactly what
the engine will hold once its batch is written (a model-based property
test)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shard.engine import MemoryEngine, StagedView, scan

KEYS = st.binary(min_size=1, max_size=3)


def _cursor_walk(reader, lower: bytes, upper: bytes, seek: bytes) -> list[bytes]:
    c = reader.cursor(lower, upper)
    c.seek(seek)
    out = []
    while c.valid():
        out.append(c.key() + b"=" + c.value())
        c.next()
    return out


def test_engines_agree(engine):
    rng = random.Random(7)
    model = MemoryEngine()
    for _ in range(20):
        batches = [engine.new_batch(), model.new_batch()]
        for _ in range(rng.randint(1, 15)):
            k = bytes(rng.choice(b"ab\x00\xff") for _ in range(rng.randint(1, 3)))
            op = rng.random()
            for b in batches:
                if op < 0.6:
                    b.put(k, k * 2)
                elif op < 0.85:
                    b.delete(k)
                else:
                    b.delete_range(k, k + b"\x01")
        engine.write(batches[0])
        model.write(batches[1])
        for _ in range(10):
            lo = bytes(rng.choice(b"ab\x00\xff") for _ in range(rng.randint(0, 2)))
            hi = lo + bytes(rng.choice(b"ab\x00\xff") for _ in range(rng.randint(0, 2))) + b"\xff"
            seek = bytes(rng.choice(b"ab\x00\xff") for _ in range(rng.randint(0, 3)))
            assert _cursor_walk(engine, lo, hi, seek) == _cursor_walk(model, lo, hi, seek)
            assert engine.get(seek) == model.get(seek)
    assert list(scan(engine, b"", b"\xff\xff\xff\xff")) == list(scan(model, b"", b"\xff\xff\xff\xff"))


def test_cursor_bounds(engine):
    b = engine.new_batch()
    for k in (b"a", b"b", b"c", b"d"):
        b.put(k, b"")
    engine.write(b)
    c = engine.cursor(b"b", b"d")
    c.seek(b"")  # a seek below the lower bound lands on it
    assert c.valid() and c.key() == b"b"
    c.next()
    assert c.key() == b"c"
    c.next()
    assert not c.valid()  # the upper bound is exclusive
    c.seek(b"d")
    assert not c.valid()
    assert engine.get(b"zz") is None


def test_snapshot_is_consistent(engine):
    b = engine.new_batch()
    b.put(b"a", b"1")
    b.put(b"b", b"1")
    engine.write(b)
    snap = engine.snapshot()
    b = engine.new_batch()
    b.put(b"a", b"2")
    b.delete(b"b")
    b.put(b"c", b"2")
    engine.write(b)
    assert list(scan(snap, b"", b"\xff")) == [(b"a", b"1"), (b"b", b"1")]
    assert snap.get(b"a") == b"1" and snap.get(b"c") is None
    assert list(scan(engine, b"", b"\xff")) == [(b"a", b"2"), (b"c", b"2")]


def test_open_cursor_does_not_see_later_writes(engine):
    b = engine.new_batch()
    b.put(b"a", b"1")
    b.put(b"c", b"1")
    engine.write(b)
    c = engine.cursor(b"", b"\xff")
    c.seek(b"")
    b = engine.new_batch()
    b.put(b"b", b"1")
    engine.write(b)
    c.next()
    assert c.key() == b"c"


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), KEYS, st.binary(max_size=2)),
        st.tuples(st.just("delete"), KEYS, st.just(b"")),
        st.tuples(st.just("delete_range"), KEYS, KEYS),
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(base=st.dictionaries(KEYS, st.binary(max_size=2), max_size=10), ops=OPS, probes=st.lists(KEYS, min_size=1, max_size=5))
def test_staged_view_reads_what_the_batch_will_write(base, ops, probes):
    engine = MemoryEngine()
    b = engine.new_batch()
    for k, v in base.items():
        b.put(k, v)
    engine.write(b)
    model = dict(base)
    wb = engine.new_batch()
    view = StagedView(engine, wb)
    for op, a, x in ops:
        if op == "put":
            view.put(a, x)
            model[a] = x
        elif op == "delete":
            view.delete(a)
            model.pop(a, None)
        else:
            view.delete_range(a, x)
            for k in [k for k in model if a <= k < x]:
                del model[k]
        for p in probes:
            assert view.get(p) == model.get(p)
            lo, hi = min(p, probes[0]), max(p, probes[0]) + b"\x00"
            expected = sorted((k, v) for k, v in model.items() if lo <= k < hi)
            assert list(scan(view, lo, hi)) == expected
            c = view.cursor(b"", b"\xff\xff\xff\xff")
            c.seek(p)
            first = min((k for k in model if k >= p), default=None)
            assert (c.key() if c.valid() else None) == first
    frozen = view.freeze()
    engine.write(wb)
    assert list(scan(engine, b"", b"\xff\xff\xff\xff")) == sorted(model.items())
    assert list(scan(frozen, b"", b"\xff\xff\xff\xff")) == sorted(model.items())
    with pytest.raises(TypeError):
        frozen.put(b"x", b"y")
