"""ShardMeta: a shard's replicated meta as the apply step keeps it (pure).

The records of shard/keys.py that describe a shard rather than its keys:
SLOTS (slot count and ranges), STATE (applied index, revision, compact
revision, closed timestamp), EPOCH, STATS (live key count and size), GROUP
(the conf a split-created shard bootstraps with), CHILD (shards split off),
MERGE (this shard's freeze) and MERGED (sources taken over). ShardMeta holds
them in memory between applies and writes what changed into the apply
batch (``write``), the STATE record always.

The live key count and approximate live size (the sum of len(key) +
len(value) of the live keys) follow the applied events (``count``): a PUT
without prev_kv adds one key and len(key) + len(value); a PUT over a live
key adds len(value) - len(prev value); a DELETE takes away one key and
len(key) + len(prev value). A shard whose meta predates the figures has
them unknown (``stats`` None) until a split recomputes them: the apply step
never scans a whole shard by surprise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from shard import keys, slots
from shard.engine import scan
from shard.types import BOOTSTRAP_EPOCH, Epoch, Event, EventType

if TYPE_CHECKING:
    from shard.engine import KvReader, StagedView


_NONE_MERGED: frozenset[int] = frozenset()


class ShardMeta:
    """One shard's meta records, in memory (see the module docstring)."""

    __slots__ = (
        "shard_id",
        "slot_count",
        "ranges",
        "slots_dirty",
        "applied",
        "index",
        "revision",
        "compact",
        "closed_ts",
        "epoch",
        "stats",
        "stats_dirty",
        "bootstrap_conf",
        "children",
        "merge",
        "merged",
    )

    def __init__(self, shard_id: int, slot_count: int, ranges: slots.SlotRanges, slots_dirty: bool) -> None:
        self.shard_id = shard_id
        self.slot_count = slot_count
        self.ranges = ranges
        self.slots_dirty = slots_dirty
        """The SLOTS record is to be written with the next STATE."""
        self.applied = 0
        self.index = 0
        """The index of the entry being applied (the applied index between applies)."""
        self.revision = 0
        self.compact = 0
        self.closed_ts = 0
        self.epoch = BOOTSTRAP_EPOCH
        self.stats: tuple[int, int] | None = (0, 0)
        """(live key count, live size); None: unknown."""
        self.stats_dirty = False
        self.bootstrap_conf: tuple[tuple[int, ...], tuple[int, ...]] | None = None
        self.children: tuple[int, ...] = ()
        self.merge: keys.MergeState | None = None
        self.merged: frozenset[int] = _NONE_MERGED

    @classmethod
    def open(cls, reader: KvReader, shard_id: int, slot_count: int, slot_ranges: slots.SlotRanges | None) -> ShardMeta:
        """The shard's meta from the engine. slot_count and slot_ranges
        describe a new shard; a shard with state on disk keeps its own."""
        raw_slots = reader.get(keys.slots_key(shard_id))
        if raw_slots is not None:
            count, ranges = keys.decode_slots(raw_slots)
            meta = cls(shard_id, count, slots.normalize(ranges), False)
        else:
            if not 0 < slot_count <= slots.MAX_SLOTS:
                raise ValueError(f"slot count must be in 1..{slots.MAX_SLOTS}, got {slot_count}")
            ranges = slot_ranges if slot_ranges is not None else slots.full(slot_count)
            meta = cls(shard_id, slot_count, slots.normalize(ranges), True)
        meta.load(reader)
        return meta

    def load(self, reader: KvReader) -> None:
        """Read every record but SLOTS (kept as it is) from reader."""
        raw = reader.get(keys.state_key(self.shard_id))
        st = keys.decode_state(raw) if raw is not None else keys.ShardState()
        self.applied = st.applied
        self.revision = st.revision
        self.compact = st.compact_revision
        self.closed_ts = st.closed_ts
        raw_epoch = reader.get(keys.epoch_key(self.shard_id))
        self.epoch = Epoch(*keys.decode_epoch(raw_epoch)) if raw_epoch is not None else BOOTSTRAP_EPOCH
        raw_stats = reader.get(keys.stats_key(self.shard_id))
        # No STATS record: a new shard (no STATE either) starts from zero; a
        # shard from before the figures were kept has them unknown (None).
        self.stats = keys.decode_stats(raw_stats) if raw_stats is not None else (0, 0) if raw is None else None
        self.stats_dirty = raw_stats is None and raw is None
        raw_group = reader.get(keys.group_key(self.shard_id))
        self.bootstrap_conf = keys.decode_group(raw_group) if raw_group is not None else None
        cp = keys.child_prefix(self.shard_id)
        self.children = tuple(keys.child_of_key(k) for k, _ in scan(reader, cp, cp + b"\xff" * 8 + b"\x00"))
        raw_merge = reader.get(keys.merge_key(self.shard_id))
        self.merge = keys.decode_merge(raw_merge) if raw_merge is not None else None
        mp = keys.merged_prefix(self.shard_id)
        # MERGED keys end with the source's id, laid out as CHILD keys are.
        merged = [keys.child_of_key(k) for k, _ in scan(reader, mp, mp + b"\xff" * 8 + b"\x00")]
        self.merged = frozenset(merged) if merged else _NONE_MERGED  # an empty frozenset is 216 bytes per shard
        self.index = self.applied

    @property
    def readable_revision(self) -> int:
        """The highest revision a read may name: the state at any revision up
        to the closed timestamp is final once the closed timestamp applied."""
        return max(self.revision, self.closed_ts)

    def epoch_tuple(self) -> tuple[int, int]:
        return self.epoch.conf_version, self.epoch.slot_version

    def bump_conf_version(self, view: StagedView) -> None:
        self.epoch = Epoch(self.epoch.conf_version + 1, self.epoch.slot_version)
        view.put(keys.epoch_key(self.shard_id), keys.encode_epoch(*self.epoch_tuple()))

    def bump_slot_version(self, view: StagedView) -> None:
        self.epoch = Epoch(self.epoch.conf_version, self.epoch.slot_version + 1)
        view.put(keys.epoch_key(self.shard_id), keys.encode_epoch(*self.epoch_tuple()))

    def write(self, view: StagedView) -> None:
        """Stage the STATE record, and SLOTS and STATS if they changed."""
        st = keys.ShardState(self.applied, self.revision, self.compact, self.closed_ts)
        view.put(keys.state_key(self.shard_id), keys.encode_state(st))
        if self.slots_dirty:
            view.put(keys.slots_key(self.shard_id), keys.encode_slots(self.slot_count, self.ranges))
            self.slots_dirty = False
        if self.stats_dirty and self.stats is not None:
            view.put(keys.stats_key(self.shard_id), keys.encode_stats(*self.stats))
        self.stats_dirty = False

    def count(self, events: Sequence[Event]) -> None:
        """Follow the live key count and size through applied events."""
        if self.stats is None or not events:
            return
        n, size = self.stats
        for ev in events:
            prev = ev.prev_kv
            if ev.type == EventType.PUT:
                if prev is None:
                    n += 1
                    size += len(ev.kv.key) + len(ev.kv.value)
                else:
                    size += len(ev.kv.value) - len(prev.value)
            elif prev is not None:  # a DELETE carries the live version it removed
                n -= 1
                size -= len(prev.key) + len(prev.value)
        self.stats = (n, size)
        self.stats_dirty = True
