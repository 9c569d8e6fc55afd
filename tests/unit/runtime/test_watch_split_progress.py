"""Regression (found by a 4-store fault campaign): a shard watch stream cut
off by a split must not claim progress past the split.

The router takes a stream's last progress claim as the frontier of every
slot it watched, and on the stream's EpochNotMatch starts the streams of the
slots' new owners after that frontier. The shard's replica claimed its
readable revision when it sent the last queued events, which it computed
after the split: a revision of the slots it kept, past events the new shard
had logged meanwhile. The watch then skipped them.

StoreNodes in one process (real RocksDB, LocalTransport, virtual time)."""

from __future__ import annotations

from pathlib import Path

from shard.errors import EpochNotMatch
from shard.node import RequestContext, WatchBatch, WatchSpec
from tests.unit.runtime.storenodes import NODES, Nodes, key_in


async def test_a_watch_cut_by_a_split_claims_no_progress_past_the_split(tmp_path: Path) -> None:
    c = Nodes(tmp_path)
    for n in NODES:
        await c.start(n, fresh=True)
    try:
        await c.until(lambda: c.leader(1), what="a leader for shard 1")
        lead = c.leader(1)
        assert lead is not None
        node = c.nodes[lead]
        rep = node._replicas[1]  # noqa: SLF001 - the test reads the replica's epoch and revision
        low, high = key_in(((0, 4),), 0), key_in(((4, 8),), 0)
        await c.put(high, b"v1")

        # Every key of the shard, from revision 1: history, then a progress claim.
        stream = (await node.watch(RequestContext(1, rep.epoch), WatchSpec(key=b"\0", range_end=b"\0", start_revision=1))).__aiter__()
        first: list[WatchBatch] = []
        while not first or not first[-1].progress_revision:
            first.append(await stream.__anext__())
        assert [e.kv.value for b in first for e in b.events] == [b"v1"]

        # Not read meanwhile: a put queued on the watcher, the split (slots
        # 4..8 to shard 3), a put to shard 3, and puts to shard 1's own slots.
        await c.put(high, b"v2")
        await node.split(1, 3, 4)
        await c.until(lambda: all(3 in c.nodes[n].shard_ids() for n in NODES) and c.leader(3), what="shard 3 on every node, led")
        await c.put(high, b"v3")
        new_owner = c.leader(3)
        assert new_owner is not None
        moved_rev = c.nodes[new_owner]._replicas[3].sm.revision  # noqa: SLF001 - v3's revision
        for i in range(3):
            await c.put(low, b"low%d" % i)
        assert rep.sm.readable_revision > moved_rev  # what the stream would have claimed

        rest: list[WatchBatch] = []
        async for b in stream:
            rest.append(b)
        assert isinstance(rest[-1].error, EpochNotMatch)
        assert [e.kv.value for b in rest for e in b.events] == [b"v2"]
        claims = [b.progress_revision for b in (*first, *rest) if b.progress_revision]
        assert claims and max(claims) < moved_rev, (claims, moved_rev)
    finally:
        await c.stop_all()
