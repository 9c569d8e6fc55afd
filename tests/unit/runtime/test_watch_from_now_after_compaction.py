"""Regression (issue #17, API fidelity): a watch with no start revision
("from now") on a shard that had no write above a cluster-wide compaction.

`etcdctl compaction R` compacts every shard at R; a shard whose last write is
below R (R was closed by its closed timestamp) has revision < R. Its watch
"from now" started at revision + 1 < R and was cancelled as compacted; etcd
starts such a watch at its current revision and waits. It must start after
the replica's readable revision and deliver the next write.

StoreNodes in one process (real RocksDB, LocalTransport, virtual time)."""

from __future__ import annotations

from pathlib import Path

from shard.node import RequestContext, WatchBatch, WatchSpec
from shard.types import CompactionRequest
from tests.unit.runtime.storenodes import NODES, Nodes, key_in


async def test_a_watch_from_now_is_not_compacted_on_a_shard_written_below_the_compaction(tmp_path: Path) -> None:
    c = Nodes(tmp_path)
    for n in NODES:
        await c.start(n, fresh=True)
    try:
        await c.until(lambda: c.leader(1) and c.leader(2), what="a leader for shards 1 and 2")
        one, two = key_in(((0, 8),), 0), key_in(((8, 16),), 0)
        await c.put(one, b"old")
        c.clock.advance(1.0)  # virtual time: shard 2's write comes a second later
        await c.put(two, b"v")
        lead1, lead2 = c.leader(1), c.leader(2)
        assert lead1 is not None and lead2 is not None
        rep1 = c.nodes[lead1]._replicas[1]  # noqa: SLF001 - the test reads the replica's revisions
        r = c.nodes[lead2]._replicas[2].sm.revision  # noqa: SLF001 - the compaction's revision: shard 2's last write
        assert rep1.sm.revision < r
        # Shard 1 closes r (its closed timestamp passes it), then both shards compact at r, as `etcdctl compaction r` does.
        # (the replicated closed timestamp, or the side channel's for an idle shard: shard/node/closedts.py)
        state1 = c.nodes[lead1]._state  # noqa: SLF001
        await c.until(lambda: state1.readable_of(1) >= r, what="shard 1 closing the compaction's revision")
        for sid, lead in ((1, lead1), (2, lead2)):
            rep = c.nodes[lead]._replicas[sid]  # noqa: SLF001
            await c.nodes[lead].write(RequestContext(sid, rep.epoch), CompactionRequest(r))
        assert rep1.sm.compact_revision == r and rep1.sm.revision < r

        stream = (await c.nodes[lead1].watch(RequestContext(1, rep1.epoch), WatchSpec(key=one))).__aiter__()
        first: WatchBatch = await stream.__anext__()
        assert first.compact_revision == 0, "a watch from now was refused as compacted"
        assert first.progress_revision >= r
        await c.put(one, b"new")
        got: list[WatchBatch] = []
        while not any(b.events for b in got):
            got.append(await stream.__anext__())
        assert [e.kv.value for b in got for e in b.events] == [b"new"]
        await stream.aclose()  # type: ignore[attr-defined]
    finally:
        await c.stop_all()
