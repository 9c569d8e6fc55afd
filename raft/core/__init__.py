"""The pure Raft core: no I/O, no clocks, no threads, no global randomness."""

from __future__ import annotations

from raft.core.config import Config
from raft.core.errors import (
    Compacted,
    ConfigInvalid,
    FlotillaError,
    ProposalDropped,
    RaftError,
    RaftInvariantError,
    SnapshotTemporarilyUnavailable,
    StepLocalMessage,
    StepPeerNotFound,
    StorageError,
    Unavailable,
)
from raft.core.rawnode import ProgressStatus, RawNode, Status
from raft.core.storage import MemoryStorage, Storage
from raft.core.tracker import ProgressState
from raft.core.confchange import decode_conf_change, encode_conf_change
from raft.core.types import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    ReadState,
    Ready,
    Snapshot,
    SnapshotMetadata,
    SoftState,
    StateRole,
)

__all__ = [
    "NONE",
    "Compacted",
    "ConfChange",
    "ConfChangeType",
    "ConfState",
    "Config",
    "ConfigInvalid",
    "Entry",
    "EntryKind",
    "FlotillaError",
    "HardState",
    "MemoryStorage",
    "Message",
    "MessageType",
    "ProgressState",
    "ProgressStatus",
    "ProposalDropped",
    "RaftError",
    "RaftInvariantError",
    "RawNode",
    "ReadState",
    "Ready",
    "Snapshot",
    "SnapshotMetadata",
    "SnapshotTemporarilyUnavailable",
    "SoftState",
    "StateRole",
    "Status",
    "StepLocalMessage",
    "StepPeerNotFound",
    "Storage",
    "StorageError",
    "Unavailable",
    "decode_conf_change",
    "encode_conf_change",
]
