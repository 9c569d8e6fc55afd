"""GroupHost's group registry: hosting a replica (recovering it from the log
store, or bootstrapping a new group), removing one (with a tombstone), and
looking groups up."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from raft.core import ConfState, Config, EntryKind, ProposalDropped, RaftInvariantError, RawNode, Status, decode_conf_change
from raft.core.storage import Storage
from raft.runtime.group import Group, GroupNotFound, HostState
from raft.runtime.quiescence import LIVENESS_GROUP
from raft.runtime.smallrandom import SmallRandom
from raft.runtime.snapshots import restore_snapshot, remove_spooled
from raft.runtime.statemachine import StateMachine, release_staged
from raft.storage.logstore import is_bootstrap_snapshot

__all__ = ["GroupRegistry"]

log = logging.getLogger(__name__)


class GroupRegistry(HostState):
    # -- groups -----------------------------------------------------------------
    async def create_group(
        self, group_id: int, sm: StateMachine, *, bootstrap: ConfState | None = None, campaign: bool = False, candidate: int = 0
    ) -> None:
        """Host a replica of group_id. `bootstrap` is the initial configuration
        of a new group (ignored if the group already has state on disk); a
        replica joining an existing group passes none and learns it from the
        leader. If this call bootstrapped the group: `campaign` at once (give
        it to one replica of the group, its candidate), or wait quiet for
        `candidate`'s node to campaign (any message wakes the replica; so
        does that node's silence, as a quiet group's leader's)."""
        if group_id in self._groups or group_id == LIVENESS_GROUP:
            raise ValueError(f"group {group_id} already hosted or reserved")
        if self._store.tombstone(group_id) is not None:
            raise ValueError(f"group {group_id} was removed here (tombstone {self._store.tombstone(group_id)}): clear_tombstone first")
        storage = self._store.group(group_id)
        hs, cs = storage.initial_state()
        bootstrapped = False
        if bootstrap is not None and hs.is_empty and not cs.voters and not cs.learners and storage.last_index() == 0:
            bootstrapped = True
            # A snapshot at index 1 carrying the configuration (not index-0
            # metadata): a member added later is then sent a snapshot and
            # learns every voter (LogBatch.bootstrap). Not synced: it is the
            # same on every initial replica and made again if a crash loses
            # it, and the next sync of this log (before any vote or ack for
            # the group leaves) covers it too, one WAL. 1,000 groups created
            # together then cost no fsync each.
            lb0 = self._store.batch()
            lb0.bootstrap(group_id, bootstrap)
            await self._write_unsynced(lb0)
            storage = self._store.group(group_id)
        snap = storage.snapshot()
        if sm.applied_index() < snap.metadata.index:
            lb = self._store.batch()
            spooled: list[str] = []
            if is_bootstrap_snapshot(snap):
                # Crash between persisting the bootstrap and applying it: the
                # state machine must still say it is at the bootstrap index,
                # or a snapshot it sends would claim index 0 (compacted).
                sm.on_applied_index(snap.metadata.index, lb.wb)
            else:
                # Crash between persisting a received snapshot and restoring
                # the state machine from it: restore now, from the log
                # store's copy.
                restore_snapshot(sm, snap.data, snap.metadata.index, lb.wb, spooled)
            if bootstrapped:
                await self._write_unsynced(lb)
            else:
                await self._store.write(lb, sync=True)
            release_staged(sm)
            remove_spooled(spooled)
        node = RawNode(
            Config(
                id=self.node_id,
                election_ticks=self.cfg.election_ticks,
                heartbeat_ticks=self.cfg.heartbeat_ticks,
                applied=sm.applied_index(),
                max_inflight_msgs=self.cfg.max_inflight_msgs,
                max_size_per_msg=self.cfg.max_size_per_msg,
                pre_vote=self.cfg.pre_vote,
                check_quorum=self.cfg.check_quorum,
            ),
            storage,
            rng=SmallRandom(self._rng.getrandbits(64)),
            logger=logging.LoggerAdapter(logging.getLogger("raft.core"), {"group": group_id}),
        )
        self._replay_conf_changes(node, storage, snap.metadata.index, sm.applied_index())
        g = self._groups[group_id] = Group(group_id, node, storage, sm)
        if bootstrapped and not campaign and candidate and candidate != self.node_id:
            # Wait for the candidate instead of timing out and campaigning
            # too: 1,000 groups created together on a loaded host otherwise
            # split their votes over and over.
            g.quiet, g.quiet_peers = True, (candidate,)
            self._last_heard.setdefault(candidate, self._clock.monotonic())
            self._watched.update(g.quiet_peers)
            self._mark(group_id)
            return
        if campaign and bootstrapped:
            # The candidate of a new group campaigns soon, instead of every
            # replica waiting out a random election timeout; it waits quiet
            # for its turn, since the ticker starts at most
            # CAMPAIGNS_PER_TICK elections a tick (ticker.py): 1,000 groups
            # created in a second, all electing and heartbeating at once,
            # stalled a 2-core host's loops past the election timeout, and
            # check-quorum stepped the new leaders down again.
            g.quiet = True
            self._campaigns.append(group_id)
            self._ticker_wakeup.set()
            self._mark(group_id)
            return
        self._awake.add(group_id)
        self._ticker_wakeup.set()
        self._mark(group_id)

    async def _write_unsynced(self, lb: Any) -> None:
        """An unsynced write, inline when no write is in flight (as the ready
        loop does: no executor round trip, so creating many groups does not
        yield to the loop once per group), else queued behind those."""
        try:
            self._store.commit(lb, sync=False)
        except RaftInvariantError:
            await self._store.write(lb, sync=False)

    @staticmethod
    def _replay_conf_changes(node: RawNode, storage: Storage, snapshot_index: int, applied: int) -> None:
        """Give a restarted group the configuration it had applied. The core
        starts from the snapshot's configuration, and entries up to
        `applied` are not applied again (the state machine has them), so
        the conf changes between the two would be lost: a replica promoted
        after its last snapshot would come back a learner, one removed would
        come back a voter. etcd re-applies from the snapshot index instead."""
        hi = min(applied, storage.last_index())
        lo = max(snapshot_index + 1, storage.first_index())
        if hi < lo:
            return
        for e in storage.entries(lo, hi + 1):
            if e.kind == EntryKind.CONF_CHANGE:
                node.apply_conf_change(decode_conf_change(e.data))

    def group_ids(self) -> list[int]:
        return sorted(self._groups)

    def tombstone(self, group_id: int) -> int | None:
        """What remove_group left for a destroyed group (None: nothing)."""
        return self._store.tombstone(group_id)

    async def clear_tombstone(self, group_id: int) -> None:
        """Forget a destroyed group's tombstone, before hosting it again."""
        if self._store.tombstone(group_id) is not None:
            await self._store.clear_tombstone(group_id)

    async def remove_group(
        self, group_id: int, *, tombstone: int | None = None, extra_writes: Callable[[Any], None] | None = None
    ) -> None:
        """Stop hosting group_id and delete its Raft state (log, hard state,
        snapshot), leaving `tombstone` in its place if given (see
        LogBatch.remove_group); extra_writes adds the owner's own deletions
        to the same synced batch, so a crash leaves all or nothing.

        The group stops ticking and stepping at once (a message for it is
        then an unknown group's). The deletion waits for the ready round in
        flight, which may still persist or apply this group's last Ready:
        written before the deletion, never after it. Waiters get
        GroupNotFound; proposals already in the log are left to time out
        (their outcome is unknown: the group may still commit them).
        Idempotent: removing a group not hosted deletes what is on disk."""
        g = self._groups.pop(group_id, None)
        self._awake.discard(group_id)
        self._dirty.discard(group_id)
        if g is not None:
            if g.quiet:
                self._unwatch(g)
            self._fail_waiters(g)
        async with self._round_lock:
            lb = self._store.batch()
            lb.remove_group(group_id, tombstone=tombstone)
            if extra_writes is not None:
                extra_writes(lb.wb)
            await self._store.write(lb, sync=True)
        log.info("group=%d node=%d removed (tombstone=%s)", group_id, self.node_id, tombstone)

    def _fail_waiters(self, g: Group) -> None:
        gone = GroupNotFound(g.group_id)
        for seq in g.proposal_seqs:
            fut = self._pending.get(seq)
            if fut is not None and not fut.done():
                fut.set_exception(ProposalDropped(f"group {g.group_id} removed"))
        g.proposals, g.proposal_seqs = [], []
        readers: list[asyncio.Future[Any]] = [*g.read_waiters, *(w for ws in g.read_inflight.values() for w in ws), *(f for _, f in g.apply_waiters)]
        g.read_waiters, g.read_inflight, g.apply_waiters = [], {}, []
        for fut in readers:
            if not fut.done():
                fut.set_exception(gone)

    def set_peer(self, node_id: int, address: str) -> None:
        if node_id == self.node_id:
            return
        self._peers.add(node_id)
        self._transport.set_peer(node_id, address)

    def _group(self, group_id: int) -> Group:
        g = self._groups.get(group_id)
        if g is None:
            raise GroupNotFound(group_id)
        return g

    def status(self, group_id: int) -> Status:
        return self._group(group_id).node.status()

    def is_quiet(self, group_id: int) -> bool:
        return self._group(group_id).quiet

    def leader_of(self, group_id: int) -> int:
        return self._group(group_id).node.leader_id
