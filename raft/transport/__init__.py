"""Moving Raft messages between processes: the Transport seam, its gRPC
implementation (one long-lived stream per peer, heartbeats coalesced,
snapshots in chunks on their own stream), its in-memory twin for tests, and
the codec between the core's dataclasses and protobuf."""

from __future__ import annotations

from raft.transport.base import SnapshotData, Transport, TransportError, TransportHandler, TransportStats
from raft.transport.codec import CodecError, decode_batch, encode_batch
from raft.transport.grpc_transport import GrpcTransport
from raft.transport.local import LocalNetwork, LocalTransport

__all__ = [
    "CodecError",
    "GrpcTransport",
    "LocalNetwork",
    "LocalTransport",
    "SnapshotData",
    "Transport",
    "TransportError",
    "TransportHandler",
    "TransportStats",
    "decode_batch",
    "encode_batch",
]
