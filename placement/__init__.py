"""Placement: the shard map, node registry and leases of a Flotilla cluster.

- `placement.state` (pure): the replicated state machine and its commands.
- `placement.leases` (pure): lease expiry in the leader's memory.
- `placement.deleter`: the KeyDeleter seam, its in-memory twin, and the
  real one (`StoreKeyDeleter`: DeleteLeaseKeys on the shard leaders).
- `placement.client`: a grpc.aio client of the placement leader (store nodes use it).
- `placement.machine`: the state on the runtime's StateMachine seam (RocksDB).
- `placement.server`: the placement node, its leader duties and gRPC servicer.

This package's namespace re-exports the pure values; the runtime parts are
imported from their modules.
"""

from __future__ import annotations

from placement.leases import ExpiryTable, clamp_ttl, min_lease_ttl_s
from placement.state import (
    Command,
    Epoch,
    Lease,
    MapChange,
    Node,
    NodeKind,
    NodeState,
    PlacementState,
    RejectCode,
    Rejected,
    Replica,
    ReportOutcome,
    Shard,
    decode_command,
    encode_command,
)

__all__ = [
    "Command",
    "Epoch",
    "ExpiryTable",
    "Lease",
    "MapChange",
    "Node",
    "NodeKind",
    "NodeState",
    "PlacementState",
    "RejectCode",
    "Rejected",
    "Replica",
    "ReportOutcome",
    "Shard",
    "clamp_ttl",
    "decode_command",
    "encode_command",
    "min_lease_ttl_s",
]
