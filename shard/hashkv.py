"""The hash of one shard replica's MVCC state up to a revision (pure).

What ``StoreAdmin.HashKV`` answers, so the replicas of a shard can be
compared (a replica whose disk or apply went wrong hashes differently). It
is etcd's HashByRev over one shard:

- every version (MVCC record, tombstones included) of every key in the
  shard's slots with compact_revision < mod_revision <= revision;
- for each key, the version compaction at compact_revision keeps (the
  latest one <= compact_revision, unless it is a tombstone below it;
  shard/mvcc.py ``compact``), whether or not this replica has applied the
  compaction physically yet: so two healthy replicas agree even while one
  of them is still pruning;
- in storage order (slot, key, newest version first), each as its storage
  key and record bytes (shard/keys.py: key, revision, create revision,
  version, lease, value, tombstone flag), then the compact revision as 8
  big-endian bytes.

The hash is CRC-32 (zlib's, IEEE; etcd uses CRC-32C, which the standard
library has not): a Flotilla hash compares only with Flotilla hashes of the
same shard at the same revision and compact revision.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

from shard import keys, slots
from shard.engine import KvReader, scan

_U64 = 8


def records(view: KvReader, ranges: slots.SlotRanges) -> Iterator[tuple[bytes, bytes]]:
    """Every MVCC record of the slots, in storage order."""
    for s in slots.iter_slots(ranges):
        yield from scan(view, keys.data_prefix(s), keys.data_slot_end(s))


class KvHash:
    """Feed the records of ``records()`` in order; ``result()`` is the hash."""

    __slots__ = ("revision", "compact_revision", "_crc", "_key_end", "_kept_done", "versions")

    def __init__(self, revision: int, compact_revision: int) -> None:
        self.revision = revision
        self.compact_revision = compact_revision
        self._crc = 0
        self._key_end = b""
        self._kept_done = False
        self.versions = 0
        """Records hashed so far."""

    def add(self, storage_key: bytes, raw: bytes) -> None:
        rev = keys.revision_of(storage_key)
        end = keys.key_end_of(storage_key)
        if end != self._key_end:  # the first (newest) version of a new key
            self._key_end = end
            self._kept_done = False
        if rev > self.revision:
            return
        if rev <= self.compact_revision:
            if self._kept_done:
                return  # older than the version compaction keeps
            self._kept_done = True
            if keys.is_tombstone(raw) and rev < self.compact_revision:
                return
        self._crc = zlib.crc32(storage_key, self._crc)
        self._crc = zlib.crc32(raw, self._crc)
        self.versions += 1

    def result(self) -> int:
        return zlib.crc32(self.compact_revision.to_bytes(_U64, "big"), self._crc)


def hash_shard(view: KvReader, ranges: slots.SlotRanges, revision: int, compact_revision: int) -> tuple[int, int]:
    """(hash, versions hashed) of the slots at revision, in one go."""
    h = KvHash(revision, compact_revision)
    for k, v in records(view, ranges):
        h.add(k, v)
    return h.result(), h.versions
