"""Storage layout of shard data in the process's RocksDB (keys and records).

The process has one RocksDB. First bytes already taken: ``0x01`` Raft log
store (``raft/storage/keys.py``), ``0x03`` RegisterMachine. Shard data uses
``0x04``-``0x06``; nobody else may. ``0x07`` is the store node's own record
(its active alarms, shard/space.py). Integers are unsigned big-endian, so byte
order is numeric order::

    0x04 | slot u16 | esc(key) 0x00 0x01 | ~revision u64   -> MVCC record
    0x05 | slot u16 | revision u64 | sub u32                -> user key (revision index)
    0x06 | shard_id u64 | kind u8 [| router_id u64]         -> shard meta record

MVCC keys. ``esc`` keeps byte order and makes encodings prefix-free: every
0x00 of the user key becomes 0x00 0xFF, and 0x00 0x01 ends the key. So within
a slot user keys sort exactly as raw keys do, and all versions of one key are
one contiguous run. ``~revision`` is ``2**64 - 1 - revision``: versions run
newest first, and "the latest version at or below R" is one seek to
``mvcc_key(slot, key, R)``. A user key [a, b) range in a slot is the storage
range [esc(a) 0x00 0x01, esc(b) 0x00 0x01) under the slot prefix.

Every user-data key starts with its slot: splitting a shard moves nothing, and
dropping a replica deletes whole slot prefixes (``0x04|slot`` and ``0x05|slot``).

Revision index. One entry per change, ordered by (revision, sub) within a
slot: the watch history of a shard is a merge of its slots' runs. Sub is the
change's position inside its revision (a txn writes many keys at one
revision, etcd's sub-revision).

Meta kinds (per shard, so two shards on one node never collide):

    0x01 STATE   applied index, revision, compact revision, closed timestamp
    0x02 SLOTS   the cluster's slot count and the slot ranges the shard owns
    0x03 EPOCH   the shard's epoch: conf_version, slot_version (absent: 1, 1)
    0x04 GROUP   the voters and learners a split-created shard's Raft group
                 is bootstrapped with (absent for shards created otherwise)
    0x05 CHILD   per shard split off this one (key suffix: its shard id)
    0x06 STATS   the live key count and approximate live size (sum of
                 len(key) + len(value) of the live keys) of the shard's slots;
                 absent for a shard created before it was kept (unknown)
    0x07 MERGE   a merge source's freeze (PrepareMerge applied): the target
                 shard, the index of the PrepareMerge entry, the revision then,
                 and whether the target applied its CommitMerge (absent: not
                 frozen)
    0x08 MERGED  per shard merged into this one (key suffix: its shard id)
    0x11 TXN_LOCK  the lock of the txn across shards prepared here and not
                 yet decided here (absent: unlocked; shard/txn2pc.py)
    0x12 TXN_RECORD  per txn whose primary this shard is (key suffix: the
                 txn id): its decided outcome (shard/txn2pc.py)
    0x10 DEDUP   per router id (key suffix: router_id u64): the window's floor;
                 per applied (router id, seq) in the window (key suffix:
                 router_id u64 | seq u64): its outcome

Records are struct-packed and versioned by their first byte (never pickle)::

    MVCC   B ver=1 | B flags (1 = tombstone) | Q create_revision | Q version
           | q lease | value (rest)
    STATE  B ver=2 | Q applied | Q revision | Q compact | Q closed_ts
           (ver=1: the same with revisions as unix_ms << 16, before
           issue #17; refused, see STATE_VERSION)
    SLOTS  B ver=1 | I slot_count | I n | n * (I lo | I hi)
    DEDUP  router record: B ver=2 | Q floor
           (ver=1, written before windows: B ver=1 | Q seq | outcome (rest),
           the latest seq applied and its outcome; it reads as floor = seq
           with that one outcome in the window)
           window entry: B ver=2 | outcome (rest, see shard/codec.py)
    EPOCH  B ver=1 | Q conf_version | Q slot_version
    GROUP  B ver=1 | I nv | I nl | nv * Q voter | nl * Q learner
    CHILD  B ver=1 (empty otherwise)
    STATS  B ver=1 | Q key_count | Q size_bytes
    MERGE  B ver=1 | Q target | Q index | Q revision | B committed

A record with an unknown version or a wrong length raises ``CodecError``.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from shard.errors import CodecError

DATA_PREFIX = b"\x04"
REV_PREFIX = b"\x05"
META_PREFIX = b"\x06"
FORMAT_VERSION = 1

MAX_U64 = (1 << 64) - 1
TERMINATOR = b"\x00\x01"
_KEY_END = b"\x00\x02"  # sorts after every version of the key it ends

_SLOT = struct.Struct(">H")
_REV = struct.Struct(">Q")
_REV_SUB = struct.Struct(">QI")
_META = struct.Struct(">QB")
_MVCC_HEAD = struct.Struct(">BBQQq")
_STATE = struct.Struct(">BQQQQ")
_SLOTS_HEAD = struct.Struct(">BII")
_RANGE = struct.Struct(">II")
_DEDUP_HEAD = struct.Struct(">BQ")
_DEDUP_FLOOR = struct.Struct(">BQ")
DEDUP_VERSION = 2
_EPOCH = struct.Struct(">BQQ")
_GROUP_HEAD = struct.Struct(">BII")
_STATS = struct.Struct(">BQQ")

TOMBSTONE = 0x01


class MetaKind(enum.IntEnum):
    STATE = 0x01
    SLOTS = 0x02
    EPOCH = 0x03
    GROUP = 0x04
    CHILD = 0x05
    STATS = 0x06
    MERGE = 0x07
    MERGED = 0x08
    DEDUP = 0x10
    TXN_LOCK = 0x11
    TXN_RECORD = 0x12


def escape(key: bytes) -> bytes:
    return key.replace(b"\x00", b"\x00\xff")


def unescape(esc: bytes) -> bytes:
    return esc.replace(b"\x00\xff", b"\x00")


def _prefix_end(prefix: bytes) -> bytes:
    """The least key greater than every key starting with prefix."""
    p = bytearray(prefix)
    while p:
        if p[-1] != 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    raise ValueError("prefix of only 0xff bytes has no end")


# --- MVCC keys -------------------------------------------------------------------


def data_prefix(slot: int) -> bytes:
    return DATA_PREFIX + _SLOT.pack(slot)


def data_slot_end(slot: int) -> bytes:
    return _prefix_end(data_prefix(slot))


def key_prefix(slot: int, key: bytes) -> bytes:
    """Every version of key starts with this."""
    return DATA_PREFIX + _SLOT.pack(slot) + escape(key) + TERMINATOR


def key_end(slot: int, key: bytes) -> bytes:
    """Sorts after every version of key and before the next user key."""
    return DATA_PREFIX + _SLOT.pack(slot) + escape(key) + _KEY_END


def mvcc_key(slot: int, key: bytes, revision: int) -> bytes:
    if not 0 <= revision <= MAX_U64:
        raise ValueError(f"revision out of range: {revision}")
    return key_prefix(slot, key) + _REV.pack(MAX_U64 - revision)


def mvcc_bounds(slot: int, key: bytes, range_end: bytes) -> tuple[bytes, bytes]:
    """Storage bounds [lo, hi) of the etcd range [key, range_end) in slot.
    Empty range_end: the single key; ``"\\0"``: every key >= key."""
    lo = key_prefix(slot, key)
    if not range_end:
        return lo, key_end(slot, key)
    if range_end == b"\x00":
        return lo, data_slot_end(slot)
    return lo, key_prefix(slot, range_end)


def parse_mvcc_key(storage_key: bytes) -> tuple[int, bytes, int]:
    """(slot, user key, revision) of an MVCC storage key."""
    if len(storage_key) < 13 or storage_key[:1] != DATA_PREFIX or storage_key[-10:-8] != TERMINATOR:
        raise CodecError(f"not an MVCC key: {storage_key!r}")
    (slot,) = _SLOT.unpack_from(storage_key, 1)
    (inv,) = _REV.unpack_from(storage_key, len(storage_key) - 8)
    return slot, unescape(storage_key[3:-10]), MAX_U64 - inv


def revision_of(storage_key: bytes) -> int:
    (inv,) = _REV.unpack_from(storage_key, len(storage_key) - 8)
    return MAX_U64 - inv


def user_key_of(storage_key: bytes) -> bytes:
    return unescape(storage_key[3:-10])


def key_end_of(storage_key: bytes) -> bytes:
    """key_end() of the user key of an MVCC storage key, without decoding it."""
    return storage_key[:-9] + b"\x02"


def seek_key_of(storage_key: bytes, revision: int) -> bytes:
    """The mvcc_key() of the same user key at another revision."""
    return storage_key[:-8] + _REV.pack(MAX_U64 - revision)


# --- revision index ----------------------------------------------------------------


def rev_prefix(slot: int) -> bytes:
    return REV_PREFIX + _SLOT.pack(slot)


def rev_slot_end(slot: int) -> bytes:
    return _prefix_end(rev_prefix(slot))


def rev_key(slot: int, revision: int, sub: int) -> bytes:
    return REV_PREFIX + _SLOT.pack(slot) + _REV_SUB.pack(revision, sub)


def parse_rev_key(storage_key: bytes) -> tuple[int, int, int]:
    """(slot, revision, sub) of a revision-index key."""
    if len(storage_key) != 15 or storage_key[:1] != REV_PREFIX:
        raise CodecError(f"not a revision index key: {storage_key!r}")
    (slot,) = _SLOT.unpack_from(storage_key, 1)
    revision, sub = _REV_SUB.unpack_from(storage_key, 3)
    return slot, revision, sub


# --- meta keys ---------------------------------------------------------------------


def meta_prefix(shard_id: int) -> bytes:
    return META_PREFIX + struct.pack(">Q", shard_id)


def meta_end(shard_id: int) -> bytes:
    return _prefix_end(meta_prefix(shard_id))


def state_key(shard_id: int) -> bytes:
    return META_PREFIX + _META.pack(shard_id, MetaKind.STATE)


def slots_key(shard_id: int) -> bytes:
    return META_PREFIX + _META.pack(shard_id, MetaKind.SLOTS)


def epoch_key(shard_id: int) -> bytes:
    return META_PREFIX + _META.pack(shard_id, MetaKind.EPOCH)


def group_key(shard_id: int) -> bytes:
    return META_PREFIX + _META.pack(shard_id, MetaKind.GROUP)


def stats_key(shard_id: int) -> bytes:
    return META_PREFIX + _META.pack(shard_id, MetaKind.STATS)


def merge_key(shard_id: int) -> bytes:
    return META_PREFIX + _META.pack(shard_id, MetaKind.MERGE)


def merged_prefix(shard_id: int) -> bytes:
    return META_PREFIX + _META.pack(shard_id, MetaKind.MERGED)


def merged_key(shard_id: int, source_shard_id: int) -> bytes:
    return merged_prefix(shard_id) + _REV.pack(source_shard_id)


def child_prefix(shard_id: int) -> bytes:
    return META_PREFIX + _META.pack(shard_id, MetaKind.CHILD)


def child_key(shard_id: int, child_shard_id: int) -> bytes:
    return child_prefix(shard_id) + _REV.pack(child_shard_id)


def child_of_key(storage_key: bytes) -> int:
    if len(storage_key) != 18:
        raise CodecError(f"not a child key: {storage_key!r}")
    (child,) = _REV.unpack_from(storage_key, 10)
    return child


def shard_of_meta_key(storage_key: bytes) -> tuple[int, int]:
    """(shard_id, kind) of a meta record's key."""
    if len(storage_key) < 10 or storage_key[:1] != META_PREFIX:
        raise CodecError(f"not a meta key: {storage_key!r}")
    shard_id, kind = _META.unpack_from(storage_key, 1)
    return shard_id, kind


def txn_lock_key(shard_id: int) -> bytes:
    return META_PREFIX + _META.pack(shard_id, MetaKind.TXN_LOCK)


def txn_record_prefix(shard_id: int) -> bytes:
    return META_PREFIX + _META.pack(shard_id, MetaKind.TXN_RECORD)


def txn_record_key(shard_id: int, txn_id: bytes) -> bytes:
    return txn_record_prefix(shard_id) + txn_id


def dedup_prefix(shard_id: int) -> bytes:
    return META_PREFIX + _META.pack(shard_id, MetaKind.DEDUP)


def dedup_key(shard_id: int, router_id: int) -> bytes:
    return dedup_prefix(shard_id) + _REV.pack(router_id)


def router_of_dedup_key(storage_key: bytes) -> int:
    if len(storage_key) != 18:
        raise CodecError(f"not a dedup key: {storage_key!r}")
    (router_id,) = _REV.unpack_from(storage_key, 10)
    return router_id


def dedup_seq_key(shard_id: int, router_id: int, seq: int) -> bytes:
    """The key of one window entry: sorts right after its router's record,
    entries in seq order."""
    return dedup_prefix(shard_id) + _REV.pack(router_id) + _REV.pack(seq)


def parse_dedup_key(storage_key: bytes) -> tuple[int, int | None]:
    """(router_id, seq) of a dedup key; seq is None for the router record."""
    if len(storage_key) == 18:
        return router_of_dedup_key(storage_key), None
    if len(storage_key) != 26:
        raise CodecError(f"not a dedup key: {storage_key!r}")
    router_id, seq = struct.unpack_from(">QQ", storage_key, 10)
    return router_id, seq


# --- records -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MvccRecord:
    """One version of a key. A tombstone marks a delete (the key is absent
    from its revision until the next put)."""

    create_revision: int = 0
    version: int = 0
    lease: int = 0
    value: bytes = b""
    tombstone: bool = False


def encode_mvcc(record: MvccRecord) -> bytes:
    flags = TOMBSTONE if record.tombstone else 0
    return (
        _MVCC_HEAD.pack(FORMAT_VERSION, flags, record.create_revision, record.version, record.lease)
        + record.value
    )


def encode_live(create_revision: int, version: int, lease: int, value: bytes) -> bytes:
    """``encode_mvcc`` of a live version from its fields, with no MvccRecord
    built and thrown away (the put path)."""
    return _MVCC_HEAD.pack(FORMAT_VERSION, 0, create_revision, version, lease) + value


def decode_live(raw: bytes) -> tuple[int, int, int, bytes]:
    """(create_revision, version, lease, value) of an encoded live version,
    with no MvccRecord built (the put path reads the version it replaces)."""
    if len(raw) < _MVCC_HEAD.size or raw[0] != FORMAT_VERSION or raw[1] & TOMBSTONE:
        raise CodecError(f"not a live MVCC record ({len(raw)} bytes, version {raw[:1]!r})")
    _, _, create, version, lease = _MVCC_HEAD.unpack_from(raw)
    return create, version, lease, raw[_MVCC_HEAD.size :]


def is_tombstone(raw: bytes) -> bool:
    """Whether an encoded MVCC record is a tombstone, without decoding it."""
    return bool(raw[1] & TOMBSTONE)


def value_size(raw: bytes) -> int:
    """The length of the value of an encoded MVCC record, without decoding it."""
    return len(raw) - _MVCC_HEAD.size


TOMBSTONE_RECORD = _MVCC_HEAD.pack(FORMAT_VERSION, TOMBSTONE, 0, 0, 0)
"""``encode_mvcc(MvccRecord(tombstone=True))``: every tombstone is these bytes."""


def decode_mvcc(raw: bytes) -> MvccRecord:
    if len(raw) < _MVCC_HEAD.size or raw[0] != FORMAT_VERSION:
        raise CodecError(f"bad MVCC record ({len(raw)} bytes, version {raw[:1]!r})")
    _, flags, create, version, lease = _MVCC_HEAD.unpack_from(raw)
    return MvccRecord(create, version, lease, bytes(raw[_MVCC_HEAD.size :]), bool(flags & TOMBSTONE))


@dataclass(frozen=True, slots=True)
class ShardState:
    applied: int = 0
    revision: int = 0
    compact_revision: int = 0
    closed_ts: int = 0


STATE_VERSION = 2
"""The STATE record's version, and the marker of the revision encoding of
the shard's data: 2, revisions as shard/hlc.py encodes them (milliseconds
since its epoch << 11). Version 1 (``STATE_VERSION_PRE_17``) had the same
fields with revisions as ``unix_ms << 16``: a replica holding one is
refused (``decode_state``), never mixed with new revisions."""
STATE_VERSION_PRE_17 = 1

PRE_17_ENCODING = (
    "shard data written with the pre-#17 revision encoding (unix_ms << 16, revisions near 1.2e17): "
    "this version encodes revisions as milliseconds since 2020-01-01 << 11, below 2^53 (DESIGN.md, "
    '"Revisions and time"), and cannot mix the two; start it on a new data directory and copy the '
    "keys over (e.g. etcdctl make-mirror from a cluster of the previous version)"
)


def encode_state(state: ShardState) -> bytes:
    return _STATE.pack(STATE_VERSION, state.applied, state.revision, state.compact_revision, state.closed_ts)


def decode_state(raw: bytes) -> ShardState:
    if len(raw) == _STATE.size and raw[0] == STATE_VERSION_PRE_17:
        raise CodecError(PRE_17_ENCODING)
    if len(raw) != _STATE.size or raw[0] != STATE_VERSION:
        raise CodecError(f"bad shard state record ({len(raw)} bytes)")
    _, applied, revision, compact, closed = _STATE.unpack(raw)
    return ShardState(applied, revision, compact, closed)


def encode_slots(slot_count: int, ranges: tuple[tuple[int, int], ...]) -> bytes:
    return _SLOTS_HEAD.pack(FORMAT_VERSION, slot_count, len(ranges)) + b"".join(
        _RANGE.pack(lo, hi) for lo, hi in ranges
    )


def decode_slots(raw: bytes) -> tuple[int, tuple[tuple[int, int], ...]]:
    if len(raw) < _SLOTS_HEAD.size or raw[0] != FORMAT_VERSION:
        raise CodecError("bad slots record")
    _, slot_count, n = _SLOTS_HEAD.unpack_from(raw)
    if len(raw) != _SLOTS_HEAD.size + n * _RANGE.size:
        raise CodecError("bad slots record length")
    ranges = tuple(_RANGE.unpack_from(raw, _SLOTS_HEAD.size + i * _RANGE.size) for i in range(n))
    return slot_count, ranges


def encode_dedup(seq: int, outcome: bytes) -> bytes:
    return _DEDUP_HEAD.pack(FORMAT_VERSION, seq) + outcome


def decode_dedup(raw: bytes) -> tuple[int, bytes]:
    """A version-1 router record: (latest seq, its outcome)."""
    if len(raw) < _DEDUP_HEAD.size or raw[0] != FORMAT_VERSION:
        raise CodecError("bad dedup record")
    _, seq = _DEDUP_HEAD.unpack_from(raw)
    return seq, bytes(raw[_DEDUP_HEAD.size :])


def encode_dedup_floor(floor: int) -> bytes:
    return _DEDUP_FLOOR.pack(DEDUP_VERSION, floor)


def decode_dedup_router(raw: bytes) -> tuple[int, tuple[int, bytes] | None]:
    """A router record of either version: (floor, the one (seq, outcome) a
    version-1 record carries, else None)."""
    if raw[:1] == bytes([DEDUP_VERSION]):
        if len(raw) != _DEDUP_FLOOR.size:
            raise CodecError(f"bad dedup floor record ({len(raw)} bytes)")
        return _DEDUP_FLOOR.unpack(raw)[1], None
    seq, outcome = decode_dedup(raw)
    return seq, (seq, outcome)


def encode_dedup_entry(outcome: bytes) -> bytes:
    return bytes([DEDUP_VERSION]) + outcome


def decode_dedup_entry(raw: bytes) -> bytes:
    if len(raw) < 2 or raw[0] != DEDUP_VERSION:
        raise CodecError("bad dedup entry record")
    return bytes(raw[1:])


def encode_stats(key_count: int, size_bytes: int) -> bytes:
    return _STATS.pack(FORMAT_VERSION, key_count, size_bytes)


def decode_stats(raw: bytes) -> tuple[int, int]:
    """(key_count, size_bytes) of a STATS record."""
    if len(raw) != _STATS.size or raw[0] != FORMAT_VERSION:
        raise CodecError(f"bad stats record ({len(raw)} bytes)")
    _, key_count, size_bytes = _STATS.unpack(raw)
    return key_count, size_bytes


_MERGE = struct.Struct(">BQQQB")


@dataclass(frozen=True, slots=True)
class MergeState:
    """A merge source's freeze: into `target`, at log `index`, at `revision`;
    `committed` once the target applied the CommitMerge."""

    target: int
    index: int
    revision: int
    committed: bool = False


def encode_merge(m: MergeState) -> bytes:
    return _MERGE.pack(FORMAT_VERSION, m.target, m.index, m.revision, int(m.committed))


def decode_merge(raw: bytes) -> MergeState:
    if len(raw) != _MERGE.size or raw[0] != FORMAT_VERSION:
        raise CodecError(f"bad merge record ({len(raw)} bytes)")
    _, target, index, revision, committed = _MERGE.unpack(raw)
    return MergeState(target, index, revision, bool(committed))


def encode_epoch(conf_version: int, slot_version: int) -> bytes:
    return _EPOCH.pack(FORMAT_VERSION, conf_version, slot_version)


def decode_epoch(raw: bytes) -> tuple[int, int]:
    if len(raw) != _EPOCH.size or raw[0] != FORMAT_VERSION:
        raise CodecError(f"bad epoch record ({len(raw)} bytes)")
    _, conf_version, slot_version = _EPOCH.unpack(raw)
    return conf_version, slot_version


def encode_group(voters: tuple[int, ...], learners: tuple[int, ...]) -> bytes:
    return _GROUP_HEAD.pack(FORMAT_VERSION, len(voters), len(learners)) + b"".join(
        _REV.pack(n) for n in (*voters, *learners)
    )


def decode_group(raw: bytes) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if len(raw) < _GROUP_HEAD.size or raw[0] != FORMAT_VERSION:
        raise CodecError("bad group record")
    _, nv, nl = _GROUP_HEAD.unpack_from(raw)
    if len(raw) != _GROUP_HEAD.size + (nv + nl) * _REV.size:
        raise CodecError("bad group record length")
    ids = tuple(_REV.unpack_from(raw, _GROUP_HEAD.size + i * _REV.size)[0] for i in range(nv + nl))
    return ids[:nv], ids[nv:]
