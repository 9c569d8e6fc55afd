"""Errors of placement.

    FlotillaError (raft.core.errors)
      PlacementError                  an expected outcome of a placement call
        NotLeaderError                this server does not lead; carries the leader's id and address
                                      (the servicer sends the address as `placement-leader` metadata)
        LeaderNotReady                it leads, but has not caught up with its term yet: retry
        RejectedError                 the state machine refused the command; carries the Rejected
                                      (RejectCode + a message saying what to change)
        OperatorError                 an admin command the map does not allow; carries the gRPC code
        KeyDeletionFailed             a shard did not confirm deleting an ended lease's keys: retry later
      CodecError (raft.core.errors)   a command or record this build cannot decode: every replica
                                      would fail alike, so the process stops rather than diverge

`placement.server.abort_with` is the one place these become gRPC statuses
(lease rejections with etcd's rows from router/etcd_errors.py, so a router
relays them unchanged). Callers decide by type and fields, never by message
text. `rpc.placementclient.PlacementUnavailable` (no placement server
answered) belongs to the client side, not to this tree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from raft.core.errors import CodecError, FlotillaError

if TYPE_CHECKING:
    from placement.commands import Rejected

__all__ = [
    "CodecError",
    "KeyDeletionFailed",
    "LeaderNotReady",
    "NotLeaderError",
    "OperatorError",
    "PlacementError",
    "RejectedError",
]


class PlacementError(FlotillaError):
    """The root of every outcome a placement call raises on purpose."""


class NotLeaderError(PlacementError):
    def __init__(self, leader_id: int, address: str) -> None:
        super().__init__(f"placement: not leader (leader is node {leader_id} at {address or 'unknown'})")
        self.leader_id = leader_id
        self.address = address


class LeaderNotReady(PlacementError):
    pass


class RejectedError(PlacementError):
    def __init__(self, rejected: Rejected) -> None:
        super().__init__(rejected.message)
        self.rejected = rejected


class OperatorError(PlacementError):
    """An admin command the map does not allow: code is the gRPC status to answer."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class KeyDeletionFailed(PlacementError):
    """The shard did not confirm the deletion; placement retries later."""
