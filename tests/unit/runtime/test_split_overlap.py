"""Regression (issue #7, multi-Raft bugs): a snapshot that overlaps a split,
on StoreNodes in one process (real RocksDB, LocalTransport, virtual time).

Node 3 is cut off while shard 1 (slots 0..8) splits at slot 4 into shard 3
and both go on being written; shard 1's leader compacts its log, so node 3
can only catch up from a snapshot. While node 3's replica of shard 1 still
holds slots 4..8, node 3 refuses to host shard 3 (what the map or a message
of shard 3's group asks): shard 3's newer data there could otherwise be
overwritten by shard 1's older log entries or an older snapshot of it. Once
node 3 installs shard 1's post-split snapshot, shard 1 there holds 0..4
only: its stale data in 4..8 is gone and it refuses shard 3's keys; shard 3
is then hosted, caught up from its leader, and serves its latest values.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from raft.runtime.host import HostConfig
from shard.errors import WrongShard
from shard.node import Consistency, RequestContext
from shard.types import RangeRequest
from tests.unit.runtime.storenodes import NODES, SLOTS, TICK, Nodes, data_keys, key_in


async def test_replica_that_missed_a_split_catches_up_by_snapshot_and_never_overlaps(tmp_path: Path) -> None:
    c = Nodes(tmp_path, HostConfig(tick_interval_s=TICK, quiesce_ticks=0, snapshot_entries=5, compaction_margin=1))
    for n in NODES:
        await c.start(n, fresh=True)
    try:
        await c.until(lambda: c.leader(1) and c.leader(2), what="leaders")
        if c.leader(1) == 3:
            c.hosts[3].transfer_leader(1, 1)
            await c.until(lambda: c.leader(1) in (1, 2), what="shard 1 led elsewhere")
        low = [key_in(((0, 4),), i) for i in range(3)]
        high = [key_in(((4, 8),), i) for i in range(3)]
        for k in (*low, *high):
            await c.put(k, b"old-" + k)
        await c.until(lambda: all(c.nodes[3]._replicas[1].sm.applied_index() >= c.hosts[n].status(1).applied for n in (1, 2)), what="node 3 caught up")  # noqa: SLF001
        stale_high = len(data_keys(c.dbs[3], ((4, 8),)))
        assert stale_high > 0

        c.net.isolate(3)
        lead = c.leader(1)
        assert lead in (1, 2)
        await c.nodes[lead].split(1, 3, 4)
        await c.until(lambda: all(3 in c.nodes[n].shard_ids() for n in (1, 2)) and c.leader(3), what="shard 3 on nodes 1, 2")
        for i in range(4):
            for k in high:
                await c.put(k, b"new%d-" % i + k)
            for k in low:
                await c.put(k, b"new%d-" % i + k)
        lead = c.leader(1)
        assert lead is not None
        assert c.hosts[lead]._group(1).storage.first_index() > c.nodes[3]._replicas[1].sm.applied_index() + 1  # noqa: SLF001 - compacted past node 3

        # the map (or a message of shard 3) asks node 3 to host shard 3: not while its shard 1 holds 4..8
        rep1 = c.nodes[3]._replicas[1]  # noqa: SLF001
        assert rep1.sm.slot_ranges == ((0, 8),)
        await c.nodes[3].host_shard(3, slot_count=SLOTS, slot_ranges=((4, 8),), bootstrap=False, conf_version=1)
        assert 3 not in c.nodes[3].shard_ids()

        c.net.heal()
        await c.until(lambda: rep1.sm.slot_ranges == ((0, 4),), what="node 3's shard 1 installs the post-split snapshot", timeout_s=120)
        assert c.hosts[3].stats.snapshots_restored >= 1
        assert 3 not in c.nodes[3].shard_ids(), "a snapshot must not create the split's shard"
        assert data_keys(c.dbs[3], ((4, 8),)) == [], "stale data of the moved slots kept"
        with pytest.raises(WrongShard):
            await c.nodes[3].range(RequestContext(1, rep1.epoch), RangeRequest(high[0]), Consistency.SERIALIZABLE)

        # now it is hosted (the agent's next try), and caught up from shard 3's leader
        await c.nodes[3].host_shard(3, slot_count=SLOTS, slot_ranges=((4, 8),), bootstrap=False, conf_version=1)
        assert 3 in c.nodes[3].shard_ids()
        lead3 = c.leader(3)
        assert lead3 is not None
        await c.until(lambda: c.nodes[3]._replicas[3].sm.applied_index() >= c.hosts[lead3].status(3).applied, what="node 3's shard 3 catches up", timeout_s=120)  # noqa: SLF001
        rep3 = c.nodes[3]._replicas[3]  # noqa: SLF001
        for k in high:
            r = await c.nodes[3].range(RequestContext(3, rep3.epoch), RangeRequest(k), Consistency.SERIALIZABLE)
            assert [kv.value for kv in r.kvs] == [b"new3-" + k]
        for k in low:
            r = await c.nodes[3].range(RequestContext(1, rep1.epoch), RangeRequest(k), Consistency.SERIALIZABLE)
            assert [kv.value for kv in r.kvs] == [b"new3-" + k]
    finally:
        await c.stop_all()
