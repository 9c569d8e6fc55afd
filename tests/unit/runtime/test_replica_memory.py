"""What an idle replica costs in Python memory (issue #20: at most 20 KiB
each on a store, native memory included).

Three StoreNodes in one process (real RocksDB, the in-memory transport,
virtual time) host SHARDS shards each; once every group has a leader and is
quiet, the Python allocations made since the first shard was created
(tracemalloc, which counts allocations, not time) are divided by the
replicas. About 5 KB each here (13.8 KB before issue #20's reductions: a
random.Random per group, a deque per peer, dicts of attributes...). The
bound is loose: it catches a per-replica structure made eagerly again, not
a few bytes."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

from raft.runtime.host import HostConfig
from tests.unit.runtime.loopwait import settle
from tests.unit.runtime.storenodes import NODES, TICK, Nodes

SHARDS = 60
SLOTS = 1024
BOUND_BYTES = 10 * 1024


async def test_an_idle_replica_costs_little_python_memory(tmp_path: Path) -> None:
    c = Nodes(tmp_path, HostConfig(tick_interval_s=TICK))
    for n in NODES:
        await c.start(n, fresh=False)  # no shards yet
    try:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        width = SLOTS // SHARDS
        for sid in range(1, SHARDS + 1):
            for n in NODES:
                lo = (sid - 1) * width
                await c.nodes[n].add_shard(sid, voters=NODES, slot_count=SLOTS, slot_ranges=((lo, lo + width),))

        def idle() -> bool:
            return all(
                not h._awake and all(h.status(sid).soft_state.leader_id for sid in range(1, SHARDS + 1))  # noqa: SLF001
                for h in c.hosts.values()
            )

        await c.until(idle, what="every group led and quiet")
        for _ in range(20):  # idle ticks: a quiet group must not grow
            c.clock.advance(TICK)
            await settle(c.stores.values())
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        diff = after.compare_to(before, "lineno")
        per_replica = sum(d.size_diff for d in diff) / (SHARDS * len(NODES))
        top = "\n".join(f"{d.size_diff / (SHARDS * len(NODES)):8.0f} B  {d.traceback[0]}" for d in diff[:15])
        assert per_replica < BOUND_BYTES, f"{per_replica:.0f} bytes of Python memory per idle replica; the largest sites:\n{top}"
    finally:
        if tracemalloc.is_tracing():
            tracemalloc.stop()
        await c.stop_all()
