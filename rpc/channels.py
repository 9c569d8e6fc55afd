"""gRPC channel options for clients of Flotilla processes."""

from __future__ import annotations

RECONNECT_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)
"""A channel to a server that died tries to connect again within a second
(gRPC's default backoff grows to 120 s, so a restarted server stayed
unreachable long after it was back)."""
