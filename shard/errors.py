"""Errors of the shard state machine.

    FlotillaError
      ShardError                    an expected outcome; `message` is etcd's exact text
        RequestError                bad request: etcd answers INVALID_ARGUMENT
          EmptyKey                  "etcdserver: key is not provided"
          KeyNotFound               "etcdserver: key not found" (ignore_value/ignore_lease)
          ValueProvided             "etcdserver: value is provided"
          LeaseProvided             "etcdserver: lease is provided"
          TooManyOps                "etcdserver: too many operations in txn request"
          DuplicateKey              "etcdserver: duplicate key given in txn request"
        RevisionError               etcd answers OUT_OF_RANGE
          RevisionCompacted         "etcdserver: mvcc: required revision has been compacted"
          FutureRevision            "etcdserver: mvcc: required revision is a future revision"
        SlotNotOwned                the shard does not own the key's slot (routing: refresh and retry)
        InvalidSplit                a split that does not divide the shard's slots
        OutcomeUnknown              a retried command older than its router's latest applied one
                                    (the router answers UNAVAILABLE, never applies it twice)
        LeaseNotFound               "etcdserver: requested lease not found" (a put names a lease placement does not have)
        NoSpace                     "etcdserver: mvcc: database space exceeded" (the node's NOSPACE alarm is
                                    active: shard/quota.py; refused before proposing, never logged)
        InvalidCommand              a log entry that does not decode (a bug upstream; it is
                                    answered, not applied, on every replica alike)

Only router/etcd_errors.py maps these to gRPC statuses. Each class has a
stable `code` (stored in the dedup table with a command's outcome).
"""

from __future__ import annotations

from raft.core.errors import FlotillaError


class ShardError(FlotillaError):
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
    message = "etcdserver: key is not provided"


class KeyNotFound(RequestError):
    code = 2
    message = "etcdserver: key not found"


class ValueProvided(RequestError):
    code = 3
    message = "etcdserver: value is provided"


class LeaseProvided(RequestError):
    code = 4
    message = "etcdserver: lease is provided"


class TooManyOps(RequestError):
    code = 5
    message = "etcdserver: too many operations in txn request"


class DuplicateKey(RequestError):
    code = 6
    message = "etcdserver: duplicate key given in txn request"


class RevisionError(ShardError):
    pass


class RevisionCompacted(RevisionError):
    code = 7
    message = "etcdserver: mvcc: required revision has been compacted"


class FutureRevision(RevisionError):
    code = 8
    message = "etcdserver: mvcc: required revision is a future revision"


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
    message = "etcdserver: requested lease not found"


class NoSpace(ShardError):
    code = 14
    message = "etcdserver: mvcc: database space exceeded"


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
    )
}
