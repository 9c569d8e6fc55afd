"""Reads of a shard's applied state (pure): ``ShardReader`` serves etcd's
Range and the watch history at one moment; ``live_totals`` counts the live
keys of some slots by brute force (a split's figures)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from shard import keys, mvcc, mvcc_range, slots
from shard.errors import FutureRevision, RevisionCompacted
from shard.txn import DEFAULT_MAX_TXN_OPS, check_owned, validate_op
from shard.types import Event, RangeRequest, RangeResponse

if TYPE_CHECKING:
    from shard.engine import KvReader


@dataclass(frozen=True, slots=True)
class ShardReader:
    """The applied state of a shard at one moment, for reads: the store view
    plus the revisions and slots that go with it."""

    view: KvReader
    ranges: slots.SlotRanges
    slot_count: int
    revision: int
    compact_revision: int
    readable_revision: int
    max_txn_ops: int = DEFAULT_MAX_TXN_OPS

    def _check_read_revision(self, revision: int) -> None:
        if revision <= 0:  # etcd reads the current revision
            return
        if revision > self.readable_revision:
            raise FutureRevision()
        if revision < self.compact_revision:
            raise RevisionCompacted()

    def range(self, r: RangeRequest) -> RangeResponse:
        validate_op(r, self.max_txn_ops)
        check_owned(r, self.ranges, self.slot_count)
        self._check_read_revision(r.revision)
        at_rev = r.revision if r.revision > 0 else None
        return mvcc_range.evaluate(self.view, self.ranges, self.slot_count, r, at_rev, self.revision)

    def events_since(
        self, key: bytes, range_end: bytes, start_rev: int, limit: int = 0, prev_kv: bool = False
    ) -> tuple[Event, ...]:
        if start_rev < self.compact_revision:
            raise RevisionCompacted()
        return mvcc.events_since(self.view, self.ranges, self.slot_count, key, range_end, start_rev, limit, prev_kv)


def live_totals(view: KvReader, ranges: slots.SlotRanges, slot_count: int) -> tuple[int, int]:
    """(key count, sum of len(key) + len(value)) of the live keys of the
    given slots, by a scan of their MVCC records (ShardStateMachine keeps
    these figures; this is the brute force, used at a split)."""
    n = size = 0
    for ukey, _, raw in mvcc.visible_raw(view, slots.normalize(ranges), slot_count, b"\x00", b"\x00"):
        n += 1
        size += len(ukey) + keys.value_size(raw)
    return n, size
