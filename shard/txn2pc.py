"""A txn across shards, as each participant applies it (DESIGN.md,
"Transactions across shards"). Pure: the state machine passes the engine
view, its meta and the command; no clocks or I/O.

A participant holds at most one *lock*: from the PREPARE of a txn until
the txn is decided here. While it is held the shard applies nothing else
that writes (every other write, lease deletion, split or merge is answered
TxnLocked with no effect at all, and retried by its sender), and its closed
timestamp stays where it was: the commit revision, chosen after every
participant prepared, is above each one's floor ``max(revision,
closed_ts)`` at prepare, so the commit can apply at that one revision on
every shard. (Per-key intents would let other writes through, but a shard's
revisions only grow: a write applied after the prepare could take a
revision above the one the txn commits at.)

The *primary* (one participant, chosen by the coordinator) also keeps the
txn's *record*: its outcome, written once by DECIDE (the coordinator) or
RESOLVE (anyone who met a lock of a txn whose coordinator went quiet),
whichever applies first in the primary's log. The primary's own part of
the branch applies in the same entry as a COMMITTED record, at a revision
the entry takes as any write does, above the floor DECIDE carries.

Compares and ops are numbered depth first: a txn's compares, then for
each op of its success branch and then its failure branch, the op, and a
nested txn's compares and ops (``flat_compares``, ``flat_ops``); the
router numbers them the same way (router/txn2pc.py).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shard import keys, mvcc, slots
from shard.codec import decode_txn, encode_txn
from shard.errors import CodecError, KeyNotFound, RevisionCompacted, RevisionError, ShardError
from shard.txn import Executor, _compare_kv
from shard.types import (
    COMPARE_FALSE,
    COMPARE_FALSE_EMPTY,
    COMPARE_TRUE,
    COMPARE_TRUE_EMPTY,
    Compare,
    CompareTarget,
    DeleteRangeRequest,
    KeyValue,
    PutRequest,
    PutResponse,
    RangeRequest,
    RequestOp,
    TxnPart,
    TxnPartResponse,
    TxnPhase,
    TxnRequest,
    TxnResponse,
    TxnState,
)

if TYPE_CHECKING:
    from shard.engine import KvReader

_LOCK_HEAD = struct.Struct(">BQqq")  # version, primary, stamp, floor
_RECORD = struct.Struct(">BBqq")  # version, state, revision, stamp
_VERSION = 1


@dataclass(frozen=True, slots=True)
class TxnLock:
    txn_id: bytes
    primary: int
    stamp: int
    """The HLC stamp of the PREPARE entry (when the lock was taken)."""
    floor: int
    """max(revision, closed_ts) when it was taken: the commit revision is above it."""
    txn: TxnRequest

    def writes(self) -> list[tuple[bytes, bytes]]:
        """(key, range_end) of every write of either branch."""
        return list(_write_ranges(self.txn))


@dataclass(frozen=True, slots=True)
class TxnRecord:
    state: TxnState
    revision: int = 0
    stamp: int = 0
    path: tuple[bool, ...] = ()


def encode_lock(lock: TxnLock) -> bytes:
    return _LOCK_HEAD.pack(_VERSION, lock.primary, lock.stamp, lock.floor) + struct.pack(">H", len(lock.txn_id)) + lock.txn_id + encode_txn(lock.txn)


def decode_lock(raw: bytes) -> TxnLock:
    if len(raw) < _LOCK_HEAD.size + 2 or raw[0] != _VERSION:
        raise CodecError("bad txn lock record")
    _, primary, stamp, floor = _LOCK_HEAD.unpack_from(raw)
    (n,) = struct.unpack_from(">H", raw, _LOCK_HEAD.size)
    off = _LOCK_HEAD.size + 2
    return TxnLock(raw[off : off + n], primary, stamp, floor, decode_txn(raw[off + n :]))


def encode_record(rec: TxnRecord) -> bytes:
    return _RECORD.pack(_VERSION, rec.state, rec.revision, rec.stamp) + bytes(rec.path)


def decode_record(raw: bytes) -> TxnRecord:
    if len(raw) < _RECORD.size or raw[0] != _VERSION:
        raise CodecError("bad txn record")
    _, state, revision, stamp = _RECORD.unpack_from(raw)
    return TxnRecord(TxnState(state), revision, stamp, tuple(bool(b) for b in raw[_RECORD.size :]))


def load_lock(reader: KvReader, shard_id: int) -> TxnLock | None:
    raw = reader.get(keys.txn_lock_key(shard_id))
    return decode_lock(raw) if raw is not None else None


def load_record(reader: KvReader, shard_id: int, txn_id: bytes) -> TxnRecord | None:
    raw = reader.get(keys.txn_record_key(shard_id, txn_id))
    return decode_record(raw) if raw is not None else None


def has_records(reader: KvReader, shard_id: int) -> bool:
    p = keys.txn_record_prefix(shard_id)
    c = reader.cursor(p, p + b"\xff" * 64)
    c.seek(p)
    return c.valid()


# --- numbering -------------------------------------------------------------------------


def flat_compares(t: TxnRequest) -> Iterator[Compare]:
    yield from t.compare
    for op in (*t.success, *t.failure):
        if isinstance(op, TxnRequest):
            yield from flat_compares(op)


def flat_ops(t: TxnRequest) -> Iterator[RequestOp]:
    for op in (*t.success, *t.failure):
        yield op
        if isinstance(op, TxnRequest):
            yield from flat_ops(op)


def _write_ranges(t: TxnRequest) -> Iterator[tuple[bytes, bytes]]:
    for op in flat_ops(t):
        if isinstance(op, PutRequest):
            yield op.key, b""
        elif isinstance(op, DeleteRangeRequest):
            yield op.key, op.range_end


def overlaps(key: bytes, range_end: bytes, writes: list[tuple[bytes, bytes]]) -> bool:
    """Whether etcd's range [key, range_end) meets any of writes."""
    lo, hi = _bounds(key, range_end)
    for wk, we in writes:
        wlo, whi = _bounds(wk, we)
        if (hi is None or wlo < hi) and (whi is None or lo < whi):
            return True
    return False


def _bounds(key: bytes, range_end: bytes) -> tuple[bytes, bytes | None]:
    if not range_end:
        return key, key + b"\x00"
    if range_end == mvcc.FROM_KEY:
        return key, None
    return key, range_end


# --- PREPARE ---------------------------------------------------------------------------


def _owns_one(key: bytes, range_end: bytes, owned: slots.SlotRanges, slot_count: int) -> bool | None:
    """True/False for a key (or a one-slot range) this shard does / does not
    own; None for a range over many slots (every shard owns a part)."""
    one = slots.single_slot(key, range_end, slot_count)
    if one is None:
        return None
    return slots.contains(owned, one)


def evaluate(view: KvReader, owned: slots.SlotRanges, slot_count: int, floor: int, compact: int, t: TxnRequest) -> TxnPartResponse:
    """What PREPARE answers: this shard's compare results, the ops it owns,
    and the ops it would refuse (etcd's checkTxn, for either branch)."""
    compares: list[int] = []
    for c in flat_compares(t):
        mine = _owns_one(c.key, c.range_end, owned, slot_count)
        if mine is False:
            compares.append(0)
            continue
        if c.range_end:
            kvs = list(mvcc.visible(view, owned, slot_count, c.key, c.range_end))
        else:
            kv = mvcc.live_kv(view, slots.slot_of(c.key, slot_count), c.key)
            kvs = [kv] if kv is not None else []
        if kvs:
            compares.append(COMPARE_TRUE if all(_compare_kv(c, kv) for kv in kvs) else COMPARE_FALSE)
        else:
            ok = c.target != CompareTarget.VALUE and _compare_kv(c, KeyValue(c.key))
            compares.append(COMPARE_TRUE_EMPTY if ok else COMPARE_FALSE_EMPTY)
    owned_ops: list[int] = []
    failed: list[tuple[int, int]] = []
    for i, op in enumerate(flat_ops(t)):
        if isinstance(op, TxnRequest):
            continue
        key, end = (op.key, b"") if isinstance(op, PutRequest) else (op.key, op.range_end)
        mine = _owns_one(key, end, owned, slot_count)
        if mine:
            owned_ops.append(i)
        if mine is False:
            continue
        try:
            if isinstance(op, PutRequest) and (op.ignore_value or op.ignore_lease):
                if mvcc.live_kv(view, slots.slot_of(op.key, slot_count), op.key) is None:
                    raise KeyNotFound()
            elif isinstance(op, RangeRequest):
                _check_range(op, compact)
        except (KeyNotFound, RevisionError) as err:
            failed.append((i, err.code))
    return TxnPartResponse(TxnState.PREPARED, floor, tuple(compares), tuple(owned_ops), tuple(failed))


def _check_range(r: RangeRequest, compact: int) -> None:
    """etcd's range revision checks as they will hold at the commit: a
    revision below the compaction is compacted (or any negative one once
    something was compacted). A revision above this shard's floor is not
    refused here: the commit revision, above every floor, is chosen later,
    and the router refuses a range naming a revision above it."""
    if r.revision < 0:
        if compact > 0:
            raise RevisionCompacted()
        return
    if 0 < r.revision < compact:
        raise RevisionCompacted()


# --- COMMIT (and the primary's part of DECIDE) -----------------------------------------


class PartExecutor(Executor):
    """Runs one participant's part of a txn's branch: puts of keys this shard
    does not own are skipped (their owner applies them); deletes and ranges
    cover the owned slots, as they always do."""

    def put(self, p: PutRequest) -> PutResponse:
        if not slots.contains(self.owned, slots.slot_of(p.key, self.slot_count)):
            return PutResponse(self.new_rev)
        return super().put(p)


def run_part(ex: PartExecutor, t: TxnRequest, path: tuple[bool, ...]) -> TxnResponse:
    resp, _ = ex.run(t, list(path))
    assert isinstance(resp, TxnResponse)
    return resp


def check_path(t: TxnRequest, path: tuple[bool, ...]) -> None:
    """Raise ShardError unless path has one entry per txn on the way."""

    def used(op: TxnRequest, p: tuple[bool, ...]) -> int:
        if not p:
            raise ShardError("txn path too short")
        n = 1
        for sub in op.success if p[0] else op.failure:
            if isinstance(sub, TxnRequest):
                n += used(sub, p[n:])
        return n

    if used(t, path) != len(path):
        raise ShardError("txn path does not match the txn")


def is_part(req: object, lock: TxnLock) -> bool:
    """Whether a request may apply while `lock` is held: a step of the
    locked txn itself, or a RESOLVE or FORGET of any txn (they only read or
    write a record)."""
    if isinstance(req, TxnPart):
        return req.txn_id == lock.txn_id or req.phase in (TxnPhase.RESOLVE, TxnPhase.FORGET)
    return False


__all__ = [
    "PartExecutor",
    "TxnLock",
    "TxnRecord",
    "check_path",
    "decode_lock",
    "decode_record",
    "encode_lock",
    "encode_record",
    "evaluate",
    "flat_compares",
    "flat_ops",
    "has_records",
    "is_part",
    "load_lock",
    "load_record",
    "overlaps",
    "run_part",
]

