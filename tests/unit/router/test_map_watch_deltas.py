"""The shard map reaches routers as deltas, and a router that missed deltas
catches up (issue #20): placement's real WatchMap servicer, map watch hub and
protobuf conversion on a real gRPC port, followed by the router's real
PlacementSource and RoutingCache, in one process. The map is built directly
(placement/simulation.py's bootstrap: Bootstrap accepts at most 65,536
slots, and 100,000 shards need more) and changed through
`PlacementState.apply`, whose MapChanges go to the hub as the placement
server sends them.

Checked: the whole map comes once, in parts below gRPC's 4 MiB message
limit; later changes (leaders, a split, a merge, a node's state) come as
deltas; a router whose watch was down while changes applied, or whose
stream was dropped for falling behind, gets only what it missed; one that
missed more than the server keeps gets the whole map again; each time the
router's cache equals the map (every shard's epoch, slots, replicas and
leader, and the owner of every shard's first and last slot).

The default run: 5,000 shards; `-m slow`: 100,000.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

import grpc
import grpc.aio
import pytest

from flotillapb import placement_pb2 as ppb
from flotillapb import placement_pb2_grpc
from placement.commands import ReportShard, SetNodeState
from placement.model import Epoch, NodeState
from placement.service import PlacementService
from placement.simulation import SimConfig, Simulation
from placement.state import PlacementState
from placement.watchhub import MapWatchHub
from router.cache import PlacementSource, RoutingCache

WAIT_S = 60.0
GRPC_LIMIT = 4 << 20


async def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.01)  # sleep-ok: polling interval of a deadline-bounded wait


@dataclasses.dataclass
class Placement:
    """What PlacementService.WatchMap uses of the placement server."""

    state: PlacementState
    hub: MapWatchHub
    sent: list[int] = dataclasses.field(default_factory=list)
    """The size of every WatchMap response sent."""
    watches: int = 0

    def apply(self, cmd: object) -> None:
        out = self.state.apply(cmd)  # type: ignore[arg-type]
        assert out.change is not None, out.result
        self.hub.publish_change(out.change, self.state)


class CountingService(PlacementService):
    async def WatchMap(self, request, context):  # type: ignore[no-untyped-def, override]  # noqa: N802
        self.s.watches += 1  # type: ignore[attr-defined]
        async for resp in super().WatchMap(request, context):
            self.s.sent.append(resp.ByteSize())  # type: ignore[attr-defined]
            yield resp


def build(shards: int, *, limit: int, history: int) -> Placement:
    sim = Simulation(SimConfig(nodes=30, shards=shards, slot_count=1 << 20))
    sim.bootstrap()
    sim.elect()  # every shard gets a leader
    sim.st.cluster_id = 7
    return Placement(sim.st, MapWatchHub(limit, history))


def assert_same(cache: RoutingCache, st: PlacementState) -> None:
    assert cache.map_version == st.map_version
    assert {r.shard_id for r in cache.shards()} == set(st.shards)
    for sid, s in st.shards.items():
        r = cache.shard(sid)
        assert r is not None
        assert r.epoch == (s.epoch.conf_version, s.epoch.slot_version), sid
        assert r.slot_ranges == s.slots, sid
        assert set(r.replicas) == {x.node_id for x in s.replicas}, sid
        assert r.leader == s.leader_node_id, sid
        for lo, hi in s.slots:
            assert cache.shard_of_slot(lo).shard_id == sid and cache.shard_of_slot(hi - 1).shard_id == sid


class Changes:
    """Map changes of every kind a router follows."""

    def __init__(self, p: Placement) -> None:
        self.p = p
        self.turn = 0

    def leader(self) -> None:
        st = self.p.state
        sids = sorted(st.shards)
        s = st.shards[sids[(self.turn * 7919) % len(sids)]]
        self.turn += 1
        other = next(r.node_id for r in s.replicas if r.node_id != s.leader_node_id)
        self.p.apply(ReportShard(dataclasses.replace(s, leader_node_id=other, leader_term=s.leader_term + 1)))

    def split(self) -> int:
        st = self.p.state
        s = max((x for x in st.shards.values() if sum(hi - lo for lo, hi in x.slots) > 1), key=lambda x: (sum(hi - lo for lo, hi in x.slots), -x.shard_id))
        (lo, hi), = s.slots
        mid = (lo + hi) // 2
        ep = Epoch(s.epoch.conf_version, s.epoch.slot_version + 1)
        self.p.apply(ReportShard(dataclasses.replace(s, slots=((lo, mid),), epoch=ep)))
        new = dataclasses.replace(s, shard_id=st.max_shard_id + 1, slots=((mid, hi),), epoch=ep)
        self.p.apply(ReportShard(new))
        return new.shard_id

    def merge(self, right: int) -> None:
        """The shard left of `right` takes over its slots (a merge's report)."""
        st = self.p.state
        r = st.shards[right]
        left = next(s for s in st.shards.values() if s.slots and s.slots[-1][1] == r.slots[0][0])
        ep = Epoch(left.epoch.conf_version, max(left.epoch.slot_version, r.epoch.slot_version) + 1)
        self.p.apply(ReportShard(dataclasses.replace(left, slots=((left.slots[0][0], r.slots[-1][1]),), epoch=ep)))
        assert right not in st.shards

    def node(self, state: NodeState) -> None:
        self.p.apply(SetNodeState(5, state))

    def some(self, n: int) -> None:
        """n changes or more: a split and a merge, a leader, the rest a node's
        state (a shard report costs a scan of the map: slow at 100,000 shards)."""
        for i in range(n):
            if i % 10 == 9:
                self.merge(self.split())
            elif i % 10 == 4:
                self.leader()
            else:
                up = self.p.state.nodes[5].state == NodeState.UP
                self.node(NodeState.DRAINING if up else NodeState.UP)


async def run_scenario(shards: int) -> None:
    history, limit = 60, 16
    p = build(shards, limit=limit, history=history)
    server = grpc.aio.server()
    placement_pb2_grpc.add_PlacementServicer_to_server(CountingService(p), server)  # type: ignore[arg-type]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channels: list[grpc.aio.Channel] = []

    def channel_for(address: str) -> grpc.aio.Channel:
        ch = grpc.aio.insecure_channel(address)
        channels.append(ch)
        return ch

    cache = RoutingCache(p.state.slot_count)
    src = PlacementSource(cache, f"127.0.0.1:{port}", channel_for=channel_for)
    changes = Changes(p)
    task: asyncio.Task[None] | None = None

    def watch() -> asyncio.Task[None]:
        return asyncio.create_task(src.run())

    async def stop(t: asyncio.Task[None]) -> None:
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        await wait_until(lambda: len(p.hub) == 0, "the server to drop the watch")

    try:
        # 1. The whole map, once, in parts.
        task = watch()
        await wait_until(lambda: cache.map_version == p.state.map_version and src.ready.is_set(), "the whole map")
        assert src.fulls == 1 and src.deltas == 0
        parts = len(p.sent)
        assert parts == -(-shards // 8192) and max(p.sent) < GRPC_LIMIT, p.sent
        assert_same(cache, p.state)

        # 2. Changes come as deltas.
        v0 = p.state.map_version
        changes.some(10)  # fewer than `limit` changes at once
        await wait_until(lambda: cache.map_version == p.state.map_version, "the deltas")
        assert p.watches == 1 and src.fulls == 1 and src.deltas == p.state.map_version - v0 == len(p.sent) - parts
        assert_same(cache, p.state)

        # 3. The watch is down while changes apply: back, it gets only those.
        await stop(task)
        before, sent, v0 = src.deltas, len(p.sent), p.state.map_version
        changes.some(20)
        task = watch()
        await wait_until(lambda: cache.map_version == p.state.map_version, "the missed deltas")
        assert p.watches == 2 and src.fulls == 1
        assert src.deltas - before == len(p.sent) - sent == p.state.map_version - v0
        assert_same(cache, p.state)

        # 4. The router falls behind: the server drops its stream (more than
        # `limit` changes queued at once); watching again, it gets what it missed.
        before, v0 = src.deltas, p.state.map_version
        changes.some(limit + 10)
        await wait_until(lambda: cache.map_version == p.state.map_version, "the deltas after the dropped stream")
        assert p.watches == 3 and src.fulls == 1
        assert src.deltas - before == p.state.map_version - v0 > limit
        assert_same(cache, p.state)

        # 5. Missed more than the server keeps: the whole map again.
        await stop(task)
        changes.some(history + 10)
        sent = len(p.sent)
        task = watch()
        await wait_until(lambda: cache.map_version == p.state.map_version, "the whole map again")
        assert p.watches == 4 and src.fulls == 2 and len(p.sent) - sent == parts
        assert_same(cache, p.state)
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for ch in channels:
            await ch.close()
        await server.stop(None)


async def test_map_deltas_and_catch_up() -> None:
    await run_scenario(5000)


@pytest.mark.slow
@pytest.mark.timeout_s(900)
async def test_map_deltas_and_catch_up_100k_shards() -> None:
    await run_scenario(100_000)
