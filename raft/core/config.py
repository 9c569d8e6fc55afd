"""Configuration of one Raft node (one replica of one group)."""

from __future__ import annotations

from dataclasses import dataclass

from raft.core.errors import ConfigInvalid


@dataclass(frozen=True, slots=True)
class Config:
    id: int
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    applied: int = 0
    """The index last applied by the state machine (restart from disk)."""
    max_size_per_msg: int = 1 << 20
    """Bytes of entry data per append message (at least one entry is sent)."""
    max_inflight_msgs: int = 256
    """Append messages in flight to one follower in replicate state."""
    max_committed_size_per_ready: int = 16 << 20
    max_uncommitted_entries_size: int = 0
    """0 = unlimited. Otherwise the leader drops proposals beyond this many
    uncommitted payload bytes."""
    check_quorum: bool = True
    pre_vote: bool = True
    step_down_on_removal: bool = True

    def validate(self) -> None:
        if self.id <= 0:
            raise ConfigInvalid("cannot use 0 or a negative number as id")
        if self.heartbeat_ticks <= 0:
            raise ConfigInvalid("heartbeat_ticks must be greater than 0")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ConfigInvalid("election_ticks must be greater than heartbeat_ticks")
        if self.max_inflight_msgs <= 0:
            raise ConfigInvalid("max_inflight_msgs must be greater than 0")
        if self.applied < 0:
            raise ConfigInvalid("applied must not be negative")
