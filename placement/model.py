"""The values of the shard map (PURE): nodes, shards, replicas, epochs, leases.

DESIGN.md, "The shard map". Frozen dataclasses: the state machine
(placement/state.py) replaces them, never mutates them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from shard.slots import SlotRanges

DEFAULT_REPLICAS = 3
MAX_LEASE_TTL_S = 9_000_000_000
"""etcd's MaxLeaseTTL: a grant above it fails with "too large lease TTL"."""
ZONE_LABEL = "zone"


class NodeKind(enum.IntEnum):
    STORE = 1
    ROUTER = 2


class NodeState(enum.IntEnum):
    UP = 1
    DOWN = 2
    DRAINING = 3
    REMOVED = 4


@dataclass(frozen=True, slots=True, order=True)
class Epoch:
    conf_version: int = 1
    slot_version: int = 1

    def is_newer_than(self, other: Epoch) -> bool:
        """Both parts at least other's, and not equal (TiKV's region epoch rule)."""
        return self.conf_version >= other.conf_version and self.slot_version >= other.slot_version and self != other


@dataclass(frozen=True, slots=True)
class Node:
    node_id: int
    kind: NodeKind
    address: str
    labels: tuple[tuple[str, str], ...] = ()
    state: NodeState = NodeState.UP

    @property
    def zone(self) -> str:
        for k, v in self.labels:
            if k == ZONE_LABEL:
                return v
        return ""


@dataclass(frozen=True, slots=True)
class Replica:
    node_id: int
    learner: bool = False


@dataclass(frozen=True, slots=True)
class Shard:
    shard_id: int
    slots: SlotRanges
    replicas: tuple[Replica, ...]
    epoch: Epoch = Epoch()
    leader_node_id: int = 0
    leader_term: int = 0


@dataclass(frozen=True, slots=True)
class Lease:
    lease_id: int
    ttl_s: int
    keys: frozenset[bytes] = frozenset()
