"""What placement's Raft group replicates, and what applying it answers (PURE).

Commands carry every value the proposer chose (cluster id, lease id), so
applying them is deterministic (placement/state.py). Their encoding is
placement/codec.py.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from placement.model import DEFAULT_REPLICAS, Node, NodeKind, NodeState, Shard


class RejectCode(enum.IntEnum):
    INVALID = 1
    NOT_BOOTSTRAPPED = 2
    ALREADY_BOOTSTRAPPED = 3
    NO_STORE_NODES = 4
    NODE_NOT_FOUND = 5
    LEASE_NOT_FOUND = 6
    LEASE_EXISTS = 7
    LEASE_TTL_TOO_LARGE = 8


class ReportOutcome(enum.IntEnum):
    ACCEPTED = 1
    STALE = 2
    UNKNOWN_SHARD = 3
    SLOT_CONFLICT = 4
    NOT_BOOTSTRAPPED = 5


# --------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class Bootstrap:
    cluster_id: int
    slot_count: int
    initial_shards: int = 0
    """0: one shard per up store node (at least one)."""
    replicas: int = DEFAULT_REPLICAS


@dataclass(frozen=True, slots=True)
class RegisterNode:
    node_id: int
    """0: the state assigns the next free id."""
    kind: NodeKind
    address: str
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class SetNodeState:
    node_id: int
    state: NodeState


@dataclass(frozen=True, slots=True)
class ReportShard:
    shard: Shard


@dataclass(frozen=True, slots=True)
class GrantLease:
    lease_id: int
    ttl_s: int


@dataclass(frozen=True, slots=True)
class RevokeLease:
    lease_id: int


@dataclass(frozen=True, slots=True)
class KeyChange:
    lease_id: int
    key: bytes
    detach: bool = False


@dataclass(frozen=True, slots=True)
class AttachKeys:
    changes: tuple[KeyChange, ...]


@dataclass(frozen=True, slots=True)
class LeaseKeysDeleted:
    lease_id: int
    keys: tuple[bytes, ...]


Command = Bootstrap | RegisterNode | SetNodeState | ReportShard | GrantLease | RevokeLease | AttachKeys | LeaseKeysDeleted


# ---------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Rejected:
    code: RejectCode
    message: str


@dataclass(frozen=True, slots=True)
class ReportResult:
    outcome: ReportOutcome
    current: Shard | None


@dataclass(frozen=True, slots=True)
class MapChange:
    """What one applied command changed in the map, at map_version. `full`:
    the cluster itself changed (bootstrap): watchers get the whole map."""

    map_version: int
    full: bool = False
    nodes: tuple[Node, ...] = ()
    shards: tuple[Shard, ...] = ()
    removed_shards: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Applied:
    result: object
    """What the proposer gets: a Rejected, or the command's value (see PlacementState.apply)."""
    change: MapChange | None = None
    leases_touched: tuple[int, ...] = ()
    """Leases whose record (live or ending) changed: the storage layer rewrites them."""
