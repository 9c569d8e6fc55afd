"""When a shard leader may start a leader transfer (pure)."""

from __future__ import annotations

from raft.core import ProgressStatus

TRANSFER_LAG_ENTRIES = 64
"""A transfer target at most this many entries behind the leader's log
catches up within a round trip or two: only then does a transfer start."""


def may_transfer(
    progress: ProgressStatus | None, last_index: int, quiet: bool, last: tuple[int, float] | None, target: int, now: float, retry_s: float
) -> bool:
    """May a leader start a transfer to `target` now (pure)? While a
    transfer is pending the shard takes no writes (Raft drops proposals,
    up to an election timeout), so only:
    - to a replica the leader hears from (Raft's recent_active: it answered
      within the last election timeout; a quiet group's progress is stale,
      so it is woken by the transfer and Raft aborts the transfer if the
      target stays silent),
    - that is caught up, or nearly (a store just restarted may need
      thousands of entries or a snapshot first: the transfer would time out
      with the writes stopped),
    - and not again to the same target within retry_s of the last start
      (`last`: target and time)."""
    if progress is None or (not progress.recent_active and not quiet):
        return False
    if progress.match + TRANSFER_LAG_ENTRIES < last_index:
        return False
    return last is None or last[0] != target or now - last[1] >= retry_s
