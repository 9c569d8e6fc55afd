"""Following the map and hosting what it assigns to this node.

Watches the map (WatchMap, from any placement server; again on error) and
hosts every shard the map assigns to this node: one still at its initial
epoch (1, 1) is bootstrapped with the map's replicas, exactly as every
other initial replica does; any other joins empty and learns its state and
configuration from the leader's snapshot. A replica is also created on
demand when a Raft message arrives for a group this node does not host and
the map says it should (GroupHost.on_unknown_group). The map also gives
every store node's address (Raft peers, NotLeader hints).
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc.aio

from flotillapb import placement_pb2 as ppb
from shard.agent.config import AgentConfig
from shard.agent.link import PlacementClient, short
from shard.node import StoreNode

log = logging.getLogger(__name__)

FULL_CHECK_S = 10.0
"""A map change looks at every shard of the map at least this often, else only at those it changed."""

_INITIAL_EPOCH = (1, 1)


class MapFollower:
    def __init__(self, node: StoreNode, client: PlacementClient, cfg: AgentConfig, hosting: asyncio.Lock) -> None:
        self.node = node
        self.client = client
        self.cfg = cfg
        self._hosting = hosting
        """Creating and destroying replicas never interleave."""
        self.slot_count = 0
        self.map_version = 0
        self.nodes: dict[int, ppb.NodeInfo] = {}
        self.shards: dict[int, ppb.ShardInfo] = {}
        self.retired: set[int] = set()
        """Shards merged away, by the watched map."""
        self._wanted: asyncio.Queue[int] = asyncio.Queue()
        self._queued: set[int] = set()
        self._checked_all = time.monotonic()

    async def watch_loop(self) -> None:
        while True:
            try:
                async for resp in self.client.watch_map():
                    self.on_map(resp)
            except grpc.aio.AioRpcError as exc:
                log.debug("node=%d map watch ended (%s); watching again", self.node.node_id, short(exc))
            await asyncio.sleep(self.cfg.retry_s)

    def on_map(self, resp: ppb.WatchMapResponse) -> None:
        if resp.HasField("full"):
            full = resp.full
            self.slot_count = full.slot_count
            self.nodes = {n.node_id: n for n in full.nodes}
            self.shards = {s.descriptor.shard_id: s for s in full.shards}
            self.retired = set(full.retired_shards)
        else:
            for n in resp.nodes:
                self.nodes[n.node_id] = n
            for s in resp.shards:
                self.shards[s.descriptor.shard_id] = s
            for sid in resp.removed_shards:
                self.shards.pop(sid, None)
                self.retired.add(sid)
        self.map_version = max(self.map_version, resp.map_version)
        for nid, n in self.nodes.items():
            if n.kind == ppb.STORE and n.address and nid != self.node.node_id and self.node.address_of(nid) != n.address:
                self.node.set_peer(nid, n.address)
        # A delta names the shards it changed: only those can be newly
        # assigned here (1,000 shards reported by their new leaders are 1,000
        # deltas; looking at every shard for each was a million checks).
        # Every FULL_CHECK_S all of them all the same (a shard whose hosting
        # was put off, e.g. its slots still overlapped a replica here).
        now = time.monotonic()
        full_check = resp.HasField("full") or now - self._checked_all >= FULL_CHECK_S
        if full_check:
            self._checked_all = now
        changed = list(self.shards.values()) if full_check else resp.shards
        for s in changed:
            sid = s.descriptor.shard_id
            if not self.node.hosts(sid) and self.assigned(s):
                self._want(sid)

    def assigned(self, s: ppb.ShardInfo) -> bool:
        """Does the map list this node among the shard's replicas?"""
        return any(r.node_id == self.node.node_id for r in s.descriptor.replicas)

    def _want(self, shard_id: int) -> None:
        if shard_id not in self._queued:
            self._queued.add(shard_id)
            self._wanted.put_nowait(shard_id)

    def on_unknown_group(self, group_id: int, from_node: int) -> None:
        """GroupHost.on_unknown_group: a message for a group not hosted here."""
        s = self.shards.get(group_id)
        if s is not None and self.assigned(s) and not self.node.hosts(group_id):
            self._want(group_id)

    async def create_loop(self) -> None:
        while True:
            sid = await self._wanted.get()
            self._queued.discard(sid)
            s = self.shards.get(sid)
            if s is None or not self.assigned(s) or self.node.hosts(sid) or not self.slot_count:
                continue
            d = s.descriptor
            epoch = (d.epoch.conf_version, d.epoch.slot_version)
            async with self._hosting:
                await self.node.host_shard(
                    sid,
                    slot_count=self.slot_count,
                    slot_ranges=tuple((r.start, r.end) for r in d.slots),
                    voters=[r.node_id for r in d.replicas if not r.learner],
                    learners=[r.node_id for r in d.replicas if r.learner],
                    bootstrap=epoch == _INITIAL_EPOCH,
                    conf_version=d.epoch.conf_version,
                )
