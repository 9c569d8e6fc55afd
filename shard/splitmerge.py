"""Applying the entries that change a shard's slots (pure): ``Split``, and a
merge's ``PrepareMerge`` (in the source's log) and ``CommitMerge`` (in the
target's). Each works on the shard's meta (shard/meta.py) and dedup table
(shard/dedup.py) and stages its records into the apply batch.

A frozen source applies nothing after its PrepareMerge (shard/statemachine.py
answers every later entry SlotNotOwned, with no effect at all), so its
final state is the same on every replica that applied the freeze, and a
CommitMerge can read it from the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from raft.core.errors import RaftInvariantError
from shard import keys, slots
from shard.dedup import DedupTable
from shard.errors import InvalidCommand, InvalidSplit
from shard.reader import live_totals
from shard.types import AckResponse, CommitMerge, PrepareMerge, Split

if TYPE_CHECKING:
    from shard.engine import StagedView
    from shard.meta import ShardMeta

GroupConf = Callable[[], tuple[Sequence[int], Sequence[int]]]


class MergeNotReady(RaftInvariantError):
    """A CommitMerge reached a replica whose local copy of the source shard
    has not applied its PrepareMerge at the named index. Taking over the
    slots then would serve data the source may still be missing, and
    skipping the entry would make this replica diverge from the others:
    fail-stop instead (the runtime ends the process). The store node never
    proposes a CommitMerge before every source replica reported its freeze
    (placement confirms it), so this is a broken precondition, not a race."""


def apply_split(
    meta: ShardMeta, dedup: DedupTable, req: Split, view: StagedView, group_conf: GroupConf | None
) -> AckResponse:
    """Give the slots `moved` to shard new_shard_id. Their data stays where
    it is; the new shard's meta starts as a copy of this one's (revision,
    compact revision, closed timestamp, dedup table; applied index 0), so
    a replica of it opened on this node continues the same history. This
    shard's slot_version grows by one and the new shard starts at the
    same epoch; the new shard's meta records the group conf to bootstrap
    its Raft group with (group_conf: this group's, as of this entry).

    The live key count and size of the moved slots are counted by a scan
    here (their data is this shard's, so every replica counts the same):
    the new shard starts with them, and this shard keeps the rest. Where
    that subtraction cannot be trusted (this shard's figures unknown, or
    the new shard already hosted here, its data in the moved slots
    possibly newer than this shard's), this shard scans the slots it
    keeps instead, which only it writes."""
    moved = slots.normalize(req.moved)
    if (
        req.new_shard_id == meta.shard_id
        or req.new_shard_id == 0
        or req.new_shard_id in meta.children
        or not moved
        or not slots.is_subset(moved, meta.ranges)
        or slots.is_subset(meta.ranges, moved)
    ):
        raise InvalidSplit()
    new = req.new_shard_id
    meta.bump_slot_version(view)
    kept = slots.subtract(meta.ranges, moved)
    created = view.get(keys.slots_key(new)) is None
    if created:
        moved_stats = live_totals(view, moved, meta.slot_count)
        if meta.stats is not None:
            meta.stats = (meta.stats[0] - moved_stats[0], meta.stats[1] - moved_stats[1])
        st = keys.ShardState(0, meta.revision, meta.compact, meta.closed_ts)
        view.delete_range(keys.meta_prefix(new), keys.meta_end(new))
        view.put(keys.state_key(new), keys.encode_state(st))
        view.put(keys.stats_key(new), keys.encode_stats(*moved_stats))
        view.put(keys.slots_key(new), keys.encode_slots(meta.slot_count, moved))
        dedup.copy_to(new, view)
        view.put(keys.epoch_key(new), keys.encode_epoch(*meta.epoch_tuple()))
        voters, learners = group_conf() if group_conf is not None else ((), ())
        view.put(keys.group_key(new), keys.encode_group(tuple(voters), tuple(learners)))
    # else: this node already hosts the new shard (created from the map,
    # from a snapshot of its leader, while this replica lagged): its meta
    # is its own and newer; only this shard's side of the split applies.
    if not created or meta.stats is None:
        meta.stats = live_totals(view, kept, meta.slot_count)
    meta.stats_dirty = True
    view.put(keys.child_key(meta.shard_id, new), b"\x01")
    meta.children = (*meta.children, new)
    meta.ranges = kept
    meta.slots_dirty = True
    return AckResponse(meta.revision)


def apply_prepare_merge(meta: ShardMeta, req: PrepareMerge, view: StagedView) -> AckResponse:
    """Freeze this shard for a merge into req.target_shard_id: record the
    index and revision it froze at (its final state: nothing applied
    after this entry changes it), and bump slot_version so requests at
    the old epoch are refused."""
    if req.target_shard_id in (0, meta.shard_id):
        raise InvalidCommand(f"shard {meta.shard_id} cannot merge into shard {req.target_shard_id}")
    meta.merge = keys.MergeState(req.target_shard_id, meta.index, meta.revision)
    view.put(keys.merge_key(meta.shard_id), keys.encode_merge(meta.merge))
    meta.bump_slot_version(view)
    return AckResponse(meta.revision)


def apply_commit_merge(meta: ShardMeta, dedup: DedupTable, req: CommitMerge, view: StagedView) -> AckResponse:
    """Take over the frozen source shard req.source_shard_id. Its data is
    already in this node's engine under its slots, final since its
    PrepareMerge; its meta (slots, revisions, figures, dedup windows) is
    read from the engine too, and is the same on every replica because
    a frozen shard applies nothing after its freeze. So every replica
    whose local source froze at req.source_index computes the same
    result. One that did not raises MergeNotReady (fail-stop; see
    there). A second CommitMerge of the same source (placement sent the
    step again before it saw the first) is a no-op.

    The slots join this shard's; revision, compact revision and closed
    timestamp become the larger of the two (the source's writes all have
    revisions <= its final revision, so the next write here is above
    every event of both: watches continue in order); the dedup windows
    are merged per router id (DedupTable.absorb); the key count and size
    add up (unknown if either is); slot_version + 1. The source's MERGE
    record is marked committed, and this shard records the source as
    merged (the node then destroys the source's group, keeping its slots'
    data, which is now this shard's)."""
    src = req.source_shard_id
    if src in meta.merged:
        return AckResponse(meta.revision)
    raw = view.get(keys.merge_key(src))
    frozen = keys.decode_merge(raw) if raw is not None else None
    if frozen is None or frozen.target != meta.shard_id or frozen.index != req.source_index or frozen.committed:
        raise MergeNotReady(
            f"shard {meta.shard_id}: CommitMerge of shard {src} frozen at index {req.source_index}, "
            f"but the local shard {src} shows {frozen}"
        )
    raw_slots = view.get(keys.slots_key(src))
    raw_state = view.get(keys.state_key(src))
    if raw_slots is None or raw_state is None:
        raise MergeNotReady(f"shard {meta.shard_id}: merge source {src} has no slots or state here")
    _, src_ranges = keys.decode_slots(raw_slots)
    st = keys.decode_state(raw_state)
    raw_stats = view.get(keys.stats_key(src))
    if meta.stats is not None and raw_stats is not None:
        n, size = keys.decode_stats(raw_stats)
        meta.stats = (meta.stats[0] + n, meta.stats[1] + size)
    elif meta.stats is not None:
        meta.stats = None  # unknown until a split recomputes them
        view.delete(keys.stats_key(meta.shard_id))
    meta.stats_dirty = meta.stats is not None
    dedup.absorb(DedupTable.load(view, src), view)
    meta.ranges = slots.merge(meta.ranges, slots.normalize(src_ranges))
    meta.slots_dirty = True
    meta.revision = max(meta.revision, st.revision)
    meta.compact = max(meta.compact, st.compact_revision)
    meta.closed_ts = max(meta.closed_ts, st.closed_ts)
    meta.bump_slot_version(view)
    view.put(keys.merge_key(src), keys.encode_merge(keys.MergeState(frozen.target, frozen.index, frozen.revision, True)))
    view.put(keys.merged_key(meta.shard_id, src), b"\x01")
    meta.merged = meta.merged | {src}
    return AckResponse(meta.revision)
