"""The store's errors: one tree for everything shard/ raises to a caller.

    FlotillaError
      StoreError                    an expected outcome of a store request; nothing
                                    else is raised to a caller (store.proto's StoreError
                                    is its wire form: shard/convert.py's store_error)
        RoutingError                the request reached the wrong place, or the right place at
                                    the wrong moment; nothing was done. Each carries what the
                                    router needs to retry (TiKV's errorpb)
          NotLeader                 (shard_id, leader_node_id, leader_address): retry on the leader
          WrongShard                (slot, map_version): the shard does not own the slot; refresh the map
          EpochNotMatch             (current_epoch, current_slots, related, addresses): the
                                    replica's epoch is not the request's; `related` are shards
                                    hosted here that took slots from it or own the request's keys
          StaleReadNotReady         (closed_ts, needed_ts, leader_node_id): this replica cannot
                                    serve the read yet; ask the leader
          ShardNotFound             (shard_id): no replica of the shard here
          ServerBusy                (reason, backoff_ms, outcome_unknown): retry after backoff_ms;
                                    outcome_unknown: a proposal timed out and may still apply
                                    (retry with the same seq); `reason` is for logs, never matched
        ShardError                  a KV outcome; `message` is etcd's exact text
          RequestError              bad request: etcd answers INVALID_ARGUMENT
            EmptyKey                "etcdserver: key is not provided"
            KeyNotFound             "etcdserver: key not found" (ignore_value/ignore_lease)
            ValueProvided           "etcdserver: value is provided"
            LeaseProvided           "etcdserver: lease is provided"
            TooManyOps              "etcdserver: too many operations in txn request"
            DuplicateKey            "etcdserver: duplicate key given in txn request"
          RevisionError             etcd answers OUT_OF_RANGE
            RevisionCompacted       "etcdserver: mvcc: required revision has been compacted"
            FutureRevision          "etcdserver: mvcc: required revision is a future revision"
          SlotNotOwned              the shard does not own the key's slot (routing: refresh and retry)
          InvalidSplit              a split that does not divide the shard's slots
          OutcomeUnknown            a retried command older than its router's latest applied one
                                    (the router answers UNAVAILABLE, never applies it twice)
          LeaseNotFound             "etcdserver: requested lease not found" (a put names a lease placement does not have)
          NoSpace                   "etcdserver: mvcc: database space exceeded" (the node's NOSPACE alarm is
                                    active: shard/quota.py; refused before proposing, never logged)
          InvalidCommand            a log entry that does not decode (a bug upstream; it is
                                    answered, not applied, on every replica alike)
          TxnLocked                 (txn_id, primary, locked_at): the shard is locked by a txn
                                    across shards (shard/txn2pc.py) that is not decided yet;
                                    nothing was done (routing: back off and retry, and resolve
                                    the txn from its record once its lock is old)

    CodecError                      raft.core.errors' one class (a RaftError and a ValueError), re-exported:
                                    bytes from the log, the engine or a snapshot that this build
                                    cannot decode (corruption, or a newer format): a bug or a
                                    broken disk, never an outcome sent to a client

Only router/etcd_errors.py maps these to etcd's gRPC statuses. Each ShardError
class has a stable `code` (stored in the dedup table with a command's outcome).
Callers decide by type and fields, never by message text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raft.core.errors import CodecError as CodecError  # noqa: F401 - re-exported: the one codec error, raised by shard's codecs
from raft.core.errors import FlotillaError
from router.etcd_texts import TEXTS  # the one table of etcd's texts (a shared leaf)

if TYPE_CHECKING:
    from shard.slots import SlotRanges
    from shard.types import Epoch, ShardInfo


class StoreError(FlotillaError):
    """The root of every outcome the store raises to a caller."""


# --- routing errors ---------------------------------------------------------------


class RoutingError(StoreError):
    """The request reached the wrong place, or the right place at the wrong
    moment; nothing was done. Each carries what the router needs to retry."""


class NotLeader(RoutingError):
    def __init__(self, shard_id: int, leader_node_id: int, leader_address: str) -> None:
        super().__init__(f"shard {shard_id}: not the leader (leader {leader_node_id or 'unknown'})")
        self.shard_id = shard_id
        self.leader_node_id = leader_node_id
        self.leader_address = leader_address


class WrongShard(RoutingError):
    def __init__(self, slot: int, map_version: int = 0) -> None:
        super().__init__(f"slot {slot} is not in this shard")
        self.slot = slot
        self.map_version = map_version


class EpochNotMatch(RoutingError):
    def __init__(
        self,
        current_epoch: Epoch,
        current_slots: SlotRanges,
        related: tuple[ShardInfo, ...] = (),
        addresses: dict[int, str] | None = None,
    ) -> None:
        super().__init__(f"epoch mismatch: current epoch {current_epoch}")
        self.current_epoch = current_epoch
        self.current_slots = current_slots
        self.related = related
        """Shards hosted here that took slots from this one (after a split), or that own the request's keys."""
        self.addresses = addresses or {}


class StaleReadNotReady(RoutingError):
    def __init__(self, closed_ts: int, needed_ts: int, leader_node_id: int) -> None:
        super().__init__(f"closed timestamp {closed_ts} is behind the {needed_ts} the read needs")
        self.closed_ts = closed_ts
        self.needed_ts = needed_ts
        self.leader_node_id = leader_node_id


class ShardNotFound(RoutingError):
    def __init__(self, shard_id: int) -> None:
        super().__init__(f"shard {shard_id} is not hosted here")
        self.shard_id = shard_id


class ServerBusy(RoutingError):
    def __init__(self, reason: str, backoff_ms: int = 0, *, outcome_unknown: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        """For logs only: never matched."""
        self.backoff_ms = backoff_ms
        self.outcome_unknown = outcome_unknown
        """A proposal timed out: it may still apply (a write is retried with the same seq)."""


# --- KV errors --------------------------------------------------------------------


class ShardError(StoreError):
    code = 0
    message = "shard error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.message)
        if message is not None:
            self.message = message

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.args == self.args

    def __hash__(self) -> int:
        return hash((type(self), self.args))


class RequestError(ShardError):
    pass


class EmptyKey(RequestError):
    code = 1
    message = TEXTS["empty_key"][1]


class KeyNotFound(RequestError):
    code = 2
    message = TEXTS["key_not_found"][1]


class ValueProvided(RequestError):
    code = 3
    message = TEXTS["value_provided"][1]


class LeaseProvided(RequestError):
    code = 4
    message = TEXTS["lease_provided"][1]


class TooManyOps(RequestError):
    code = 5
    message = TEXTS["too_many_ops"][1]


class DuplicateKey(RequestError):
    code = 6
    message = TEXTS["duplicate_key"][1]


class RevisionError(ShardError):
    pass


class RevisionCompacted(RevisionError):
    code = 7
    message = TEXTS["compacted"][1]


class FutureRevision(RevisionError):
    code = 8
    message = TEXTS["future_rev"][1]


class SlotNotOwned(ShardError):
    code = 9
    message = "shard does not own the key's slot"


class InvalidSplit(ShardError):
    code = 10
    message = "split must move some but not all of the shard's slots"


class OutcomeUnknown(ShardError):
    code = 11
    message = "duplicate of an earlier request whose outcome is no longer known"


class InvalidCommand(ShardError):
    code = 12
    message = "log entry is not a valid shard command"


class LeaseNotFound(ShardError):
    code = 13
    message = TEXTS["lease_not_found"][1]


class NoSpace(ShardError):
    code = 14
    message = TEXTS["no_space"][1]


class TxnLocked(ShardError):
    code = 15
    message = "the shard is locked by a txn across shards that is not decided yet"

    def __init__(self, message: str | None = None, *, txn_id: bytes = b"", primary: int = 0, locked_at: int = 0) -> None:
        super().__init__(message)
        self.txn_id = txn_id
        self.primary = primary
        self.locked_at = locked_at
        """The HLC stamp of the lock's PREPARE entry."""


ERRORS_BY_CODE: dict[int, type[ShardError]] = {
    cls.code: cls
    for cls in (
        EmptyKey,
        KeyNotFound,
        ValueProvided,
        LeaseProvided,
        TooManyOps,
        DuplicateKey,
        RevisionCompacted,
        FutureRevision,
        SlotNotOwned,
        InvalidSplit,
        OutcomeUnknown,
        InvalidCommand,
        LeaseNotFound,
        NoSpace,
        TxnLocked,
    )
}
