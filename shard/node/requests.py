"""The store node's request and answer values (pure): what shard/convert.py
decodes a store.proto request into, and what the node answers besides the
KV responses of shard/types.py (ShardInfo, the status of a replica, is
in shard/types.py: the error tree names it)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from shard.errors import RoutingError
from shard.types import Epoch, Event


@dataclass(frozen=True, slots=True)
class RequestContext:
    """store.proto's RequestHeader, decoded."""

    shard_id: int
    epoch: Epoch
    router_id: int = 0
    seq: int = 0
    hlc: int = 0
    deadline_ms: int = 0
    seq_floor: int = 0


class Consistency(enum.IntEnum):
    """store.proto's ReadConsistency (same numbers)."""

    LINEARIZABLE = 0
    SERIALIZABLE = 1
    BOUNDED_STALENESS = 2
    AT_REVISION = 3


@dataclass(frozen=True, slots=True)
class WatchSpec:
    key: bytes
    range_end: bytes = b""
    start_revision: int = 0
    """First revision to deliver; 0: from now."""
    prev_kv: bool = False
    no_put: bool = False
    no_delete: bool = False
    progress_interval_s: float = 0.0
    """0: the node's default."""


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """One message of a shard watch stream. The stream ends after a batch
    with `error` or `compact_revision` set."""

    events: tuple[Event, ...] = ()
    progress_revision: int = 0
    """Every event of the watched range with a revision <= this was sent (0: no claim)."""
    closed_ts: int = 0
    compact_revision: int = 0
    error: RoutingError | None = None
