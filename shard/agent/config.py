"""The store agent's settings (pure)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AgentConfig:
    heartbeat_interval_s: float = 1.0
    report_check_interval_s: float = 0.2
    retry_s: float = 0.5
    destroy_check_interval_s: float = 1.0
    transfer_retry_s: float = 3.0
    """A leader transfer to the same node is not started again sooner: while
    one is pending the shard takes no writes (up to an election timeout,
    after which Raft gives it up), and placement repeats its step with every
    heartbeat answer."""
