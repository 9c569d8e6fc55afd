"""Requests, responses, events and commands of the shard state machine.

Plain frozen dataclasses mirroring etcd's KV API messages (field names and
enum numbers as in etcd's rpc.proto and kv.proto), independent of any
protobuf: the servicer translates. A ``Command`` is what goes into a shard's
Raft log: one request plus the dedup identity (router_id, seq), the leader's
HLC stamp and its closed timestamp (``shard/codec.py`` encodes it).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Union

from shard import slots


class SortOrder(enum.IntEnum):
    NONE = 0
    ASCEND = 1
    DESCEND = 2


class SortTarget(enum.IntEnum):
    KEY = 0
    VERSION = 1
    CREATE = 2
    MOD = 3
    VALUE = 4


class CompareTarget(enum.IntEnum):
    VERSION = 0
    CREATE = 1
    MOD = 2
    VALUE = 3
    LEASE = 4


class CompareResult(enum.IntEnum):
    EQUAL = 0
    GREATER = 1
    LESS = 2
    NOT_EQUAL = 3


class EventType(enum.IntEnum):
    PUT = 0
    DELETE = 1


@dataclass(frozen=True, slots=True, order=True)
class Epoch:
    """A shard's epoch (TiKV's RegionEpoch), kept in the shard's replicated
    meta: conf_version grows with every conf change the shard's group
    applies, slot_version with every split (or merge) it applies."""

    conf_version: int = 1
    slot_version: int = 1


BOOTSTRAP_EPOCH = Epoch(1, 1)


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    value: bytes = b""
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Event:
    """A change at mod_revision. A DELETE's kv carries only the key and the
    revision of the delete (as etcd's does)."""

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None


# --- requests ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RangeRequest:
    key: bytes
    range_end: bytes = b""
    limit: int = 0
    revision: int = 0
    sort_order: SortOrder = SortOrder.NONE
    sort_target: SortTarget = SortTarget.KEY
    serializable: bool = False
    keys_only: bool = False
    count_only: bool = False
    min_mod_revision: int = 0
    max_mod_revision: int = 0
    min_create_revision: int = 0
    max_create_revision: int = 0


@dataclass(frozen=True, slots=True)
class PutRequest:
    key: bytes
    value: bytes = b""
    lease: int = 0
    prev_kv: bool = False
    ignore_value: bool = False
    ignore_lease: bool = False


@dataclass(frozen=True, slots=True)
class DeleteRangeRequest:
    key: bytes
    range_end: bytes = b""
    prev_kv: bool = False


@dataclass(frozen=True, slots=True)
class Compare:
    """`operand` is what the target is compared with: bytes for VALUE, an int
    for VERSION, CREATE, MOD and LEASE."""

    key: bytes
    target: CompareTarget
    result: CompareResult
    operand: int | bytes = 0
    range_end: bytes = b""


@dataclass(frozen=True, slots=True)
class TxnRequest:
    compare: tuple[Compare, ...] = ()
    success: tuple[RequestOp, ...] = ()
    failure: tuple[RequestOp, ...] = ()


RequestOp = Union[RangeRequest, PutRequest, DeleteRangeRequest, TxnRequest]


@dataclass(frozen=True, slots=True)
class CompactionRequest:
    revision: int
    physical: bool = False


@dataclass(frozen=True, slots=True)
class ClosedTs:
    """The leader's closed timestamp, alone in an entry (an idle shard's
    heartbeat through the log): no write of this shard after it gets a
    revision <= ts."""

    ts: int


@dataclass(frozen=True, slots=True)
class Split:
    """The shard gives the slots `moved` to a new shard `new_shard_id`: the
    data stays where it is (keyed by slot) and the new shard's meta starts
    as a copy of this one's. Applying it bumps the shard's slot_version; the
    new shard starts at the same epoch, and every replica then creates the
    new shard's Raft group with the replicas this group has at that index."""

    new_shard_id: int
    moved: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class DeleteLeaseKeys:
    """Delete those of `keys` whose live version is attached to lease_id
    (placement deleting the keys of an ended lease): idempotent, and a key
    rewritten without the lease, or under another one, stays. Keys outside
    the shard's slots are left alone. Answered with a DeleteRangeResponse
    whose `deleted` counts the keys deleted."""

    lease_id: int
    keys: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class PrepareMerge:
    """A merge's first step, in the source shard's log: the source freezes
    (every later entry is refused without effect: writes answer
    SlotNotOwned, so the router refreshes and retries), bumps its
    slot_version and records the index and revision it froze at, for
    `target` (whose epoch was target_epoch when the merge was proposed)."""

    target_shard_id: int
    target_epoch: tuple[int, int] = (0, 0)


@dataclass(frozen=True, slots=True)
class CommitMerge:
    """A merge's second step, in the target shard's log: take over the
    frozen source's slots, revisions, dedup windows and figures (its data is
    already on every replica, keyed by slot). source_index is the index of
    the source's PrepareMerge; each replica applies this only over a local
    source frozen at that index (see ShardStateMachine._commit_merge)."""

    source_shard_id: int
    source_index: int
    source_revision: int
    source_epoch: tuple[int, int] = (0, 0)


class TxnPhase(enum.IntEnum):
    """The steps of a txn across shards (DESIGN.md, "Transactions across
    shards"; shard/txn2pc.py applies them)."""

    PREPARE = 1
    """On every participant: lock the shard for the txn, evaluate the
    compares and checks of the keys it owns."""
    DECIDE = 2
    """On the primary: write the outcome into the txn record (a
    compare-and-set: the first outcome stays) and, on commit, apply the
    primary's part of the branch at the commit revision."""
    COMMIT = 3
    """On a secondary: apply its part of the branch at the decided revision."""
    ABORT = 4
    """On a secondary: drop its lock, applying nothing."""
    RESOLVE = 5
    """On the primary, by whoever met a lock of a txn whose coordinator went
    quiet: the recorded outcome, ABORTED written first if none was."""
    FORGET = 6
    """On the primary, once every participant applied the outcome: drop the record."""


class TxnState(enum.IntEnum):
    PREPARED = 1
    COMMITTED = 2
    ABORTED = 3


@dataclass(frozen=True, slots=True)
class TxnPart:
    """One step of a txn across shards, in one participant's log."""

    phase: TxnPhase
    txn_id: bytes
    primary: int = 0
    """PREPARE: the shard holding the txn record."""
    txn: TxnRequest | None = None
    """PREPARE: the whole txn (every participant keeps it with its lock)."""
    path: tuple[bool, ...] = ()
    """DECIDE (commit) and COMMIT: the branch of the txn and of every nested
    txn on the way, depth first (etcd's compareToPath)."""
    commit: bool = False
    """DECIDE: commit (else abort)."""
    revision: int = 0
    """DECIDE: the commit revision must be above this (every participant's
    prepared floor); COMMIT: the commit revision itself."""
    slot_version: int = 0
    """PREPARE: the shard's slot_version the coordinator planned with (a
    split applied since: refused, the coordinator plans again)."""


Request = Union[
    PutRequest,
    DeleteRangeRequest,
    TxnRequest,
    CompactionRequest,
    ClosedTs,
    Split,
    DeleteLeaseKeys,
    PrepareMerge,
    CommitMerge,
    TxnPart,
]


@dataclass(frozen=True, slots=True)
class Command:
    """One Raft log entry of a shard. router_id 0 means no dedup (internal
    commands such as ClosedTs); closed_ts 0 means none piggybacked."""

    request: Request
    router_id: int = 0
    seq: int = 0
    stamp: int = 0
    closed_ts: int = 0
    seq_floor: int = 0
    """Every seq of router_id below this one has its answer at the router:
    the shard may forget those outcomes (see ShardStateMachine). 0: not
    sent (a router of one write in flight per router id; reads as seq)."""


# --- responses -----------------------------------------------------------------------
# `revision` is etcd's header revision: the shard's revision after the request.


@dataclass(frozen=True, slots=True)
class RangeResponse:
    revision: int
    kvs: tuple[KeyValue, ...] = ()
    more: bool = False
    count: int = 0


@dataclass(frozen=True, slots=True)
class PutResponse:
    revision: int
    prev_kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class DeleteRangeResponse:
    revision: int
    deleted: int = 0
    prev_kvs: tuple[KeyValue, ...] = ()


@dataclass(frozen=True, slots=True)
class TxnResponse:
    revision: int
    succeeded: bool
    responses: tuple[ResponseOp, ...] = ()


ResponseOp = Union[RangeResponse, PutResponse, DeleteRangeResponse, TxnResponse]


@dataclass(frozen=True, slots=True)
class CompactionResponse:
    revision: int


@dataclass(frozen=True, slots=True)
class AckResponse:
    """The outcome of ClosedTs and Split entries."""

    revision: int


@dataclass(frozen=True, slots=True)
class TxnPartResponse:
    """A participant's answer to a TxnPart.

    PREPARE: `revision` is its floor (the commit revision must be above it),
    `compares` one entry per compare of the txn (nested ones included, depth
    first): 0 not this shard's, else COMPARE_TRUE/FALSE (with keys seen) or
    COMPARE_TRUE_EMPTY/FALSE_EMPTY (no key of the compare here);
    `owned` the ops (depth first over success then failure) whose single
    key or one-slot range this shard owns; `failed` (op index, error code)
    of ops this shard would refuse if their branch ran (etcd's checkTxn).
    DECIDE / COMMIT / RESOLVE: `state`, the commit `revision`, the recorded
    `path` (RESOLVE), and `txn`, this participant's responses of the branch."""

    state: TxnState
    revision: int = 0
    compares: tuple[int, ...] = ()
    owned: tuple[int, ...] = ()
    failed: tuple[tuple[int, int], ...] = ()
    path: tuple[bool, ...] = ()
    txn: TxnResponse | None = None


COMPARE_TRUE, COMPARE_FALSE, COMPARE_TRUE_EMPTY, COMPARE_FALSE_EMPTY = 1, 2, 3, 4


Response = Union[PutResponse, DeleteRangeResponse, TxnResponse, CompactionResponse, AckResponse, RangeResponse, TxnPartResponse]


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """A replica as its store node sees it (the admin Status; shard/node/status.py
    makes it, EpochNotMatch carries the related ones)."""

    shard_id: int
    epoch: Epoch
    slot_count: int
    slot_ranges: slots.SlotRanges
    voters: tuple[int, ...]
    learners: tuple[int, ...]
    leader_node_id: int
    is_leader: bool
    term: int
    commit_index: int
    applied_index: int
    revision: int
    compact_revision: int
    closed_ts: int
    watchers: int
    reads: int = 0
    """Range requests this replica received since the process started."""
    writes: int = 0
    """Write requests this replica received as leader since the process started."""
