"""The destroy pass: which of this node's replicas are no longer wanted.

A replica is destroyed (StoreNode.destroy_replica: its group, meta and the
data of its slots) once BOTH the map no longer lists this node for the
shard, at a conf_version at least the replica's own, AND the replica's own
applied configuration no longer has this node as voter or learner, or (a
replica removed while its store was down, which never hears of its
removal) a linearizable map read shows the shard without this node at a
newer conf_version than the replica's own, or (a replica left behind by a
move before its shard was merged away) a linearizable map read lists the
shard as retired and no shard hosted here owns any of its slots. The map
alone could be stale (a lagging placement server's), and a replica still
in its group's configuration may hold acknowledged entries; a destroyed
replica leaves a tombstone with its conf_version, so only a map entry at a
newer conf_version (a re-add) hosts it again.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc.aio

from flotillapb import placement_pb2 as ppb
from raft.runtime.host import GroupHost
from shard import slots
from shard.agent.config import AgentConfig
from shard.agent.hosting import MapFollower
from shard.agent.link import PlacementClient, PlacementUnavailable
from shard.node import StoreNode

log = logging.getLogger(__name__)

DESTROY_SWEEP_S = 60.0
"""A destroy pass runs at least this often even if neither the map nor the replicas changed."""


class DestroyPass:
    def __init__(
        self, node: StoreNode, host: GroupHost, client: PlacementClient, view: MapFollower, cfg: AgentConfig, hosting: asyncio.Lock
    ) -> None:
        self.node = node
        self.host = host
        self.client = client
        self.view = view
        self.cfg = cfg
        self._hosting = hosting
        self.destroyed: list[int] = []
        """Shards whose replica this agent destroyed (in order; for tests and logs)."""

    def unwanted(self, shard_id: int) -> bool:
        """Whether this node's replica of shard_id is to be destroyed: the map
        (at the replica's conf_version or newer) does not list this node, and
        the replica's applied configuration, which it has (a snapshot or the
        bootstrap gave it one), does not have it either."""
        s = self.view.shards.get(shard_id)
        if s is None or self.view.assigned(s) or not self.node.hosts(shard_id):
            return False
        cs = self.host.status(shard_id).conf_state
        members = (*cs.voters, *cs.learners)
        if not members or self.node.node_id in members:
            return False
        return s.descriptor.epoch.conf_version >= self.node.shard_info(shard_id).epoch.conf_version

    def left_behind(self, shard_id: int, info: ppb.ShardInfo | None = None) -> bool:
        """Whether this node's replica of shard_id may have been removed while
        it could not hear of it (its store was down; the group no longer
        sends it anything, so its own configuration still has it): the map
        (the watched one, or `info` from another read) lists the shard
        without this node at a newer conf_version than the replica's. From
        the watched map only a hint: see _fresh_map."""
        s = self.view.shards.get(shard_id) if info is None else info
        if s is None or self.view.assigned(s) or not self.node.hosts(shard_id):
            return False
        return s.descriptor.epoch.conf_version > self.node.shard_info(shard_id).epoch.conf_version

    def stray_merged(self, shard_id: int, m: ppb.ClusterMap | None = None) -> bool:
        """Whether this node's replica of shard_id belongs to a shard merged
        away (by the watched map, or `m` from another read) that the merge
        did not destroy here: a replica left behind by a move before the
        merge, removed from the group while its node was up or down. The
        merge itself destroys the replicas on the target's nodes (once the
        target's CommitMerge is applied there, which gives it the slots), so
        a replica is a stray only if no other shard hosted here owns, in the
        map, any of its slots. From the watched map only a hint: see
        _fresh_map."""
        retired = self.view.retired if m is None else set(m.retired_shards)
        if shard_id not in retired or not self.node.hosts(shard_id):
            return False
        shards = self.view.shards if m is None else {x.descriptor.shard_id: x for x in m.shards}
        mine = self.node.shard_info(shard_id).slot_ranges
        for sid in self.node.shard_ids():
            s = shards.get(sid)
            if sid != shard_id and s is not None and slots.intersect(mine, slots.normalize((r.start, r.end) for r in s.descriptor.slots)):
                return False
        return True

    async def _fresh_map(self) -> ppb.ClusterMap | None:
        """A linearizable map read from the placement leader (None if none
        answers): left_behind and stray_merged are acted on only when this
        map confirms them, since the watched map may come from a lagging
        placement server. Safe to destroy then. Left behind: the group
        committed a configuration without this node after the replica's own,
        and a later re-add makes it a learner first, which placement promotes
        only after the map shows it (so a fresh map without it means it is no
        voter). Merged away: the shard's group is frozen for good and its
        slots belong to the target, which is not hosted here."""
        try:
            resp = await self.client.call("GetMap", ppb.GetMapRequest(linearizable=True))
        except (grpc.aio.AioRpcError, PlacementUnavailable):
            return None
        return resp.map

    async def run(self) -> None:
        seen: tuple[int, int] = (-1, -1)
        swept = time.monotonic()
        while True:
            await asyncio.sleep(self.cfg.destroy_check_interval_s)
            # The checks read the watched map and the replicas hosted here:
            # with neither changed they find what they found last time, so an
            # idle node does no work per shard (a full pass every
            # DESTROY_SWEEP_S all the same: a conf change may land first).
            now = time.monotonic()
            state = (self.view.map_version, self.node.replica_changes())
            if state == seen and now - swept < DESTROY_SWEEP_S:
                continue
            seen, swept = state, now
            if not any(self.unwanted(sid) or self.left_behind(sid) or self.stray_merged(sid) for sid in self.node.shard_ids()):
                continue
            async with self._hosting:
                fresh: ppb.ClusterMap | None = None  # read once per pass, when needed
                for sid in self.node.shard_ids():
                    if self.unwanted(sid):
                        why = "removed from the group and the map"
                    elif self.left_behind(sid) or self.stray_merged(sid):
                        if fresh is None:
                            fresh = await self._fresh_map()
                            if fresh is None:
                                break
                        info = next((x for x in fresh.shards if x.descriptor.shard_id == sid), None)
                        if info is not None and self.left_behind(sid, info):
                            why = "removed from the group while it could not hear of it"
                        elif self.stray_merged(sid, fresh):
                            why = "left behind by a move before its shard was merged away"
                        else:
                            continue
                    else:
                        continue
                    log.info("node=%d destroying its replica of shard %d: %s", self.node.node_id, sid, why)
                    await self.node.destroy_replica(sid)
                    self.destroyed.append(sid)
