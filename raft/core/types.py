"""Value types of the Raft core: entries, messages, hard/soft state, snapshots, Ready.

Every type here is a frozen, slotted dataclass or an enum: hashable, comparable
and printable, so golden traces and equality assertions are trivial. Entry
payloads are opaque ``bytes`` end to end; only headers are converted at the
transport (``raft/transport/codec.py``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NewType, Protocol

NodeId = NewType("NodeId", int)
Term = NewType("Term", int)
Index = NewType("Index", int)

class RandomSource(Protocol):
    """What the core needs of its injected randomness (random.Random fits):
    a uniform integer in [0, n)."""

    def randrange(self, n: int, /) -> int: ...


NONE: NodeId = NodeId(0)
"""The 'no node' id: node ids are positive; 0 means no leader / no vote."""


class MessageType(enum.IntEnum):
    # Local inputs (never sent over the wire).
    HUP = 0  # start an election (a tick or campaign())
    BEAT = 1  # leader: send heartbeats
    PROP = 2  # a proposal (may be forwarded from a follower to the leader)
    # Peer messages.
    APP = 3
    APP_RESP = 4
    VOTE = 5
    VOTE_RESP = 6
    SNAP = 7
    HEARTBEAT = 8
    HEARTBEAT_RESP = 9
    UNREACHABLE = 10  # local: the transport could not reach `from_`
    SNAP_STATUS = 11  # local: result of sending a snapshot to `from_`
    CHECK_QUORUM = 12  # local: leader checks it heard from a quorum
    TRANSFER_LEADER = 13
    TIMEOUT_NOW = 14
    READ_INDEX = 15
    READ_INDEX_RESP = 16
    PRE_VOTE = 17
    PRE_VOTE_RESP = 18
    FORGET_LEADER = 19  # local: a follower's leader is known to be gone (its process died)


LOCAL_MESSAGES = frozenset(
    {
        MessageType.HUP,
        MessageType.BEAT,
        MessageType.UNREACHABLE,
        MessageType.SNAP_STATUS,
        MessageType.CHECK_QUORUM,
        MessageType.FORGET_LEADER,
    }
)

RESPONSE_MESSAGES = frozenset(
    {
        MessageType.APP_RESP,
        MessageType.VOTE_RESP,
        MessageType.HEARTBEAT_RESP,
        MessageType.UNREACHABLE,
        MessageType.READ_INDEX_RESP,
        MessageType.PRE_VOTE_RESP,
    }
)


class EntryKind(enum.IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


class ConfChangeType(enum.IntEnum):
    ADD_NODE = 0  # add a voter, or promote a learner to voter
    REMOVE_NODE = 1
    ADD_LEARNER = 2  # add a learner (or demote a voter: refused, see confchange)


class StateRole(enum.IntEnum):
    FOLLOWER = 0
    CANDIDATE = 1
    LEADER = 2
    PRE_CANDIDATE = 3


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class ConfState:
    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ConfChange:
    type: ConfChangeType
    node_id: int
    context: bytes = b""


@dataclass(frozen=True, slots=True)
class SnapshotMetadata:
    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    metadata: SnapshotMetadata = field(default_factory=SnapshotMetadata)
    data: bytes = b""

    @property
    def is_empty(self) -> bool:
        return self.metadata.index == 0


@dataclass(frozen=True, slots=True)
class HardState:
    term: int = 0
    vote: int = 0
    commit: int = 0

    @property
    def is_empty(self) -> bool:
        return self == EMPTY_HARD_STATE


EMPTY_HARD_STATE = HardState()


@dataclass(frozen=True, slots=True)
class SoftState:
    leader_id: int
    role: StateRole


@dataclass(frozen=True, slots=True)
class Message:
    type: MessageType
    to: int = 0
    from_: int = 0
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    snapshot: Snapshot | None = None
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""


@dataclass(frozen=True, slots=True)
class ReadState:
    """A ReadIndex answer: reads issued with `request_ctx` may be served once
    the local state machine has applied `index`."""

    index: int
    request_ctx: bytes


@dataclass(frozen=True, slots=True)
class Ready:
    """Everything the core wants done, in this order by the host:

    1. send `messages` (they do not depend on this Ready's persist);
    2. persist `hard_state`, `entries` and `snapshot` (sync if `must_sync`);
    3. send `messages_after_persist` (votes, append acks: durability-dependent);
    4. apply `committed_entries` in order (they may include entries from
       `entries`; the persist in step 2 covers them);
    5. call `RawNode.advance(ready)`.
    """

    soft_state: SoftState | None
    hard_state: HardState | None
    entries: tuple[Entry, ...]
    snapshot: Snapshot | None
    committed_entries: tuple[Entry, ...]
    messages: tuple[Message, ...]
    messages_after_persist: tuple[Message, ...]
    read_states: tuple[ReadState, ...]
    must_sync: bool
