"""The routing cache: slot -> shard -> replicas, leader and epoch.

The router holds no state of its own; this cache is what it believes about
the shard map, and it is corrected three ways:

- by the map source: ``StaticSource`` (the static layout of `flotilla server
  --shards N`, checked against the nodes' StoreAdmin.Status) or
  ``PlacementSource`` (placement's WatchMap stream);
- by the answers of store nodes (forward.py): NotLeader moves the leader,
  EpochNotMatch brings newer descriptors, StaleReadNotReady and every header
  bring closed timestamps;
- on demand: ``refresh()`` after WrongShard or ShardNotFound.

A descriptor replaces the cached one only if its epoch is not older
(slot_version, then conf_version), so a stale answer never rolls the map back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Protocol

import grpc
import grpc.aio

from flotillapb import placement_pb2 as ppb
from flotillapb import placement_pb2_grpc
from flotillapb import store_pb2 as spb
from flotillapb import store_pb2_grpc
from router import slots
from router.etcd_errors import EtcdError

log = logging.getLogger(__name__)

Epoch = tuple[int, int]  # (conf_version, slot_version)


def epoch_order(e: Epoch) -> tuple[int, int]:
    return (e[1], e[0])


@dataclass(frozen=True, slots=True)
class ShardRoute:
    shard_id: int
    epoch: Epoch
    slot_ranges: tuple[slots.SlotRange, ...]
    replicas: tuple[int, ...]  # node ids, voters first
    leader: int = 0  # node id; 0: unknown
    leader_term: int = 0

    def header(self) -> spb.RequestHeader:
        return spb.RequestHeader(
            shard_id=self.shard_id, epoch=spb.ShardEpoch(conf_version=self.epoch[0], slot_version=self.epoch[1])
        )


def route_from_pb(d: spb.ShardDescriptor, leader_term: int = 0) -> ShardRoute:
    return ShardRoute(
        shard_id=d.shard_id,
        epoch=(d.epoch.conf_version, d.epoch.slot_version),
        slot_ranges=tuple((r.start, r.end) for r in d.slots),
        replicas=tuple(r.node_id for r in d.replicas if not r.learner) + tuple(r.node_id for r in d.replicas if r.learner),
        leader=d.leader_node_id,
        leader_term=leader_term,
    )


class RoutingCache:
    def __init__(self, slot_count: int) -> None:
        self.slot_count = slot_count
        self.map_version = 0
        self._shards: dict[int, ShardRoute] = {}
        self._owner: list[int] = [0] * slot_count
        self._addresses: dict[int, str] = {}
        self._closed_ts: dict[int, dict[int, int]] = {}
        """shard -> node -> the closed timestamp that replica last reported"""
        self.source: MapSource | None = None

    # -- reading -----------------------------------------------------------------------
    def shards(self) -> list[ShardRoute]:
        return [self._shards[s] for s in sorted(self._shards)]

    def shard(self, shard_id: int) -> ShardRoute | None:
        return self._shards.get(shard_id)

    def address(self, node_id: int) -> str:
        return self._addresses.get(node_id, "")

    def shard_of_slot(self, slot: int) -> ShardRoute:
        sid = self._owner[slot]
        route = self._shards.get(sid)
        if route is None:
            raise EtcdError("no_leader", f"no shard is known to own slot {slot} yet")
        return route

    def shard_for_key(self, key: bytes) -> ShardRoute:
        return self.shard_of_slot(slots.slot_of(key, self.slot_count))

    def shards_for_range(self, key: bytes, range_end: bytes) -> list[ShardRoute]:
        """The shards that may hold keys of [key, range_end)."""
        one = slots.range_slot(key, range_end, self.slot_count)
        if one is not None:
            return [self.shard_of_slot(one)]
        if not self._shards:
            raise EtcdError("no_leader", "the router knows no shards yet")
        return self.shards()

    def closed_ts(self, shard_id: int) -> dict[int, int]:
        """node -> closed timestamp, of the shard's replicas heard from (the cache's own dict: read it only)."""
        return self._closed_ts.get(shard_id) or {}

    # -- updating ----------------------------------------------------------------------
    def set_address(self, node_id: int, address: str) -> None:
        if address:
            self._addresses[node_id] = address

    def update(self, route: ShardRoute) -> bool:
        """Take a descriptor unless the cache has a newer epoch. True if taken."""
        taken, old = self._put(route)
        if not taken:
            return False
        new = self._shards[route.shard_id]
        if old is None or old.slot_ranges != new.slot_ranges:
            self._reown(new.shard_id, () if old is None else old.slot_ranges, new.slot_ranges)
        return True

    def load(self, routes: Iterable[ShardRoute]) -> None:
        """A whole map: its descriptors (each taken unless the cache has a
        newer epoch) and nothing else (cached shards it lacks are dropped);
        slot owners are worked out once, not per shard."""
        routes = list(routes)
        known = {r.shard_id for r in routes}
        for sid in [s for s in self._shards if s not in known]:
            del self._shards[sid]
        for route in routes:
            self._put(route)
        self._rebuild_owners()

    def _put(self, route: ShardRoute) -> tuple[bool, ShardRoute | None]:
        """Store route unless older: (taken, the route it replaced or None)."""
        old = self._shards.get(route.shard_id)
        if old is not None:
            if epoch_order(route.epoch) < epoch_order(old.epoch):
                return False, old
            if not route.leader or (old.leader and route.leader_term < old.leader_term):
                if old.leader in route.replicas:
                    route = replace(route, leader=old.leader, leader_term=max(old.leader_term, route.leader_term))
        self._shards[route.shard_id] = route
        return True, old

    def remove(self, shard_id: int) -> None:
        old = self._shards.pop(shard_id, None)
        if old is not None:
            self._reown(shard_id, old.slot_ranges, ())

    def set_leader(self, shard_id: int, node_id: int, address: str = "", term: int = 0) -> None:
        self.set_address(node_id, address)
        old = self._shards.get(shard_id)
        if old is None or old.leader == node_id:
            return
        if term and term < old.leader_term:
            return
        replicas = old.replicas if node_id in old.replicas or not node_id else (*old.replicas, node_id)
        self._shards[shard_id] = replace(old, leader=node_id, replicas=replicas, leader_term=max(term, old.leader_term))

    def note_closed_ts(self, shard_id: int, node_id: int, ts: int) -> None:
        by_node = self._closed_ts.get(shard_id)
        if by_node is None:
            by_node = self._closed_ts[shard_id] = {}
        if ts > by_node.get(node_id, 0):
            by_node[node_id] = ts

    def _rebuild_owners(self) -> None:
        """Every slot to the shard of the newest epoch claiming it (after a
        split, the newer epoch owns the slot; equal epochs: the higher id)."""
        owner = [0] * self.slot_count
        for route in sorted(self._shards.values(), key=lambda r: (epoch_order(r.epoch), r.shard_id)):
            for lo, hi in route.slot_ranges:
                hi = min(hi, self.slot_count)
                if lo < hi:
                    owner[lo:hi] = [route.shard_id] * (hi - lo)
        self._owner = owner

    def _rank(self, shard_id: int) -> tuple[tuple[int, int], int]:
        route = self._shards.get(shard_id)
        return ((-1, -1), -1) if route is None else (epoch_order(route.epoch), shard_id)

    def _reown(self, shard_id: int, before: tuple[slots.SlotRange, ...], after: tuple[slots.SlotRange, ...]) -> None:
        """Slot owners after one shard's ranges went from `before` to
        `after` (the rule of _rebuild_owners, for those slots only: a delta
        costs its shard's slots, not the whole slot table)."""
        owner, n = self._owner, self.slot_count
        rank = self._rank(shard_id)
        for lo, hi in after:
            hi = min(hi, n)
            if lo >= hi:
                continue
            holders = set(owner[lo:hi])
            if all(h == shard_id or self._rank(h) <= rank for h in holders):
                owner[lo:hi] = [shard_id] * (hi - lo)
            else:
                for slot in range(lo, hi):
                    if self._rank(owner[slot]) <= rank:
                        owner[slot] = shard_id
        if not before:
            return
        kept: set[int] = set()
        for lo, hi in after:
            kept.update(range(lo, min(hi, n)))
        freed = [slot for lo, hi in before for slot in range(lo, min(hi, n)) if owner[slot] == shard_id and slot not in kept]
        if not freed:
            return
        for slot in freed:
            owner[slot] = 0
        lo_f, hi_f = min(freed), max(freed) + 1
        freed_set = set(freed)
        for route in self._shards.values():  # who else claims the freed slots (rare: a shrink or a removal)
            r = (epoch_order(route.epoch), route.shard_id)
            for lo, hi in route.slot_ranges:
                for slot in range(max(lo, lo_f), min(hi, hi_f)):
                    if slot in freed_set and self._rank(owner[slot]) < r:
                        owner[slot] = route.shard_id

    async def refresh(self) -> None:
        if self.source is not None:
            await self.source.refresh()


class MapSource(Protocol):
    async def run(self) -> None:
        """Keep the cache fresh until cancelled."""

    async def refresh(self) -> None:
        """Bring the cache up to date now (coalesced with one in flight)."""


class _Coalesced:
    """Runs one refresh at a time; callers arriving meanwhile share it."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    async def run(self, fn: object) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(fn())  # type: ignore[operator]
        await asyncio.shield(self._task)


class StaticSource:
    """The layout of `flotilla server --shards N` (shard i+1 owns the i-th of
    N equal slot ranges, every node a replica, epoch (1, 1)), kept true by
    asking every node for StoreAdmin.Status: leaders, epochs and splits."""

    def __init__(
        self,
        cache: RoutingCache,
        shard_count: int,
        peers: dict[int, str],
        *,
        poll_interval_s: float = 1.0,
        channel_for: object,
    ) -> None:
        self._cache = cache
        self._peers = dict(peers)
        self._poll_interval_s = poll_interval_s
        self._channel_for = channel_for
        self._once = _Coalesced()
        replicas = tuple(sorted(peers))
        for nid, address in peers.items():
            cache.set_address(nid, address)
        for i, ranges in enumerate(slots.equal_ranges(shard_count, cache.slot_count)):
            cache.update(ShardRoute(i + 1, (1, 1), ranges, replicas))

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # noqa: BLE001 - a node down is normal; the next poll retries
                log.debug("static map poll failed", exc_info=True)
            await asyncio.sleep(self._poll_interval_s)

    async def refresh(self) -> None:
        await self._once.run(self._poll)

    async def _poll(self) -> None:
        results = await asyncio.gather(*(self._status(nid, a) for nid, a in self._peers.items()), return_exceptions=True)
        for r in results:
            if isinstance(r, spb.StoreStatusResponse):
                self._take(r)

    async def _status(self, node_id: int, address: str) -> spb.StoreStatusResponse:
        stub = store_pb2_grpc.StoreAdminStub(self._channel_for(address))  # type: ignore[operator]
        return await stub.Status(spb.StoreStatusRequest(), timeout=2)

    def _take(self, r: spb.StoreStatusResponse) -> None:
        cache = self._cache
        for st in r.shards:
            d = st.descriptor
            for rep in d.replicas:
                cache.set_address(rep.node_id, rep.address)
            route = route_from_pb(d)
            route = replace(route, leader=r.node_id if st.is_leader else 0, leader_term=st.term if st.is_leader else 0)
            cache.update(route)
            if st.is_leader:
                cache.set_leader(d.shard_id, r.node_id, term=st.term)
            cache.note_closed_ts(d.shard_id, r.node_id, st.closed_ts)


class PlacementSource:
    """Follows placement's WatchMap stream: the whole map first, then changes.

    `address` is one placement server or several (`host:port,host:port`):
    any of them serves the map, so a broken stream moves on to the next one,
    asking for the changes since the map version it holds (it missed those
    while its stream was down or behind): the server answers with just those
    while it still keeps them (placement/watchhub.py), else with the whole
    map. A large whole map comes in parts (WatchMapResponse.more), taken
    together once the last arrived.
    The map's ROUTER nodes are kept apart (``routers``): MemberList lists them."""

    def __init__(self, cache: RoutingCache, address: str | list[str], *, channel_for: object) -> None:
        self._cache = cache
        addresses = [a.strip() for a in address.split(",")] if isinstance(address, str) else list(address)
        self._addresses = [a.partition("=")[2] if "=" in a else a for a in addresses if a]
        if not self._addresses:
            raise ValueError("placement map source needs at least one placement address")
        self._turn = 0
        self._channel_for = channel_for
        self._once = _Coalesced()
        self.ready = asyncio.Event()
        self.routers: dict[int, ppb.NodeInfo] = {}
        self._parts: ppb.ClusterMap | None = None
        self.fulls = 0
        """Whole maps taken (the first watch, a bootstrap, a watch again that the server could not answer with changes)."""
        self.deltas = 0
        """Changes taken."""

    @property
    def addresses(self) -> list[str]:
        return list(self._addresses)

    def _stub(self) -> placement_pb2_grpc.PlacementStub:
        address = self._addresses[self._turn % len(self._addresses)]
        return placement_pb2_grpc.PlacementStub(self._channel_for(address))  # type: ignore[operator]

    async def run(self) -> None:
        while True:
            # Back with a map: ask for the changes since it (the server sends
            # the whole map when it no longer has them all).
            since = self._cache.map_version if self.ready.is_set() else 0
            self._parts = None
            try:
                async for resp in self._stub().WatchMap(ppb.WatchMapRequest(since_map_version=since)):
                    self._take(resp)
            except grpc.aio.AioRpcError as exc:
                log.debug("placement WatchMap broke: %s", exc.code())
            self._turn += 1  # the next watch goes to the next placement server
            await asyncio.sleep(0.5)

    async def refresh(self) -> None:
        await self._once.run(self._get)

    async def _get(self) -> None:
        for _ in range(len(self._addresses)):
            try:
                r = await self._stub().GetMap(ppb.GetMapRequest(linearizable=False), timeout=2)
            except grpc.aio.AioRpcError as exc:
                log.debug("placement GetMap failed: %s", exc.code())
                self._turn += 1
                continue
            self._take_full(r.map)
            return

    def _take(self, resp: ppb.WatchMapResponse) -> None:
        if resp.HasField("full"):
            if resp.more or self._parts is not None:  # a whole map in parts: join them, take it at the last
                if self._parts is None:
                    self._parts = ppb.ClusterMap()
                self._parts.MergeFrom(resp.full)
                if resp.more:
                    return
                resp.full.CopyFrom(self._parts)
                self._parts = None
            self.fulls += 1
            self._take_full(resp.full)
            return
        self.deltas += 1
        cache = self._cache
        self._take_nodes(resp.nodes)
        self._take_shards(resp.shards)
        for sid in resp.removed_shards:
            cache.remove(sid)
        cache.map_version = max(cache.map_version, resp.map_version)

    def _take_full(self, m: ppb.ClusterMap) -> None:
        cache = self._cache
        if m.slot_count and m.slot_count != cache.slot_count:
            log.warning("placement map has %d slots, the router was started with %d", m.slot_count, cache.slot_count)
        self.routers = {}
        self._take_nodes(m.nodes)
        routes = []
        for s in m.shards:
            for rep in s.descriptor.replicas:
                cache.set_address(rep.node_id, rep.address)
            routes.append(route_from_pb(s.descriptor, s.leader_term))
        cache.load(routes)
        cache.map_version = max(cache.map_version, m.map_version)
        if m.shards:
            self.ready.set()

    def _take_nodes(self, nodes: Iterable[ppb.NodeInfo]) -> None:
        for n in nodes:
            if n.kind == ppb.ROUTER:
                self.routers[n.node_id] = n
            else:
                self._cache.set_address(n.node_id, n.address)

    def _take_shards(self, shards: Iterable[ppb.ShardInfo]) -> None:
        for s in shards:
            for rep in s.descriptor.replicas:
                self._cache.set_address(rep.node_id, rep.address)
            self._cache.update(route_from_pb(s.descriptor, s.leader_term))
