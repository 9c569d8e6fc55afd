"""Snapshots of a shard's state machine and their restore: the part of
ShardStateMachine (shard/statemachine.py, which mixes this in) that reads
the whole state out in chunks and replaces it from one (shard/snapshot.py
holds the format). A restore replaces the data of the slots the snapshot
brings, and of the slots this replica held that no other shard hosted here
holds; the key index is cleared and reloads when next asked.

Pure, as the state machine: the engine is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from shard import keys, slots
from shard import snapshot as snap
from shard.errors import CodecError

if TYPE_CHECKING:
    from shard.engine import KvEngine, KvReader, StagedView, WriteBatch
    from shard.keyindex import KeyIndex
    from shard.meta import ShardMeta


class ShardSnapshots:
    __slots__ = ()

    # The state machine's state these methods read and replace (set by
    # ShardStateMachine.__init__).
    shard_id: int
    other_slots: Callable[[], slots.SlotRanges] | None
    _engine: KvEngine
    _staged: StagedView | None
    _meta: ShardMeta
    _index: KeyIndex

    def _stage(self, wb: WriteBatch) -> StagedView:
        raise NotImplementedError  # ShardStateMachine's

    def _load_state(self, reader: KvReader) -> None:
        raise NotImplementedError  # ShardStateMachine's

    def snapshot_header(self) -> snap.SnapshotHeader:
        return snap.SnapshotHeader(self.shard_id, self._meta.applied, self._meta.slot_count, self._meta.ranges)

    def snapshot_chunks(self, chunk_bytes: int = snap.DEFAULT_CHUNK_BYTES) -> Iterator[bytes]:
        """The snapshot at applied_index() in chunks (read lazily: consume it
        before the next apply, or pass a pinned engine snapshot to
        snapshot.iter_chunks instead)."""
        return snap.iter_chunks(self._staged or self._engine, self.snapshot_header(), chunk_bytes)

    def snapshot(self) -> bytes:
        return b"".join(self.snapshot_chunks())

    def snapshot_stream(self, chunk_bytes: int = snap.DEFAULT_CHUNK_BYTES) -> tuple[int, Iterator[bytes]]:
        """(applied index, the snapshot at it in chunks), read lazily from a
        pinned engine view: later applies do not change what it yields, and
        no more than a chunk is held at a time. Call it only when everything
        applied is written to the engine (the runtime does, between rounds)."""
        return self._meta.applied, snap.iter_chunks(self._engine.snapshot(), self.snapshot_header(), chunk_bytes)

    def restore_chunks(
        self, chunks: Iterable[bytes], index: int, wb: WriteBatch, batch_bytes: int = snap.DEFAULT_INGEST_BATCH_BYTES
    ) -> None:
        """Replace the state by a snapshot read in pieces, with bounded
        memory: records go to the engine in batches of about batch_bytes
        (written directly, ahead of wb), and the shard's STATE record, which
        says what is applied, last, into wb. A crash in between leaves the
        shard with no state record (applied 0), so the runtime restores
        again from the log store's snapshot."""
        self._index.clear()  # the slots' data is replaced; reloaded when next asked
        dec = snap.StreamDecoder()
        state_key = keys.state_key(self.shard_id)
        state_raw: bytes | None = None
        batch = self._engine.new_batch()
        staged = 0
        cleared = False
        for piece in chunks:
            records = dec.feed(piece)
            if dec.header is not None and not cleared:
                h = dec.header
                if h.shard_id != self.shard_id:
                    raise CodecError(f"snapshot of shard {h.shard_id} given to shard {self.shard_id}")
                if h.applied != index:
                    raise CodecError(f"snapshot data at {h.applied} does not match metadata index {index}")
                snap.clear(batch, self.shard_id, self._slots_to_clear(h.ranges))
                cleared = True
            for k, v in records:
                if k == state_key:
                    state_raw = v
                    continue
                batch.put(k, v)
                staged += len(k) + len(v)
            if staged >= batch_bytes:
                self._write_ingest_batch(batch)
                batch, staged = self._engine.new_batch(), 0
        header = dec.finish()
        self._write_ingest_batch(batch)
        view = self._stage(wb)
        if state_raw is not None:
            view.put(state_key, state_raw)
        self._adopt(header, index, view)

    def _slots_to_clear(self, incoming: slots.SlotRanges) -> slots.SlotRanges:
        """What a snapshot restore clears: every slot the snapshot brings,
        and every slot this replica held that no other shard hosted here
        holds. (A replica that missed a split, restored from a snapshot of
        its shard taken after it, must not wipe the slots the split's new
        shard already holds on this node, having been created from the map.)"""
        held = self._meta.ranges
        if self.other_slots is not None:
            held = slots.subtract(held, slots.normalize(self.other_slots()))
        return slots.merge(held, incoming)

    def _write_ingest_batch(self, batch: WriteBatch) -> None:
        self._engine.write(batch)
        flush = getattr(self._engine, "flush_memtable", None)
        if flush is not None:  # keep a big ingest out of memory (RocksDB memtables)
            flush()

    def restore(self, data: bytes, index: int, wb: WriteBatch) -> None:
        header, offset = snap.decode_header(data)
        if header.shard_id != self.shard_id:
            raise CodecError(f"snapshot of shard {header.shard_id} given to shard {self.shard_id}")
        if header.applied != index:
            raise CodecError(f"snapshot data at {header.applied} does not match metadata index {index}")
        self._index.clear()  # the slots' data is replaced; reloaded when next asked
        view = self._stage(wb)
        snap.clear(view, self.shard_id, self._slots_to_clear(header.ranges))
        snap.ingest(data, view, offset)
        self._adopt(header, index, view)

    def _adopt(self, header: snap.SnapshotHeader, index: int, view: StagedView) -> None:
        """Take on the restored state: the snapshot's slots, the shard's
        state record as restored into view, applied at index."""
        self._meta.slot_count = header.slot_count
        self._meta.ranges = slots.normalize(header.ranges)
        self._load_state(view)
        self._meta.applied = index
        self._meta.slots_dirty = True
        self._meta.write(view)
