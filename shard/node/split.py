"""Splits: a shard's slots divided between it and a new Raft group on the
same replicas (no data moved).

``split()`` proposes a ``Split`` in the shard's log. Every replica, when it
applies it, queues the creation of the new shard's replica; the split loop
(``run``) creates it once the apply batch is on disk, with a Raft group
bootstrapped at index 0 from the conf state recorded in the new shard's
meta (the parent's at the split entry), so its initial log is the same on
every replica. At restart, ``open_split_shards`` hosts every shard whose
meta says a split created it.
"""

from __future__ import annotations

import asyncio
import logging

from raft.core import ConfState, ProposalDropped
from raft.runtime.host import GroupNotFound
from shard import keys, slots
from shard.codec import encode_command
from shard.engine import KvEngine, scan
from shard.errors import InvalidSplit, ServerBusy, ShardError, ShardNotFound
from shard.node.replicas import ReplicaSet
from shard.node.routing import RoutingChecks
from shard.node.state import NodeState
from shard.node.status import shard_info
from shard.statemachine import Applied
from shard.types import Command, ShardInfo, Split

log = logging.getLogger(__name__)


def find_split_shards(engine: KvEngine) -> list[int]:
    """Ids of the shards whose meta on this node says a split created them."""
    out = []
    for k, _ in scan(engine, keys.META_PREFIX, keys.META_PREFIX + b"\xff" * 9):
        shard_id, kind = keys.shard_of_meta_key(k)
        if kind == keys.MetaKind.GROUP:
            out.append(shard_id)
    return out


class Splits:
    def __init__(self, state: NodeState, checks: RoutingChecks, replicas: ReplicaSet) -> None:
        self._s = state
        self._checks = checks
        self._replicas = replicas
        self._queue: asyncio.Queue[tuple[int, int, int]] = asyncio.Queue()

    async def split(
        self, shard_id: int, new_shard_id: int, split_slot: int, *, timeout_s: float | None = None
    ) -> tuple[ShardInfo, ShardInfo]:
        """As the shard's leader, split it: the slots >= split_slot go to a
        new shard new_shard_id with the same replicas. Returns both shards'
        descriptors once the split is applied here and the new shard's
        replica is hosted here."""
        s = self._s
        rep = s.replicas.get(shard_id)
        if rep is None:
            raise ShardNotFound(shard_id)
        if new_shard_id in s.replicas or new_shard_id == 0:
            raise InvalidSplit(f"shard {new_shard_id} exists here already (or is 0)")
        ranges = rep.sm.slot_ranges
        moved = slots.split(ranges, split_slot)[1]
        if not moved or moved == ranges:
            raise InvalidSplit(f"slot {split_slot} does not divide the shard's slots {ranges}")
        if not s.is_leader(shard_id):
            raise self._checks.not_leader(shard_id)
        timeout = timeout_s if timeout_s is not None else s.cfg.propose_timeout_s
        stamp = s.stamp()
        cmd = Command(Split(new_shard_id, moved), stamp=stamp, closed_ts=stamp - 1)
        try:
            applied = await s.host.propose(shard_id, encode_command(cmd), timeout_s=timeout)
        except ProposalDropped:
            raise self._checks.not_leader(shard_id) from None
        except TimeoutError:
            raise ServerBusy("the split was not applied in time: its outcome is unknown", 100, outcome_unknown=True) from None
        assert isinstance(applied, Applied), applied
        if isinstance(applied.outcome, ShardError):
            raise applied.outcome
        if new_shard_id not in s.replicas:
            created = s.created.setdefault(new_shard_id, asyncio.Event())
            async with asyncio.timeout(timeout):
                await created.wait()
        return shard_info(s, shard_id), shard_info(s, new_shard_id)

    def queue(self, parent_id: int, index: int, new_shard_id: int) -> None:
        """A replica applied a split (ShardReplica's on_split)."""
        self._queue.put_nowait((parent_id, index, new_shard_id))

    async def open_split_shards(self) -> list[int]:
        """Host every shard a split created on this node (found by its meta)
        that is not hosted yet: at restart, and after a crash between a
        split's apply and the creation of the new group."""
        opened = []
        for shard_id in find_split_shards(self._s.engine):
            if self._replicas.merged_away(shard_id):
                await self._replicas.destroy_replica(shard_id)  # merged before a restart, not destroyed yet
                continue
            if shard_id not in self._s.replicas:
                await self._open_split_shard(shard_id)
                opened.append(shard_id)
        return opened

    async def _open_split_shard(self, shard_id: int) -> None:
        s = self._s
        if s.host.tombstone(shard_id) is not None:
            # Destroyed here already (a stale split entry replayed): never back empty.
            log.warning("node=%d split shard=%d not opened: destroyed here (tombstone)", s.node_id, shard_id)
            return
        sm = self._replicas.new_state_machine(shard_id)
        conf = sm.bootstrap_conf
        if conf is None:
            raise AssertionError(f"shard {shard_id} has no bootstrap group record")
        voters, learners = conf
        await self._replicas.host_replica(sm, ConfState(voters=voters, learners=learners))
        log.info("node=%d hosts split shard=%d epoch=%s slots=%s voters=%s", s.node_id, shard_id, sm.epoch, sm.slot_ranges, voters)

    async def run(self) -> None:
        """Open the new shard of each split applied here, once it is on disk."""
        s = self._s
        while True:
            parent_id, index, new_shard_id = await self._queue.get()
            # The new shard's meta is in the apply batch of the split entry:
            # open it once that batch is written.
            if parent_id not in s.replicas:
                continue  # destroyed meanwhile: its split's new shard is not ours to open
            try:
                await s.host.wait_applied(parent_id, index)
            except GroupNotFound:
                continue
            if s.host.crash_hook is not None:
                s.host.crash_hook("split_apply")  # the split is on disk, its new shard not yet open
            if new_shard_id not in s.replicas:
                await self._open_split_shard(new_shard_id)
