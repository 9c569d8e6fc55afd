"""Keys that land on different shards of a cluster, picked with the slot
rule (shard/slots.py) against the cluster's own map, as the router routes
them: the client compatibility tests of cross-shard transactions use them."""

from __future__ import annotations

from flotillapb import placement_pb2 as ppb
from router import slots


def shard_of(m: ppb.ClusterMap, key: str) -> int:
    """The id of the shard of m that owns key's slot."""
    slot = slots.slot_of(key.encode(), m.slot_count)
    for s in m.shards:
        if any(r.start <= slot < r.end for r in s.descriptor.slots):
            return int(s.descriptor.shard_id)
    raise AssertionError(f"no shard of the map owns slot {slot} (key {key!r})")


def keys_on_distinct_shards(m: ppb.ClusterMap, prefix: str, n: int) -> list[str]:
    """n keys `prefix<i>`, each on a different shard of m (the lowest i for each)."""
    assert n <= len(m.shards), f"{n} keys on distinct shards of a map of {len(m.shards)} shards"
    picked: dict[int, str] = {}
    for i in range(10_000):
        key = f"{prefix}{i}"
        picked.setdefault(shard_of(m, key), key)
        if len(picked) == n:
            return sorted(picked.values())
    raise AssertionError(f"fewer than {n} shards own a key {prefix}0..9999")
