"""What a store node holds, read from outside: the shards it hosts (its
admin Status) and the keys of some slots in a stopped store's RocksDB (a
real scan of its data directory). Shared by the rebalancing and merge
integration tests."""

from __future__ import annotations

from flotilla.cluster import Cluster
from raft.storage import open_db
from shard import keys as shard_keys


def hosted(c: Cluster, nid: int) -> set[int]:
    return {s.descriptor.shard_id for s in c.stores.status(nid).shards}


def keys_in_slots(c: Cluster, nid: int, ranges: list[tuple[int, int]]) -> int:
    """Data and revision-index keys in these slots of a STOPPED store's RocksDB (a real scan)."""
    db = open_db(c.stores.nodes[nid].data_dir / "db")
    try:
        n = 0
        for lo, hi in ranges:
            for start, end in ((shard_keys.data_prefix(lo), shard_keys.data_prefix(hi)), (shard_keys.rev_prefix(lo), shard_keys.rev_prefix(hi))):
                for k in db.keys(from_key=start):
                    if k >= end:
                        break
                    n += 1
        return n
    finally:
        db.close()
