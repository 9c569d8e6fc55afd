"""The per-shard HashKV (shard/hashkv.py): deterministic over equal states,
different when any version differs, bounded by the revision, and the same
before and after a compaction is physically applied (on MemoryEngine and
RocksEngine, through the conftest's shard fixture)."""

from __future__ import annotations

from shard import keys
from shard.engine import MemoryEngine
from shard.hashkv import KvHash, hash_shard, records
from shard.statemachine import ShardStateMachine
from shard.types import CompactionRequest

from typing import Any

ShardHarness = Any  # conftest.ShardHarness: new ones are made with type(shard)(engine, sm)
SHARD_ID, SLOTS = 7, 16  # as the shard fixture (conftest.py)


def _fill(s: ShardHarness) -> list[int]:
    revs = []
    for i in range(12):
        s.put(b"k%d" % (i % 3), b"v%d" % i)
        revs.append(s.sm.revision)
    s.delete(b"k1")
    revs.append(s.sm.revision)
    return revs


def _hash(s: ShardHarness, rev: int, compact: int | None = None) -> tuple[int, int]:
    return hash_shard(s.engine, s.sm.slot_ranges, rev, s.sm.compact_revision if compact is None else compact)


def test_equal_states_hash_equal_and_any_change_differs(shard: ShardHarness) -> None:
    _fill(shard)
    other = type(shard)(e := MemoryEngine(), ShardStateMachine(e, SHARD_ID, SLOTS))
    _fill(other)
    rev = shard.sm.revision
    assert rev == other.sm.revision
    h, n = _hash(shard, rev)
    assert (h, n) == _hash(other, rev) and n == 13  # 12 puts and a tombstone
    # A replica whose record differs by one byte of one value:
    k, v = next(iter(records(other.engine, other.sm.slot_ranges)))
    wb = other.engine.new_batch()
    wb.put(k, v[:-1] + bytes([v[-1] ^ 1]))
    other.engine.write(wb)
    assert _hash(other, rev)[0] != h


def test_revision_bounds_the_versions(shard: ShardHarness) -> None:
    revs = _fill(shard)
    hashes = {r: _hash(shard, r) for r in revs}
    assert [n for _, n in hashes.values()] == list(range(1, len(hashes) + 1))
    assert len({h for h, _ in hashes.values()}) == len(hashes)


def test_compaction_applied_or_not_hashes_the_same(shard: ShardHarness) -> None:
    revs = _fill(shard)
    at = revs[7]
    before = _hash(shard, shard.sm.revision, compact=at)  # as if compacted at `at`, not pruned yet
    shard.ok(CompactionRequest(at))
    assert shard.sm.compact_revision == at
    after = _hash(shard, shard.sm.revision)
    assert before == after
    assert after != _hash(shard, shard.sm.revision, compact=0)


def test_a_tombstone_below_the_compaction_is_not_hashed() -> None:
    h = KvHash(revision=100, compact_revision=50)
    tomb = keys.encode_mvcc(keys.MvccRecord(tombstone=True))
    h.add(keys.mvcc_key(0, b"a", 40), tomb)
    assert h.versions == 0
    h2 = KvHash(revision=100, compact_revision=40)
    h2.add(keys.mvcc_key(0, b"a", 40), tomb)  # at the compact revision itself: kept, as compaction keeps it
    assert h2.versions == 1
