"""Conversion between the core's Message dataclasses and the wire (flotillapb.raft).

Pure functions and two small stateful helpers, no I/O:

- ``message_to_pb`` / ``message_from_pb``: one Message, any type. Snapshot
  *data* is never part of a wire Message: only the metadata travels, and
  ``message_from_pb`` returns a Snapshot with empty data.
- ``encode_batch`` / ``decode_batch``: everything one node has for another,
  for all groups. Heartbeats and heartbeat responses that use only heartbeat
  fields become compact ``Heartbeat`` records; the batch's ``runs`` keep the
  exact order, so ``decode_batch(encode_batch(f, t, items)) == items``.
- ``SnapshotChunker`` / ``SnapshotAssembler``: a MSG_SNAP message and its data
  as a sequence of ``SnapshotChunk``, and back.

Anything a peer can get wrong raises ``CodecError`` (raft.core.errors); the caller drops the
stream or the snapshot and the process carries on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Iterable, Sequence
from typing import BinaryIO, cast

from flotillapb import raft_pb2 as pb
from raft.core.errors import CodecError
from raft.transport.base import spool_token
from raft.core.types import (
    LOCAL_MESSAGES,
    ConfState,
    Entry,
    EntryKind,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "CodecError",
    "SnapshotAssembler",
    "SnapshotChunker",
    "decode_batch",
    "encode_batch",
    "is_compact_heartbeat",
    "message_from_pb",
    "message_to_pb",
]

DEFAULT_CHUNK_SIZE = 1 << 20
"""Bytes of snapshot data per SnapshotChunk (1 MiB)."""

_HEARTBEAT_TYPES = (MessageType.HEARTBEAT, MessageType.HEARTBEAT_RESP)
# Dict lookups, not MessageType(x)/EntryKind(x): an Enum call per entry was
# a third of decoding an append.
_MESSAGE_TYPES = {int(t): t for t in MessageType}
_ENTRY_KINDS = {int(k): k for k in EntryKind}


# -- one message ----------------------------------------------------------------


def message_to_pb(msg: Message) -> pb.Message:
    """The wire form of msg, of any type. A snapshot's data is left out."""
    out = pb.Message()
    _fill(out, msg)
    return out


def _fill(out: pb.Message, msg: Message) -> None:
    """Write msg into out, a fresh message in place (e.g. inside its batch):
    building a message and then copying it into its parent costs a copy per
    level (entries, message, batch), and this is the hot path of every write."""
    out.type = cast(pb.MessageType, int(msg.type))
    out.to = msg.to
    out.from_ = msg.from_
    if msg.term:
        out.term = msg.term
    if msg.log_term:
        out.log_term = msg.log_term
    if msg.index:
        out.index = msg.index
    if msg.entries:
        add = out.entries.add
        for e in msg.entries:
            add(term=e.term, index=e.index, kind=cast(pb.EntryKind, int(e.kind)), data=e.data)
    if msg.commit:
        out.commit = msg.commit
    if msg.reject:
        out.reject = True
    if msg.reject_hint:
        out.reject_hint = msg.reject_hint
    if msg.context:
        out.context = msg.context
    if msg.snapshot is not None:
        meta = msg.snapshot.metadata
        out.snapshot.SetInParent()  # present even when every field is zero
        out.snapshot.index = meta.index
        out.snapshot.term = meta.term
        out.snapshot.conf_state.voters.extend(meta.conf_state.voters)
        out.snapshot.conf_state.learners.extend(meta.conf_state.learners)


def message_from_pb(m: pb.Message) -> Message:
    """The core Message of a wire message; a snapshot comes back with empty data."""
    try:
        mtype = _MESSAGE_TYPES[m.type]
        kinds = _ENTRY_KINDS
        entries = tuple([Entry(term=e.term, index=e.index, kind=kinds[e.kind], data=e.data) for e in m.entries])
    except KeyError as exc:
        raise CodecError(f"malformed message: unknown message type or entry kind {exc}") from exc
    snapshot: Snapshot | None = None
    if m.HasField("snapshot"):
        s = m.snapshot
        snapshot = Snapshot(
            metadata=SnapshotMetadata(
                index=s.index,
                term=s.term,
                conf_state=ConfState(voters=tuple(s.conf_state.voters), learners=tuple(s.conf_state.learners)),
            )
        )
    return Message(
        type=mtype,
        to=m.to,
        from_=m.from_,
        term=m.term,
        log_term=m.log_term,
        index=m.index,
        entries=entries,
        commit=m.commit,
        snapshot=snapshot,
        reject=m.reject,
        reject_hint=m.reject_hint,
        context=m.context,
    )


# -- batches --------------------------------------------------------------------


def is_compact_heartbeat(msg: Message) -> bool:
    """True when msg travels as a Heartbeat record: a heartbeat (response) that
    sets no field beyond to, from_, term, commit and context."""
    return (
        msg.type in _HEARTBEAT_TYPES
        and msg.log_term == 0
        and msg.index == 0
        and not msg.entries
        and msg.snapshot is None
        and not msg.reject
        and msg.reject_hint == 0
    )


def encode_batch(from_node: int, to_node: int, items: Iterable[tuple[int, Message]]) -> pb.MessageBatch:
    """One MessageBatch carrying items, (group_id, message) pairs, in order.

    Raises CodecError for a local message type or a message carrying snapshot
    data (snapshots go through the snapshot stream).
    """
    batch = pb.MessageBatch(from_node=from_node, to_node=to_node)
    add_message = batch.messages.add
    add_heartbeat = batch.heartbeats.add
    runs: list[int] = []
    in_heartbeats = False  # which list the current run takes from
    run = 0
    for group_id, msg in items:
        if msg.type in LOCAL_MESSAGES:
            raise CodecError(f"group={group_id} local message {msg.type.name} cannot be sent")
        if msg.snapshot is not None and msg.snapshot.data:
            raise CodecError(f"group={group_id} snapshot data must go through the snapshot stream")
        compact = is_compact_heartbeat(msg)
        if compact != in_heartbeats:
            runs.append(run)
            in_heartbeats = compact
            run = 0
        run += 1
        if compact:
            add_heartbeat(
                group_id=group_id,
                to=msg.to,
                from_=msg.from_,
                term=msg.term,
                commit=msg.commit,
                context=msg.context,
                response=msg.type == MessageType.HEARTBEAT_RESP,
            )
        else:
            _fill(add_message(group_id=group_id).msg, msg)
    runs.append(run)
    # [m] or [m, h]: all messages, then all heartbeats, which an empty `runs` says.
    if len(runs) > 2:
        batch.runs.extend(runs)
    return batch


def _heartbeat_from_pb(h: pb.Heartbeat) -> Message:
    return Message(
        type=MessageType.HEARTBEAT_RESP if h.response else MessageType.HEARTBEAT,
        to=h.to,
        from_=h.from_,
        term=h.term,
        commit=h.commit,
        context=h.context,
    )


def decode_batch(batch: pb.MessageBatch) -> list[tuple[int, Message]]:
    """The (group_id, message) pairs of batch, in the order they were encoded.

    Raises CodecError when the batch is malformed (unknown types, local
    message types, inconsistent runs)."""
    n_msgs = len(batch.messages)
    n_hbs = len(batch.heartbeats)
    runs: Sequence[int] = batch.runs if batch.runs else (n_msgs, n_hbs)
    out: list[tuple[int, Message]] = []
    mi = hi = 0
    for k, run in enumerate(runs):
        if k % 2 == 0:
            if mi + run > n_msgs:
                raise CodecError(f"malformed batch: runs {list(runs)} exceed {n_msgs} messages")
            for gm in batch.messages[mi : mi + run]:
                msg = message_from_pb(gm.msg)
                if msg.type in LOCAL_MESSAGES:
                    raise CodecError(f"malformed batch: local message {msg.type.name} group={gm.group_id}")
                out.append((gm.group_id, msg))
            mi += run
        else:
            if hi + run > n_hbs:
                raise CodecError(f"malformed batch: runs {list(runs)} exceed {n_hbs} heartbeats")
            out.extend((h.group_id, _heartbeat_from_pb(h)) for h in batch.heartbeats[hi : hi + run])
            hi += run
    if mi != n_msgs or hi != n_hbs:
        raise CodecError(f"malformed batch: runs {list(runs)} do not cover {n_msgs} messages and {n_hbs} heartbeats")
    return out


# -- snapshots ------------------------------------------------------------------


class SnapshotChunker:
    """Cuts a MSG_SNAP message and its data into SnapshotChunks of chunk_size bytes.

    Feed the data in pieces of any size with ``add`` (each returns the chunks
    it completed), then call ``finish`` for the last chunk. The first chunk
    carries the header (msg without snapshot data); only the last has
    ``last`` set."""

    def __init__(
        self,
        from_node: int,
        to_node: int,
        group_id: int,
        msg: Message,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        if msg.type != MessageType.SNAP or msg.snapshot is None:
            raise CodecError(f"group={group_id} not a snapshot message: {msg.type.name}")
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self._from_node = from_node
        self._to_node = to_node
        self._group_id = group_id
        self._header: pb.Message | None = message_to_pb(msg)
        self._chunk_size = chunk_size
        self._buf = bytearray()
        self._offset = 0  # offset of _buf in the snapshot data
        self._finished = False

    def _chunk(self, *, last: bool) -> pb.SnapshotChunk:
        chunk = pb.SnapshotChunk(
            from_node=self._from_node,
            to_node=self._to_node,
            group_id=self._group_id,
            offset=self._offset,
            data=bytes(self._buf),
            last=last,
        )
        if self._header is not None:
            chunk.header.CopyFrom(self._header)
            self._header = None
        self._offset += len(self._buf)
        self._buf = bytearray()
        return chunk

    def add(self, piece: bytes | bytearray | memoryview) -> list[pb.SnapshotChunk]:
        if self._finished:
            raise RuntimeError("SnapshotChunker.add after finish")
        out: list[pb.SnapshotChunk] = []
        view = memoryview(piece).cast("B")
        pos = 0
        while pos < len(view):
            # A full buffer is emitted only once more data follows, so that
            # the final chunk, from finish(), is never empty unless all is.
            if len(self._buf) == self._chunk_size:
                out.append(self._chunk(last=False))
            take = min(self._chunk_size - len(self._buf), len(view) - pos)
            self._buf += view[pos : pos + take]
            pos += take
        return out

    def finish(self) -> pb.SnapshotChunk:
        if self._finished:
            raise RuntimeError("SnapshotChunker.finish called twice")
        self._finished = True
        return self._chunk(last=True)

    @property
    def total_bytes(self) -> int:
        return self._offset + len(self._buf)


class SnapshotAssembler:
    """Rebuilds one snapshot from its chunks, checking each as it comes.

    ``add`` returns True once the last chunk is in; ``result`` then gives
    (from_node, group_id, message) with the full snapshot data."""

    def __init__(self, *, node_id: int, max_bytes: int, spool_dir: str | None = None) -> None:
        """spool_dir: write the data to a file there as it comes (the result
        then carries base.spool_token(path) as its data), instead of holding
        it in memory."""
        self._node_id = node_id
        self._max_bytes = max_bytes
        self._spool_dir = spool_dir
        self._spool: BinaryIO | None = None
        self._spool_path: str | None = None
        self.delivered = False
        """Set by the receiver once the result was handed on (its spool file is then not ours)."""
        self._header: Message | None = None
        self._from_node = 0
        self._group_id = 0
        self._pieces: list[bytes] = []
        self._received = 0
        self._done = False

    @property
    def received_bytes(self) -> int:
        return self._received

    @property
    def group_id(self) -> int:
        return self._group_id

    @property
    def from_node(self) -> int:
        return self._from_node

    def add(self, chunk: pb.SnapshotChunk) -> bool:
        if self._done:
            raise CodecError("snapshot chunk after the last one")
        if chunk.to_node != self._node_id:
            raise CodecError(f"snapshot chunk for node {chunk.to_node} reached node {self._node_id}")
        if self._header is None:
            if not chunk.HasField("header"):
                raise CodecError("first snapshot chunk has no header")
            header = message_from_pb(chunk.header)
            if header.type != MessageType.SNAP or header.snapshot is None:
                raise CodecError(f"snapshot header is {header.type.name} without snapshot metadata")
            self._header = header
            self._from_node = chunk.from_node
            self._group_id = chunk.group_id
        elif chunk.from_node != self._from_node or chunk.group_id != self._group_id:
            raise CodecError(
                f"snapshot chunk of node={chunk.from_node} group={chunk.group_id} in a snapshot "
                f"of node={self._from_node} group={self._group_id}"
            )
        if chunk.offset != self._received:
            raise CodecError(
                f"group={self._group_id} snapshot chunk at offset {chunk.offset}, expected {self._received}"
            )
        self._received += len(chunk.data)
        if self._received > self._max_bytes:
            raise CodecError(f"group={self._group_id} snapshot larger than {self._max_bytes} bytes")
        if chunk.data:
            if self._spool_dir is not None:
                if self._spool is None:
                    self._spool = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in result()/discard()
                        dir=self._spool_dir, prefix=f"snap-g{self._group_id}-", suffix=".part", delete=False
                    )
                self._spool.write(chunk.data)
            else:
                self._pieces.append(chunk.data)
        self._done = chunk.last
        return self._done

    def discard(self) -> None:
        """Drop what was received (an incomplete or refused snapshot)."""
        self._pieces = []
        if self._spool is not None:
            self._spool.close()
            self._spool_path = self._spool.name
            self._spool = None
        if self._spool_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._spool_path)
            self._spool_path = None

    def result(self) -> tuple[int, int, Message]:
        if not self._done or self._header is None or self._header.snapshot is None:
            raise CodecError("snapshot incomplete")
        if self._spool_dir is not None:
            if self._spool is None:  # no data at all: an empty spool file
                self._spool = tempfile.NamedTemporaryFile(  # noqa: SIM115
                    dir=self._spool_dir, prefix=f"snap-g{self._group_id}-", suffix=".part", delete=False
                )
            f, self._spool = self._spool, None
            f.flush()
            os.fsync(f.fileno())
            f.close()
            self._spool_path = f.name
            data = spool_token(f.name)
        else:
            data = b"".join(self._pieces)
        snap = Snapshot(metadata=self._header.snapshot.metadata, data=data)
        self._pieces = []
        return self._from_node, self._group_id, dataclasses.replace(self._header, snapshot=snap)
