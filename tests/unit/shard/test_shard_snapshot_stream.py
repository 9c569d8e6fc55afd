"""Streamed snapshots: produced lazily from a pinned engine view, decoded
from pieces cut anywhere, and ingested in bounded batches with the shard's
STATE record last (so an interrupted ingest leaves applied 0)."""

from __future__ import annotations

import pytest

from shard import keys, snapshot
from shard.engine import MemoryEngine
from shard.errors import CodecError
from shard.statemachine import ShardStateMachine
from shard.types import PutRequest, Split


def _fill(shard, n: int = 60) -> None:
    for i in range(n):
        shard.put(b"key%d" % i, b"v" * (i * 7 % 300))
    shard.delete(b"key3")
    shard.apply(Split(9, ((12, 16),)))


def _cut(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_stream_equals_the_snapshot_and_is_pinned(shard):
    _fill(shard)
    whole = shard.sm.snapshot()
    index, chunks = shard.sm.snapshot_stream(chunk_bytes=512)
    assert index == shard.sm.applied_index()
    shard.put(b"later", b"x")  # applied after the stream was taken: not in it
    assert b"".join(chunks) == whole


@pytest.mark.parametrize("piece", [1, 7, 100, 4096, 1 << 20])
def test_decoder_any_cut(shard, piece):
    _fill(shard)
    whole = shard.sm.snapshot()
    dec = snapshot.StreamDecoder()
    records = [r for p in _cut(whole, piece) for r in dec.feed(p)]
    header, offset = snapshot.decode_header(whole)
    assert dec.finish() == header
    assert records == list(snapshot.iter_chunk_records(whole, offset))


def test_decoder_cut_short(shard):
    _fill(shard)
    whole = shard.sm.snapshot()
    dec = snapshot.StreamDecoder()
    dec.feed(whole[:-3])
    with pytest.raises(CodecError):
        dec.finish()


def test_restore_chunks_matches_restore(shard):
    _fill(shard)
    whole = shard.sm.snapshot()
    index = shard.sm.applied_index()
    a_engine, b_engine = MemoryEngine(), MemoryEngine()
    a = ShardStateMachine(a_engine, shard.sm.shard_id, 16)
    b = ShardStateMachine(b_engine, shard.sm.shard_id, 16)
    wb = a_engine.new_batch()
    a.restore(whole, index, wb)
    a_engine.write(wb)
    wb = b_engine.new_batch()
    b.restore_chunks(_cut(whole, 333), index, wb, batch_bytes=1000)
    b_engine.write(wb)
    assert b.snapshot() == a.snapshot() == whole
    assert (b.applied_index(), b.revision, b.epoch, b.slot_ranges) == (index, a.revision, a.epoch, a.slot_ranges)
    reopened = ShardStateMachine(b_engine, shard.sm.shard_id)
    assert reopened.snapshot() == whole


def test_interrupted_restore_leaves_applied_zero(shard):
    _fill(shard)
    whole = shard.sm.snapshot()
    index = shard.sm.applied_index()
    engine = MemoryEngine()
    sm = ShardStateMachine(engine, shard.sm.shard_id, 16)
    sm_wb = engine.new_batch()
    sm.apply([], sm_wb)
    sm.on_applied_index(5, sm_wb)
    engine.write(sm_wb)

    def pieces():
        yield from _cut(whole, 200)[:-2]
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        sm.restore_chunks(pieces(), index, engine.new_batch(), batch_bytes=500)
    assert engine.get(keys.state_key(shard.sm.shard_id)) is None
    assert ShardStateMachine(engine, shard.sm.shard_id).applied_index() == 0
    # ... and a second restore completes it
    again = ShardStateMachine(engine, shard.sm.shard_id)
    wb = engine.new_batch()
    again.restore_chunks(_cut(whole, 4096), index, wb)
    engine.write(wb)
    assert again.snapshot() == whole and again.applied_index() == index


def test_restore_chunks_refuses_foreign_snapshot(shard):
    shard.ok(PutRequest(b"a", b"b"))
    whole = shard.sm.snapshot()
    engine = MemoryEngine()
    other = ShardStateMachine(engine, 99, 16)
    with pytest.raises(CodecError):
        other.restore_chunks([whole], shard.sm.applied_index(), engine.new_batch())
    with pytest.raises(CodecError):
        ShardStateMachine(engine, shard.sm.shard_id, 16).restore_chunks([whole], 12345, engine.new_batch())
