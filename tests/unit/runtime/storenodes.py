"""StoreNodes on GroupHosts in one process, for the replica-destruction and
split-overlap tests: a real RocksDB per node, the in-memory LocalTransport,
virtual time (the test advances a FakeClock; every wait has a deadline)."""

from __future__ import annotations

import asyncio
import gc
import random
from pathlib import Path
from typing import Any, Callable

from raft.core import StateRole
from raft.runtime.clock import FakeClock
from raft.runtime.host import GroupHost, HostConfig
from raft.storage import keys as raft_keys
from raft.storage.rocks import RocksLogStore, open_db
from raft.transport.local import LocalNetwork
from shard import keys, slots
from shard.node import RequestContext, StoreNode
from shard.rocks import RocksEngine
from shard.types import PutRequest
from tests.unit.runtime.loopwait import settle

TICK = 0.1
SLOTS = 16
NODES = (1, 2, 3)


class Nodes:
    def __init__(self, tmp: Path, cfg: HostConfig | None = None) -> None:
        self.tmp = tmp
        self.clock = FakeClock()
        self.net = LocalNetwork()
        self.cfg = cfg or HostConfig(tick_interval_s=TICK, quiesce_ticks=0)
        self.hosts: dict[int, GroupHost] = {}
        self.nodes: dict[int, StoreNode] = {}
        self.dbs: dict[int, Any] = {}
        self.stores: dict[int, RocksLogStore] = {}
        self.tasks: dict[int, list[asyncio.Task[None]]] = {}

    async def start(self, n: int, *, fresh: bool) -> None:
        db = open_db(self.tmp / f"n{n}")
        store = RocksLogStore(db)
        store.recover()
        host = GroupHost(n, store, self.net.transport(n), clock=self.clock, rng=random.Random(n), config=self.cfg)
        node = StoreNode(n, host, RocksEngine(db), clock=self.clock)
        if fresh:
            await node.add_shard(1, voters=NODES, slot_count=SLOTS, slot_ranges=((0, 8),))
            await node.add_shard(2, voters=NODES, slot_count=SLOTS, slot_ranges=((8, 16),))
        else:
            for sid in node.shards_on_disk():
                await node.host_shard(sid, slot_count=SLOTS, slot_ranges=(), bootstrap=False)
            await node.open_split_shards()
        self.hosts[n], self.nodes[n], self.dbs[n], self.stores[n] = host, node, db, store
        for a in self.hosts.values():
            for b in self.hosts.values():
                a.set_peer(b.node_id, b._transport.address)  # noqa: SLF001 - test wiring
        self.tasks[n] = [asyncio.create_task(host.run()), asyncio.create_task(node.run())]

    async def stop(self, n: int) -> None:
        tasks = self.tasks.pop(n)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.stores.pop(n).close()
        self.hosts.pop(n)
        self.nodes.pop(n)
        for _ in range(3):
            await asyncio.sleep(0)  # sleep-ok: run the done-callbacks of log writes that finished (each holds a RocksDB snapshot)
        gc.collect()  # drop RocksDB snapshots and iterators the stopped node still referenced: they hold the DB's LOCK
        self.dbs.pop(n).close()
        gc.collect()  # (a snapshot freed only now releases the closed DB)

    async def stop_all(self) -> None:
        tasks = [t for ts in self.tasks.values() for t in ts]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for n in list(self.stores):
            self.stores[n].close()
            self.dbs[n].close()

    async def until(self, pred: Callable[[], object], *, what: str, timeout_s: float = 60.0) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            got = pred()
            if got:
                return got
            for n, ts in self.tasks.items():
                for t in ts:
                    if t.done() and not t.cancelled() and t.exception() is not None:
                        raise AssertionError(f"node {n} failed") from t.exception()
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            self.clock.advance(TICK)
            await settle(self.stores.values())  # the persist thread and transport tasks; time is the FakeClock's

    def leader(self, sid: int) -> int | None:
        for n, h in self.hosts.items():
            if sid in h.group_ids() and h.status(sid).soft_state.role == StateRole.LEADER:
                return n
        return None

    async def put(self, key: bytes, value: bytes) -> None:
        async def attempt() -> bool:
            for n, node in self.nodes.items():
                for sid in node.shard_ids():
                    rep = node._replicas[sid]  # noqa: SLF001 - test reads the replica's epoch
                    if rep.sm.owns(key) and self.leader(sid) == n:
                        await node.write(RequestContext(sid, rep.epoch), PutRequest(key, value))
                        return True
            return False

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while not await attempt():
            assert loop.time() < deadline, f"put {key!r}"
            self.clock.advance(TICK)
            await settle(self.stores.values())  # as in until()


def data_keys(db: Any, ranges: slots.SlotRanges) -> list[bytes]:
    """Every MVCC and revision-index key stored in these slots (a real scan)."""
    out = []
    for lo, hi in ranges:
        for start, end in ((keys.data_prefix(lo), keys.data_prefix(hi)), (keys.rev_prefix(lo), keys.rev_prefix(hi))):
            for k in db.keys(from_key=start):
                if k >= end:
                    break
                out.append(k)
    return out


def raft_keys_of(db: Any, group_id: int) -> list[bytes]:
    out = []
    for k in db.keys(from_key=raft_keys.group_start(group_id)):
        if k >= raft_keys.group_end(group_id):
            break
        out.append(k)
    return out


def meta_keys_of(db: Any, shard_id: int) -> list[bytes]:
    out = []
    for k in db.keys(from_key=keys.meta_prefix(shard_id)):
        if k >= keys.meta_end(shard_id):
            break
        out.append(k)
    return out


def key_in(sid_ranges: slots.SlotRanges, i: int) -> bytes:
    """The i-th key (of a fixed series) whose slot is in sid_ranges."""
    found = [k for k in (b"k%d" % j for j in range(2000)) if slots.contains(sid_ranges, slots.slot_of(k, SLOTS))]
    return found[i]
