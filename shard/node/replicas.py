"""The node's replicas: creating them, destroying them, and the tombstones
and on-disk records that decide whether a shard may be hosted here.

Creation: ``add_shard`` (a static cluster's initial shards) and
``host_shard`` (the map's way in; the store agent calls it). ``host_shard``
does not host a shard whose slots a replica here still holds (one that
missed the split creating it): that replica's older log or snapshot would
overwrite them. Nor one merged away here before a restart: that one is
destroyed instead (``merged_away``).

Destruction: ``destroy_replica()`` deletes a replica the caller no longer
wants (the store agent decides: shard/agent/destroy.py): its Raft group,
meta and the data of its slots no other shard here holds, in one synced
batch, leaving a tombstone (its conf_version) in the log store;
``host_shard`` hosts it again only for a newer conf_version.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from raft.core import ConfState
from shard import keys, slots
from shard import snapshot as shard_snapshot
from shard.engine import scan
from shard.errors import ShardNotFound
from shard.node.closedts import ClosedTimestamps
from shard.node.replica import ShardReplica
from shard.node.state import NodeState
from shard.statemachine import ShardStateMachine
from shard.types import Event

log = logging.getLogger(__name__)


# What a shard's state machine asks the node (ShardStateMachine's group_conf
# and other_slots), as slotted callables: smaller than a closure with its
# cells, or a partial, and a store holds one of each per replica (issue #20).
class _OtherSlots:
    """The slots the node's other hosted shards own."""

    __slots__ = ("_s", "_shard_id")

    def __init__(self, state: NodeState, shard_id: int) -> None:
        self._s, self._shard_id = state, shard_id

    def __call__(self) -> slots.SlotRanges:
        out: slots.SlotRanges = ()
        for sid, rep in self._s.replicas.items():
            if sid != self._shard_id:
                out = slots.merge(out, rep.sm.slot_ranges)
        return out


class _GroupConf:
    """The voters and learners of the shard's Raft group, as the host sees them."""

    __slots__ = ("_s", "_shard_id")

    def __init__(self, state: NodeState, shard_id: int) -> None:
        self._s, self._shard_id = state, shard_id

    def __call__(self) -> tuple[Sequence[int], Sequence[int]]:
        cs = self._s.host.status(self._shard_id).conf_state
        return tuple(cs.voters), tuple(cs.learners)


class ReplicaSet:
    def __init__(self, state: NodeState, closed: ClosedTimestamps) -> None:
        self._s = state
        self._closed = closed
        self._destroying: set[int] = set()
        # Wired by the StoreNode: where each replica's applied splits, merges
        # and events go (shard/node/split.py, merge.py, leases.py).
        self.on_split: Callable[[int, int, int], None] | None = None
        self.on_merge: Callable[[int, int, int], None] | None = None
        self.on_events: Callable[[int, tuple[Event, ...]], None] | None = None

    # -- creation ----------------------------------------------------------------------
    def new_state_machine(
        self, shard_id: int, slot_count: int = slots.DEFAULT_SLOTS, slot_ranges: slots.SlotRanges | None = None
    ) -> ShardStateMachine:
        return ShardStateMachine(
            self._s.engine, shard_id, slot_count, slot_ranges, group_conf=self._group_conf(shard_id), other_slots=self._other_slots(shard_id)
        )

    async def add_shard(
        self,
        shard_id: int,
        *,
        voters: Sequence[int],
        slot_count: int = slots.DEFAULT_SLOTS,
        slot_ranges: slots.SlotRanges | None = None,
    ) -> None:
        """Host a replica of shard_id. voters, slot_count and slot_ranges
        describe a new shard; one with state on disk keeps its own."""
        if shard_id in self._s.replicas:
            raise ValueError(f"shard {shard_id} already hosted")
        sm = self.new_state_machine(shard_id, slot_count, slot_ranges)
        await self.host_replica(sm, ConfState(voters=tuple(voters)), candidate=self._candidate(shard_id, voters))

    def _other_slots(self, shard_id: int) -> Callable[[], slots.SlotRanges]:
        return _OtherSlots(self._s, shard_id)

    def _group_conf(self, shard_id: int) -> Callable[[], tuple[Sequence[int], Sequence[int]]]:
        return _GroupConf(self._s, shard_id)

    @staticmethod
    def _candidate(shard_id: int, voters: Sequence[int]) -> int:
        """The one initial voter of a new shard that campaigns at once (the
        others wait for it): the same choice on every replica, spread over
        the voters so that the initial leaders are too (0: no voters)."""
        vs = sorted(voters)
        return vs[shard_id % len(vs)] if vs else 0

    async def host_replica(self, sm: ShardStateMachine, bootstrap: ConfState | None, *, candidate: int = 0) -> None:
        """Create the replica's Raft group on the host (bootstrap: its
        initial configuration; None: from disk or the leader's snapshot;
        candidate: if this bootstrapped the group, the node that campaigns at
        once while the others wait for it)."""
        s = self._s
        shard_id = sm.shard_id
        rep = ShardReplica(sm, s.hlc.update, self.on_split, self.on_events)
        rep.on_merge = self.on_merge
        await s.host.create_group(shard_id, rep, bootstrap=bootstrap, campaign=candidate == s.node_id, candidate=candidate)
        # Known to the node only once its group exists (the loops ask the host about it).
        s.replicas[shard_id] = rep
        self._closed.track(shard_id)
        s.hlc.update(sm.readable_revision)
        created = s.created.pop(shard_id, None)
        if created is not None:
            created.set()

    async def host_shard(
        self,
        shard_id: int,
        *,
        slot_count: int,
        slot_ranges: slots.SlotRanges,
        voters: Sequence[int] = (),
        learners: Sequence[int] = (),
        bootstrap: bool,
        conf_version: int = 0,
    ) -> None:
        """Host a replica of a shard the map assigns to this node. bootstrap:
        one of the shard's initial replicas, which all start its group from
        the same configuration (voters, learners); else a replica joining an
        existing group, which learns everything from the leader's snapshot.

        A replica destroyed here (``destroy_replica``) is hosted again only
        for a map entry at a newer conf_version than the one it was destroyed
        at (a re-add): a stale map, or a late message of its old group, must
        not bring it back empty."""
        s = self._s
        if shard_id in s.replicas or shard_id in s.host.group_ids() or shard_id in self._destroying:
            return
        tomb = s.host.tombstone(shard_id)
        if tomb is not None:
            if conf_version <= tomb:
                log.info("node=%d shard=%d not hosted: destroyed here at conf_version %d, map says %d", s.node_id, shard_id, tomb, conf_version)
                return
            await s.host.clear_tombstone(shard_id)
            if shard_id in s.replicas or shard_id in s.host.group_ids():
                return
        if self.merged_away(shard_id):
            await self.destroy_replica(shard_id)  # merged before a restart, not destroyed yet
            return
        overlap = self._overlapping(shard_id, slot_ranges)
        if overlap:
            # A replica here still holds some of these slots: one that missed
            # the split creating this shard (TiKV does not create a peer whose
            # range overlaps another either). It applies the split and creates
            # this one itself, or installs a later snapshot and shrinks; the
            # map or the next message of this shard's group then retries. Now,
            # the lagging replica's log or an older snapshot of it would write
            # over this shard's newer data in those slots.
            log.debug("node=%d shard=%d not hosted yet: its slots overlap shard(s) %s here", s.node_id, shard_id, overlap)
            return
        sm = self.new_state_machine(shard_id, slot_count, slot_ranges)
        conf = ConfState(voters=tuple(voters), learners=tuple(learners)) if bootstrap else None
        await self.host_replica(sm, conf, candidate=self._candidate(shard_id, voters) if bootstrap else 0)
        log.info(
            "node=%d hosts shard=%d (%s) epoch=%s slots=%s",
            s.node_id, shard_id, "bootstrapped" if bootstrap else "from disk or the leader", sm.epoch, sm.slot_ranges,
        )

    def merged_away(self, shard_id: int) -> bool:
        """Does this node's engine say shard_id was merged into another shard
        (its target applied the CommitMerge here)? Such a replica is only
        destroyed, never served again."""
        raw = self._s.engine.get(keys.merge_key(shard_id))
        return raw is not None and keys.decode_merge(raw).committed

    # -- destruction -------------------------------------------------------------------
    async def destroy_replica(self, shard_id: int) -> None:
        """Delete this node's replica of shard_id: its Raft group (log, hard
        state), its meta records, and the data of its slots, except slots
        another shard on this node owns (a shard split off it that this node
        hosts, or the target of a merge). A tombstone with the replica's
        conf_version stays behind (``host_shard`` then refuses to bring it
        back at that or an older configuration).

        The caller decides that the replica is no longer wanted (the store
        agent: not in the map, and not in its group's applied configuration).
        Everything is one synced WriteBatch, so a crash leaves the replica
        whole (destroyed again later) or gone; calling it again, or for a
        shard not hosted, deletes whatever is left and keeps the tombstone."""
        s = self._s
        rep = s.replicas.pop(shard_id, None)
        self._destroying.add(shard_id)
        try:
            self._closed.forget(shard_id)
            s.request_counts.pop(shard_id, None)
            s.created.pop(shard_id, None)
            if rep is not None:
                ranges, conf_version = rep.sm.slot_ranges, rep.epoch.conf_version
                for w in list(rep.watchers):
                    w.cancel_routing(ShardNotFound(shard_id))
            else:
                ranges, conf_version = self._on_disk(shard_id)
            tomb = max(conf_version, s.host.tombstone(shard_id) or 0)
            doomed = slots.subtract(slots.normalize(ranges), self._slots_elsewhere(shard_id))
            await s.host.remove_group(
                shard_id, tombstone=tomb, extra_writes=lambda wb: shard_snapshot.clear(wb, shard_id, doomed)
            )
        finally:
            self._destroying.discard(shard_id)
        log.info("node=%d destroyed its replica of shard=%d (conf_version %d); slots deleted: %s", s.node_id, shard_id, tomb, doomed)

    # -- what is here --------------------------------------------------------------------
    def _overlapping(self, shard_id: int, slot_ranges: slots.SlotRanges) -> list[int]:
        """Hosted shards other than shard_id holding any of slot_ranges."""
        wanted = slots.normalize(slot_ranges)
        # A plain test of each pair of ranges (half-open): slots.intersect
        # builds the intersection, and hosting 1,000 shards asks this of
        # every replica for each.
        return [
            sid
            for sid, rep in self._s.replicas.items()
            if sid != shard_id and any(lo < hi and lo < w_hi and w_lo < hi for lo, hi in rep.sm.slot_ranges for w_lo, w_hi in wanted)
        ]

    def _on_disk(self, shard_id: int) -> tuple[slots.SlotRanges, int]:
        """(slot ranges, conf_version) of a replica not hosted, from its meta ((), 0 if none)."""
        raw = self._s.engine.get(keys.slots_key(shard_id))
        ranges = keys.decode_slots(raw)[1] if raw is not None else ()
        raw = self._s.engine.get(keys.epoch_key(shard_id))
        return ranges, keys.decode_epoch(raw)[0] if raw is not None else 0

    def _slots_elsewhere(self, shard_id: int) -> slots.SlotRanges:
        """The slots every other shard of this node owns: hosted, or with
        meta on disk (a split's new shard not opened yet)."""
        out: slots.SlotRanges = ()
        for sid, rep in self._s.replicas.items():
            if sid != shard_id:
                out = slots.merge(out, rep.sm.slot_ranges)
        for sid in self.shards_on_disk():
            if sid != shard_id and sid not in self._s.replicas:
                out = slots.merge(out, self._on_disk(sid)[0])
        return out

    def check_stored_format(self) -> None:
        """Refuse (CodecError, saying why) a node whose stored shards this
        build cannot read, before any is hosted: a STATE record of the
        pre-#17 revision encoding (shard/keys.py, STATE_VERSION)."""
        for k, raw in scan(self._s.engine, keys.META_PREFIX, keys.META_PREFIX + b"\xff" * 9):
            if keys.shard_of_meta_key(k)[1] == keys.MetaKind.STATE:
                keys.decode_state(raw)

    def shards_on_disk(self) -> list[int]:
        """Shards with a replica's state on this node (slots recorded)."""
        out = []
        for k, _ in scan(self._s.engine, keys.META_PREFIX, keys.META_PREFIX + b"\xff" * 9):
            shard_id, kind = keys.shard_of_meta_key(k)
            if kind == keys.MetaKind.SLOTS:
                out.append(shard_id)
        return out
