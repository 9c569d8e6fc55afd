"""A shard's snapshot: its meta records and every record of the slots it owns,
as one versioned byte stream that can be produced and ingested in chunks.

    header   B version=1 | Q shard_id | Q applied | I slot_count | I n | n * (I lo | I hi)
    records  * (I key length | I value length | key | value)   storage keys, ascending per part

Records are the storage records themselves (shard/keys.py): the shard's meta
keys first, then for each owned slot range its MVCC run, then its revision
index run. ``iter_chunks`` cuts the stream at record boundaries, the header
alone in the first chunk, so the concatenation of the chunks is the
snapshot; a receiver can ``ingest`` them as they come.

Pure: reads go through a KvReader, writes to a WriteBatch.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shard import keys, slots
from shard.engine import scan
from shard.errors import CodecError

if TYPE_CHECKING:
    from shard.engine import KvReader, WriteBatch

FORMAT_VERSION = 1
DEFAULT_CHUNK_BYTES = 1 << 20
DEFAULT_INGEST_BATCH_BYTES = 4 << 20

_HEAD = struct.Struct(">BQQII")
_RANGE = struct.Struct(">II")
_REC = struct.Struct(">II")


@dataclass(frozen=True, slots=True)
class SnapshotHeader:
    shard_id: int
    applied: int
    slot_count: int
    ranges: slots.SlotRanges


def encode_header(h: SnapshotHeader) -> bytes:
    return _HEAD.pack(FORMAT_VERSION, h.shard_id, h.applied, h.slot_count, len(h.ranges)) + b"".join(
        _RANGE.pack(lo, hi) for lo, hi in h.ranges
    )


def decode_header(data: bytes) -> tuple[SnapshotHeader, int]:
    """The header and the offset where the records start."""
    if len(data) < _HEAD.size or data[0] != FORMAT_VERSION:
        raise CodecError("not a shard snapshot (bad header or version)")
    _, shard_id, applied, slot_count, n = _HEAD.unpack_from(data)
    end = _HEAD.size + n * _RANGE.size
    if len(data) < end:
        raise CodecError("snapshot header cut short")
    ranges = tuple(_RANGE.unpack_from(data, _HEAD.size + i * _RANGE.size) for i in range(n))
    return SnapshotHeader(shard_id, applied, slot_count, ranges), end


def slot_spans(ranges: slots.SlotRanges) -> Iterator[tuple[bytes, bytes]]:
    """The storage key ranges holding the records of the given slots."""
    for lo, hi in ranges:
        yield keys.data_prefix(lo), keys.data_slot_end(hi - 1)
        yield keys.rev_prefix(lo), keys.rev_slot_end(hi - 1)


def iter_records(reader: KvReader, shard_id: int, ranges: slots.SlotRanges) -> Iterator[tuple[bytes, bytes]]:
    """Every record of the shard: its meta, then its slots' data."""
    yield from scan(reader, keys.meta_prefix(shard_id), keys.meta_end(shard_id))
    for lo, hi in slot_spans(ranges):
        yield from scan(reader, lo, hi)


def iter_chunks(
    reader: KvReader, header: SnapshotHeader, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[bytes]:
    yield encode_header(header)
    buf: list[bytes] = []
    size = 0
    for k, v in iter_records(reader, header.shard_id, header.ranges):
        rec = _REC.pack(len(k), len(v)) + k + v
        buf.append(rec)
        size += len(rec)
        if size >= chunk_bytes:
            yield b"".join(buf)
            buf, size = [], 0
    if buf:
        yield b"".join(buf)


def iter_chunk_records(chunk: bytes, offset: int = 0) -> Iterator[tuple[bytes, bytes]]:
    """The records of one chunk (or of a whole snapshot from offset)."""
    off = offset
    n = len(chunk)
    while off < n:
        if off + _REC.size > n:
            raise CodecError("snapshot record cut short")
        klen, vlen = _REC.unpack_from(chunk, off)
        off += _REC.size
        if off + klen + vlen > n:
            raise CodecError("snapshot record cut short")
        yield bytes(chunk[off : off + klen]), bytes(chunk[off + klen : off + klen + vlen])
        off += klen + vlen


def clear(wb: WriteBatch, shard_id: int, ranges: slots.SlotRanges) -> None:
    """Delete everything a replica of the shard keeps for these slots."""
    wb.delete_range(keys.meta_prefix(shard_id), keys.meta_end(shard_id))
    for lo, hi in slot_spans(ranges):
        wb.delete_range(lo, hi)


def ingest(chunk: bytes, wb: WriteBatch, offset: int = 0) -> int:
    """Stage a chunk's records into wb; returns how many."""
    n = 0
    for k, v in iter_chunk_records(chunk, offset):
        wb.put(k, v)
        n += 1
    return n


class StreamDecoder:
    """Decodes a snapshot fed in pieces cut anywhere (as a transport or a
    spool file delivers it), holding at most one piece plus one partial
    record: ``feed`` returns the records completed by a piece; ``header`` is
    set once the header is in."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.header: SnapshotHeader | None = None

    def feed(self, piece: bytes) -> list[tuple[bytes, bytes]]:
        buf = self._buf
        buf += piece
        off = 0
        if self.header is None:
            if len(buf) < _HEAD.size:
                return []
            if buf[0] != FORMAT_VERSION:
                raise CodecError("not a shard snapshot (bad header or version)")
            n = _HEAD.unpack_from(buf)[4]
            if len(buf) < _HEAD.size + n * _RANGE.size:
                return []
            self.header, off = decode_header(bytes(buf[: _HEAD.size + n * _RANGE.size]))
        out: list[tuple[bytes, bytes]] = []
        size = len(buf)
        while off + _REC.size <= size:
            klen, vlen = _REC.unpack_from(buf, off)
            end = off + _REC.size + klen + vlen
            if end > size:
                break
            k0 = off + _REC.size
            out.append((bytes(buf[k0 : k0 + klen]), bytes(buf[k0 + klen : end])))
            off = end
        del buf[:off]
        return out

    def finish(self) -> SnapshotHeader:
        """The header, once the whole snapshot was fed (else CodecError)."""
        if self.header is None or self._buf:
            raise CodecError("snapshot cut short")
        return self.header
