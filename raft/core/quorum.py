"""Majority quorum arithmetic: commit index and vote results (Raft §5.2, §5.3)."""

from __future__ import annotations

import enum
from typing import Collection, Mapping


class VoteResult(enum.IntEnum):
    PENDING = 0
    LOST = 1
    WON = 2


def majority(n: int) -> int:
    return n // 2 + 1


def committed_index(voters: Collection[int], acked: Mapping[int, int]) -> int:
    """The highest index acknowledged by a majority of voters (0 with no voters)."""
    if not voters:
        return 0
    srt = sorted((acked.get(v, 0) for v in voters), reverse=True)
    return srt[majority(len(srt)) - 1]


def vote_result(voters: Collection[int], votes: Mapping[int, bool]) -> VoteResult:
    """WON once a majority granted, LOST once a majority can no longer be reached."""
    if not voters:
        # An empty configuration wins every vote (joint-config convention of etcd);
        # we never campaign without being a voter, so this only matters for acks.
        return VoteResult.WON
    granted = sum(1 for v in voters if votes.get(v) is True)
    rejected = sum(1 for v in voters if votes.get(v) is False)
    q = majority(len(voters))
    if granted >= q:
        return VoteResult.WON
    if len(voters) - rejected < q:
        return VoteResult.LOST
    return VoteResult.PENDING
