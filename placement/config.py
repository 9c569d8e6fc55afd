"""The placement server's settings (flotilla/placement_main.py fills them
from the command line)."""

from __future__ import annotations

from dataclasses import dataclass

from placement.scheduler import SchedulerConfig


@dataclass(frozen=True, slots=True)
class PlacementConfig:
    down_after_s: float = 30.0
    suspect_after_s: float = 3.0
    """A store unheard this long (or down_after_s, if shorter) is suspect: the
    scheduler aims no step at it and does not count it when balancing."""
    min_lease_ttl_s: int = 2
    duty_interval_s: float = 0.1
    revoke_wait_s: float = 5.0
    """LeaseRevoke waits this long for the keys' deletion, then answers anyway (deletion goes on)."""
    delete_retry_s: float = 1.0
    watch_queue: int = 1024
    watch_history: int = 10_000
    """Map changes kept for watchers that come back (WatchMap since_map_version):
    one that missed fewer gets only what it missed, not the whole map."""
    bootstrap_stores: int = 0
    """Once this many store nodes are registered and up, the leader
    bootstraps the cluster (Bootstrap is idempotent: a cluster that exists
    stays as it is). 0: only the Bootstrap RPC does."""
    slot_count: int = 1024
    initial_shards: int = 0
    """Shards of an automatic bootstrap (0: one per up store node)."""
    replicas: int = 3
    split_keys: int = 0
    """The scheduler splits a shard with at least this many live keys (0: never on key count)."""
    split_size_bytes: int = 0
    """The scheduler splits a shard with at least this many live bytes (0: never on size)."""
    split_write_rate: float = 0.0
    """The scheduler splits a shard whose leader reports at least this many writes per second (0: never on load)."""
    merge_keys: int = 0
    """The scheduler merges two small shards each with fewer live keys than this (0: never on key count)."""
    merge_size_bytes: int = 0
    """The scheduler merges two small shards each with fewer live bytes than this (0: never on size)."""
    heat_interval_s: float = 1.0
    """The leader takes a sample of the dashboard's heat map this often (placement/dashboard.py)."""
    heat_samples: int = 600
    """Heat map samples the leader keeps (the newest; 10 minutes at the default interval)."""

    def scheduler(self) -> SchedulerConfig:
        """The scheduler's settings from these."""
        return SchedulerConfig(
            replicas=self.replicas,
            down_after_s=self.down_after_s,
            suspect_after_s=self.suspect_after_s,
            split_keys=self.split_keys,
            split_size_bytes=self.split_size_bytes,
            split_write_rate=self.split_write_rate,
            merge_keys=self.merge_keys,
            merge_size_bytes=self.merge_size_bytes,
        )
