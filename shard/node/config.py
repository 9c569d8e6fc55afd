"""The store node's settings (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from shard.quota import DEFAULT_QUOTA_BYTES


@dataclass(frozen=True, slots=True)
class NodeConfig:
    closed_ts_interval_s: float = 0.2
    """A shard leader that proposed nothing for this long proposes a ClosedTs entry."""
    propose_timeout_s: float = 5.0
    read_index_timeout_s: float = 3.0
    watch_queue_events: int = 10_000
    """Events a watcher may have waiting to be sent; beyond, it is cancelled."""
    watch_batch_events: int = 1_000
    watch_progress_interval_s: float = 1.0
    quota_bytes: int = DEFAULT_QUOTA_BYTES
    """The space quota (shard/quota.py); -1: none."""
    space_check_interval_s: float = 1.0
    """How often the space used is measured (with a SpaceMeter)."""
    txn_recovery_s: float = 3.0
    """A txn lock this old on a shard led here is resolved by the node itself
    (its coordinator is presumed gone; shard/node/closedts.py)."""
