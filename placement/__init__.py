"""Placement: the shard map, node registry and leases of a Flotilla cluster.

Pure:

- `placement.model`: the values (nodes, shards, replicas, epochs, leases);
- `placement.commands`: the replicated commands and their results;
- `placement.codec`: their versioned encoding, and the map and lease records;
- `placement.state`: the state machine (the map: bootstrap, epoch-gated
  reports, merges), with `placement.registry` (nodes) and
  `placement.leasebook` (leases, attached keys, ended leases);
- `placement.leases`: lease expiry in the leader's memory;
- `placement.operators`, `placement.scheduler`: what should change, and the
  steps that change it.

Runtime:

- `placement.machine`: the state on the runtime's StateMachine seam (RocksDB);
- `placement.group`: leadership and proposing; `placement.nodes` (heartbeats,
  down detection), `placement.leasekeeper` (lease calls, expiry, key
  deletion through `placement.deleter`), `placement.bootstrap`,
  `placement.rebalancer` (operators and admin commands), `placement.duties`
  (the leader's duty loop), `placement.watchhub` (the map watch);
- `placement.server`: the wiring of one placement server; `placement.service`:
  its gRPC servicer; `placement.convert`: values to and from protobuf;
- `placement.errors`: the exception tree; `placement.config`: the settings.

The client of the placement leader is `rpc.placementclient`. This package's
namespace re-exports the pure values; the runtime parts are imported from
their modules.
"""

from __future__ import annotations

from placement.codec import decode_command, encode_command
from placement.commands import Command, MapChange, RejectCode, Rejected, ReportOutcome
from placement.leases import ExpiryTable, clamp_ttl, min_lease_ttl_s
from placement.model import Epoch, Lease, Node, NodeKind, NodeState, Replica, Shard
from placement.state import PlacementState

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
