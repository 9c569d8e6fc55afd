"""shard/agent/transfer.py's may_transfer: a leader starts a transfer only to
a replica it hears from, and not again to the same target right away (a
pending transfer stops the shard's writes; placement repeats the step with
every heartbeat answer)."""

from __future__ import annotations

from shard.agent.transfer import TRANSFER_LAG_ENTRIES, may_transfer
from raft.core import ProgressStatus
from raft.core.tracker import ProgressState


def _pr(active: bool) -> ProgressStatus:
    return ProgressStatus(match=10, next=11, state=ProgressState.REPLICATE, is_learner=False, recent_active=active)


def test_no_transfer_to_a_replica_the_leader_does_not_hear_from() -> None:
    assert not may_transfer(_pr(False), 10, False, None, 2, 100.0, 3.0)
    assert not may_transfer(None, 10, False, None, 2, 100.0, 3.0)  # not in the configuration at all
    assert may_transfer(_pr(True), 10, False, None, 2, 100.0, 3.0)


def test_a_quiet_groups_stale_progress_does_not_block_a_transfer() -> None:
    assert may_transfer(_pr(False), 10, True, None, 2, 100.0, 3.0)


def test_the_same_transfer_is_not_started_again_within_the_retry_time() -> None:
    assert not may_transfer(_pr(True), 10, False, (2, 99.0), 2, 100.0, 3.0)
    assert may_transfer(_pr(True), 10, False, (2, 97.0), 2, 100.0, 3.0)
    assert may_transfer(_pr(True), 10, False, (3, 99.9), 2, 100.0, 3.0)  # another target: a new decision


def test_no_transfer_to_a_replica_far_behind_the_log() -> None:
    """A store just restarted may need many entries or a snapshot: a
    transfer would stop the shard's writes until Raft gives it up."""
    assert not may_transfer(_pr(True), 10 + TRANSFER_LAG_ENTRIES + 1, False, None, 2, 100.0, 3.0)
    assert may_transfer(_pr(True), 10 + TRANSFER_LAG_ENTRIES, False, None, 2, 100.0, 3.0)
