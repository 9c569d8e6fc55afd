"""Key codec and value records of the RocksDB Raft log store.

One RocksDB per process holds every group's Raft data next to the
applications' data (shard data, placement state). Raft data lives under one
reserved first byte, so other users of the DB must never start a key with
``RAFT_PREFIX``.

Keys (integers are unsigned big-endian, so byte order is numeric order)::

    prefix(1)=0x01 | group_id(8) | kind(1) [| index(8)]

    kind  name           index  value
    0x01  HARD_STATE     no     hard state record
    0x02  SNAPSHOT_META  no     snapshot metadata record
    0x03  SNAPSHOT_DATA  no     raw bytes (only with keep_snapshot_data: the
                                state machine owns real snapshot data)
    0x04  APPLIED        no     applied record (written by the application in
                                its own apply batch; the log store never reads it)
    0x10  LOG            yes    entry record
    0x20  TOMBSTONE      no     tombstone record (a destroyed group's: see
                                LogBatch.remove_group; after the log, never
                                read as a log key)

A group's keys are the range ``[group_start(g), group_end(g))`` and its log is
the contiguous range ``[log_key(g, 0), log_end(g))`` ordered by index, so a
prefix or suffix of the log is deleted with one ``delete_range``.

The log range always starts with a *dummy* record at the log's offset (the
index of the last snapshot or compaction point, ``0`` for a fresh group) that
carries that index's term and no data, exactly like ``MemoryStorage._ents[0]``.

Value records are struct-packed, versioned by their first byte (never pickle)::

    entry          B version=1 | Q term | B entry kind | data (rest of value)
    hard state     B version=1 | Q term | Q vote | Q commit
    snapshot meta  B version=1 | Q index | Q term | I n_voters | I n_learners
                   | Q * n_voters | Q * n_learners
    applied        B version=1 | Q index
    tombstone      B version=1 | Q the owner's number

A record with an unknown version or a wrong length raises ``RecordError``.
"""

from __future__ import annotations

import enum
import struct

from raft.core.types import ConfState, Entry, EntryKind, HardState, SnapshotMetadata

RAFT_PREFIX = b"\x01"
"""First byte of every key of Raft data. Reserved: no other user of the DB may use it."""

FORMAT_VERSION = 1
MAX_U64 = (1 << 64) - 1


class Kind(enum.IntEnum):
    HARD_STATE = 0x01
    SNAPSHOT_META = 0x02
    SNAPSHOT_DATA = 0x03
    APPLIED = 0x04
    LOG = 0x10


_SINGLE_KINDS = frozenset(k.value for k in Kind if k != Kind.LOG)


class RecordError(ValueError):
    """A stored key or value that this codec cannot decode: corruption or an
    unknown format version."""


_GROUP = struct.Struct(">cQ")
_KIND_KEY = struct.Struct(">cQB")
_LOG_KEY = struct.Struct(">cQBQ")
_ENTRY_HEAD = struct.Struct(">BQB")
_HARD_STATE = struct.Struct(">BQQQ")
_SNAP_HEAD = struct.Struct(">BQQII")
_APPLIED = struct.Struct(">BQ")


def _check_u64(name: str, value: int) -> None:
    if not 0 <= value <= MAX_U64:
        raise ValueError(f"{name}={value} does not fit in an unsigned 64-bit integer")


# -- keys ---------------------------------------------------------------------
def group_start(group_id: int) -> bytes:
    """First key of a group (inclusive)."""
    _check_u64("group_id", group_id)
    return _GROUP.pack(RAFT_PREFIX, group_id)


def group_end(group_id: int) -> bytes:
    """Upper bound (exclusive) of every key of a group."""
    return group_start(group_id) + b"\xff"


def raft_end() -> bytes:
    """Upper bound (exclusive) of every Raft key."""
    return bytes([RAFT_PREFIX[0] + 1])


def hard_state_key(group_id: int) -> bytes:
    return _KIND_KEY.pack(RAFT_PREFIX, group_id, Kind.HARD_STATE)


def snapshot_meta_key(group_id: int) -> bytes:
    return _KIND_KEY.pack(RAFT_PREFIX, group_id, Kind.SNAPSHOT_META)


def snapshot_data_key(group_id: int) -> bytes:
    return _KIND_KEY.pack(RAFT_PREFIX, group_id, Kind.SNAPSHOT_DATA)


def applied_key(group_id: int) -> bytes:
    """Where an application may keep a group's applied index (see encode_applied)."""
    return _KIND_KEY.pack(RAFT_PREFIX, group_id, Kind.APPLIED)


def log_key(group_id: int, index: int) -> bytes:
    _check_u64("index", index)
    return _LOG_KEY.pack(RAFT_PREFIX, group_id, Kind.LOG, index)


def log_end(group_id: int) -> bytes:
    """Upper bound (exclusive) of a group's log keys."""
    return _KIND_KEY.pack(RAFT_PREFIX, group_id, Kind.LOG + 1)


def parse_key(key: bytes) -> tuple[int, Kind, int | None]:
    """(group_id, kind, index or None) of a Raft key."""
    if len(key) == _LOG_KEY.size:
        prefix, group_id, kind, index = _LOG_KEY.unpack(key)
        if prefix == RAFT_PREFIX and kind == Kind.LOG:
            return group_id, Kind.LOG, index
    elif len(key) == _KIND_KEY.size:
        prefix, group_id, kind = _KIND_KEY.unpack(key)
        if prefix == RAFT_PREFIX and kind in _SINGLE_KINDS:
            return group_id, Kind(kind), None
    raise RecordError(f"not a raft key: {key.hex()}")


def parse_group(key: bytes) -> int:
    """The group id of any key at or after group_start(group_id)."""
    if len(key) < _GROUP.size or key[:1] != RAFT_PREFIX:
        raise RecordError(f"not a raft key: {key.hex()}")
    group_id: int = _GROUP.unpack_from(key)[1]
    return group_id


# -- values -------------------------------------------------------------------
def _check_version(value: bytes, what: str) -> None:
    if not value:
        raise RecordError(f"empty {what} record")
    if value[0] != FORMAT_VERSION:
        raise RecordError(f"{what} record has unknown format version {value[0]}")


def encode_entry(entry: Entry) -> bytes:
    _check_u64("term", entry.term)
    return _ENTRY_HEAD.pack(FORMAT_VERSION, entry.term, entry.kind) + entry.data


def decode_entry(index: int, value: bytes) -> Entry:
    """The entry stored at `index` (the index lives in the key, not the value)."""
    _check_version(value, "entry")
    if len(value) < _ENTRY_HEAD.size:
        raise RecordError(f"entry record at index {index} is {len(value)} bytes")
    _, term, kind = _ENTRY_HEAD.unpack_from(value)
    try:
        entry_kind = EntryKind(kind)
    except ValueError as exc:
        raise RecordError(f"entry at index {index} has unknown kind {kind}") from exc
    return Entry(term=term, index=index, kind=entry_kind, data=bytes(value[_ENTRY_HEAD.size :]))


def encode_hard_state(hs: HardState) -> bytes:
    return _HARD_STATE.pack(FORMAT_VERSION, hs.term, hs.vote, hs.commit)


def decode_hard_state(value: bytes) -> HardState:
    _check_version(value, "hard state")
    if len(value) != _HARD_STATE.size:
        raise RecordError(f"hard state record is {len(value)} bytes, want {_HARD_STATE.size}")
    _, term, vote, commit = _HARD_STATE.unpack(value)
    return HardState(term=term, vote=vote, commit=commit)


def encode_snapshot_metadata(meta: SnapshotMetadata) -> bytes:
    voters = meta.conf_state.voters
    learners = meta.conf_state.learners
    head = _SNAP_HEAD.pack(FORMAT_VERSION, meta.index, meta.term, len(voters), len(learners))
    return head + struct.pack(f">{len(voters) + len(learners)}Q", *voters, *learners)


def decode_snapshot_metadata(value: bytes) -> SnapshotMetadata:
    _check_version(value, "snapshot metadata")
    if len(value) < _SNAP_HEAD.size:
        raise RecordError(f"snapshot metadata record is {len(value)} bytes")
    _, index, term, n_voters, n_learners = _SNAP_HEAD.unpack_from(value)
    n = n_voters + n_learners
    if len(value) != _SNAP_HEAD.size + 8 * n:
        raise RecordError(f"snapshot metadata record is {len(value)} bytes for {n} members")
    ids = struct.unpack_from(f">{n}Q", value, _SNAP_HEAD.size)
    conf_state = ConfState(voters=tuple(ids[:n_voters]), learners=tuple(ids[n_voters:]))
    return SnapshotMetadata(index=index, term=term, conf_state=conf_state)


def encode_applied(index: int) -> bytes:
    return _APPLIED.pack(FORMAT_VERSION, index)


def decode_applied(value: bytes) -> int:
    _check_version(value, "applied")
    if len(value) != _APPLIED.size:
        raise RecordError(f"applied record is {len(value)} bytes, want {_APPLIED.size}")
    index: int = _APPLIED.unpack(value)[1]
    return index


TOMBSTONE_KIND = 0x20
"""Key kind of a destroyed group's tombstone: inside the group's key range
(``group_start``/``group_end``), after its log, never read as a log key."""
_TOMBSTONE = struct.Struct(">BQ")


def tombstone_key(group_id: int) -> bytes:
    """Where a destroyed group's tombstone is kept."""
    return group_start(group_id) + bytes([TOMBSTONE_KIND])


def encode_tombstone(number: int) -> bytes:
    return _TOMBSTONE.pack(1, number)


def decode_tombstone(value: bytes) -> int | None:
    """The tombstone's number (None: not a valid tombstone record)."""
    if len(value) != _TOMBSTONE.size or value[0] != 1:
        return None
    return int(_TOMBSTONE.unpack(value)[1])
