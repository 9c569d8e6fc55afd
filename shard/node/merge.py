"""Merges (placement's MERGE operator): two shards on the same replicas
become one.

``prepare_merge()`` as the source's leader proposes a ``PrepareMerge``; the
frozen source then refuses reads and writes with WrongShard (the router
refreshes its map and retries) and proposes no closed timestamps, but still
serves watches (its history is final). ``commit_merge()`` as the target's
leader proposes a ``CommitMerge`` only once the local source replica is
frozen for it (placement has also seen every source replica report the
freeze, ``merge_target``). Every replica that applies the CommitMerge then
destroys its source replica (the merge loop, ``run``), keeping the slots'
data (the target's now); one that restarts before doing so destroys it when
it would host it (ReplicaSet.merged_away).
"""

from __future__ import annotations

import asyncio

from raft.core import ProposalDropped
from raft.runtime.host import GroupNotFound
from shard.codec import encode_command
from shard.errors import InvalidSplit, ServerBusy, ShardError, ShardNotFound
from shard.node.replica import ShardReplica
from shard.node.replicas import ReplicaSet
from shard.node.routing import RoutingChecks
from shard.node.state import NodeState
from shard.node.status import shard_info
from shard.statemachine import Applied
from shard.types import Command, CommitMerge, PrepareMerge, ShardInfo


class Merges:
    def __init__(self, state: NodeState, checks: RoutingChecks, replicas: ReplicaSet) -> None:
        self._s = state
        self._checks = checks
        self._replicas = replicas
        self._queue: asyncio.Queue[tuple[int, int, int]] = asyncio.Queue()

    def merge_target(self, shard_id: int) -> int:
        """The shard a hosted shard is frozen for (0: not frozen, not hosted)."""
        rep = self._s.replicas.get(shard_id)
        m = rep.sm.merge_state if rep is not None else None
        return m.target if m is not None else 0

    def queue(self, target_id: int, index: int, source_id: int) -> None:
        """A replica applied a CommitMerge (ShardReplica's on_merge)."""
        self._queue.put_nowait((target_id, index, source_id))

    async def run(self) -> None:
        """Destroy the source of each merge applied here, once the target's
        apply batch (which marks the source merged and owns its slots) is on
        disk. destroy_replica keeps the slots the target now owns."""
        s = self._s
        while True:
            target_id, index, source_id = await self._queue.get()
            try:
                await s.host.wait_applied(target_id, index)
            except GroupNotFound:
                continue
            if s.host.crash_hook is not None:
                s.host.crash_hook("merge_apply")  # the merge is on disk, its source not destroyed yet
            source = s.replicas.get(source_id)
            if source is not None:
                source.retired = True
            if source_id in s.replicas or source_id in s.host.group_ids():
                await self._replicas.destroy_replica(source_id)

    def _merge_pair(self, source_id: int, target_id: int) -> tuple[ShardReplica, ShardReplica]:
        """Both replicas of a merge, hosted here with the same voters and
        learners (the merge's precondition: the source's data is on exactly
        the target's nodes)."""
        s = self._s
        source, target = s.replicas.get(source_id), s.replicas.get(target_id)
        if source is None:
            raise ShardNotFound(source_id)
        if target is None:
            raise ShardNotFound(target_id)
        if source.sm.slot_count != target.sm.slot_count:
            raise InvalidSplit(f"shards {source_id} and {target_id} have different slot counts")
        cs, ct = s.host.status(source_id).conf_state, s.host.status(target_id).conf_state
        if (sorted(cs.voters), sorted(cs.learners)) != (sorted(ct.voters), sorted(ct.learners)):
            raise InvalidSplit(
                f"shards {source_id} and {target_id} have different replicas "
                f"({sorted(cs.voters)}/{sorted(cs.learners)} vs {sorted(ct.voters)}/{sorted(ct.learners)}): move them onto the same nodes first"
            )
        return source, target

    async def prepare_merge(self, source_id: int, target_id: int, *, timeout_s: float | None = None) -> ShardInfo:
        """As the source shard's leader, freeze it for a merge into target_id
        (a PrepareMerge in its log). Already frozen for that target: nothing
        to do."""
        s = self._s
        source, target = self._merge_pair(source_id, target_id)
        m = source.sm.merge_state
        if m is not None:
            if m.target != target_id:
                raise InvalidSplit(f"shard {source_id} is frozen for a merge into shard {m.target}, not {target_id}")
            return shard_info(s, source_id)
        if not s.is_leader(source_id):
            raise self._checks.not_leader(source_id)
        timeout = timeout_s if timeout_s is not None else s.cfg.propose_timeout_s
        stamp = s.stamp()
        epoch = (target.epoch.conf_version, target.epoch.slot_version)
        cmd = Command(PrepareMerge(target_id, epoch), stamp=stamp, closed_ts=stamp - 1)
        applied = await self._propose(source_id, cmd, timeout, "the merge's freeze")
        if isinstance(applied.outcome, ShardError):
            raise applied.outcome
        return shard_info(s, source_id)

    async def commit_merge(self, target_id: int, source_id: int, *, timeout_s: float | None = None) -> ShardInfo:
        """As the target shard's leader, take over the frozen source (a
        CommitMerge in its log). Proposed only once the local source replica
        applied its PrepareMerge (placement also waits for every source
        replica to report the freeze before it asks; see
        ShardStateMachine._commit_merge for why that makes the apply safe on
        every replica). Already merged: nothing to do."""
        s = self._s
        tgt = s.replicas.get(target_id)
        if tgt is None:
            raise ShardNotFound(target_id)
        if source_id in tgt.sm.merged_sources:
            return shard_info(s, target_id)
        source, target = self._merge_pair(source_id, target_id)
        m = source.sm.merge_state
        if m is None or m.target != target_id:
            raise ServerBusy(f"shard {source_id} is not frozen for a merge into shard {target_id} on this node yet", 200)
        if not s.is_leader(target_id):
            raise self._checks.not_leader(target_id)
        timeout = timeout_s if timeout_s is not None else s.cfg.propose_timeout_s
        stamp = s.stamp()
        ep = (source.epoch.conf_version, source.epoch.slot_version)
        cmd = Command(CommitMerge(source_id, m.index, m.revision, ep), stamp=stamp, closed_ts=stamp - 1)
        applied = await self._propose(target_id, cmd, timeout, "the merge")
        if isinstance(applied.outcome, ShardError):
            raise applied.outcome
        return shard_info(s, target_id)

    async def _propose(self, shard_id: int, cmd: Command, timeout_s: float, what: str) -> Applied:
        try:
            applied = await self._s.host.propose(shard_id, encode_command(cmd), timeout_s=timeout_s)
        except (ProposalDropped, GroupNotFound):
            raise self._checks.not_leader(shard_id) from None
        except TimeoutError:
            raise ServerBusy(f"{what} was not applied in time: its outcome is unknown", 100, outcome_unknown=True) from None
        assert isinstance(applied, Applied), applied
        return applied
