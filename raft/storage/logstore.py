"""The seam between the runtime and its log store: what ``GroupHost`` needs.

``RocksLogStore`` (``raft/storage/rocks.py``) is the real one;
``raft.testing.SimLogStore`` is its in-memory twin, which keeps what was
synced apart from what was only written, so a simulated crash loses the
unsynced part. The protocols name exactly what the host uses:

    view = store.group(group_id)                   # what the Raft core reads (raft.core.Storage)
    lb = store.stage([(group_id, ready), ...])     # every group's Ready in ONE batch
    sm.apply(entries, lb.wb)                       # an application's writes join a batch
    await store.write(lb)                          # ONE write + ONE sync, views change after it
    store.commit(lb, sync=False)                   # inline, for an unsynced write

plus per-batch compaction, snapshots, a group's removal (with a tombstone
kept across restarts) and the bootstrap of a new group. A failed write or
sync raises ``FatalStorageError`` (fail-stop).
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from raft.core.storage import Storage
from raft.core.types import ConfState, Ready, Snapshot

__all__ = [
    "BOOTSTRAP_INDEX",
    "BOOTSTRAP_TERM",
    "FatalStorageError",
    "LogBatchLike",
    "LogStore",
    "WriteBatchLike",
    "is_bootstrap_snapshot",
]

BOOTSTRAP_INDEX = 1
"""Index of the snapshot a bootstrapped group starts from (see LogBatch.bootstrap)."""
BOOTSTRAP_TERM = 1


def is_bootstrap_snapshot(snapshot: Snapshot) -> bool:
    """Whether snapshot is the dataless one a group was bootstrapped with: its
    state machine state is the empty state, there is nothing to restore.
    (No real snapshot has that index: the first entry a group applies is
    BOOTSTRAP_INDEX + 1.)"""
    return snapshot.metadata.index == BOOTSTRAP_INDEX and snapshot.metadata.term == BOOTSTRAP_TERM and not snapshot.data


class FatalStorageError(Exception):
    """A log store write, sync or read failed, or stored data cannot be decoded.

    Fail-stop: the runtime exits the process and recovers by restarting from
    disk. Deliberately not a ``FlotillaError``: no handler of expected outcomes
    may swallow it.
    """


class WriteBatchLike(Protocol):
    """The raw batch an application writes into (a RocksDB WriteBatch, or the
    simulation's in-memory one)."""

    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...

    def delete_range(self, begin: bytes, end: bytes) -> None: ...

    def is_empty(self) -> bool: ...


class LogBatchLike(Protocol):
    """Raft writes of many groups plus an application's own, committed at once."""

    @property
    def wb(self) -> WriteBatchLike: ...

    @property
    def must_sync(self) -> bool: ...

    @property
    def group_ids(self) -> list[int]: ...

    def create_snapshot(self, group_id: int, index: int, conf_state: ConfState, data: bytes = b"") -> Snapshot: ...

    def compact(self, group_id: int, index: int) -> None: ...

    def remove_group(self, group_id: int, *, tombstone: int | None = None) -> None: ...

    def discard(self) -> None: ...


B = TypeVar("B", bound=LogBatchLike)


class LogStore(Protocol[B]):
    """Every group's log, hard state and snapshot metadata in one process
    (generic in its batch type: a store commits only its own batches)."""

    def group(self, group_id: int) -> Storage:
        """The group's view (raft.core.Storage; empty for a group never written).
        It changes only once a batch was written (and synced if it had to be)."""
        ...

    def tombstone(self, group_id: int) -> int | None:
        """What a removal left for group_id (None: nothing, or cleared)."""
        ...

    def batch(self) -> B: ...

    def stage(self, batch: list[tuple[int, Ready]]) -> B:
        """Stage every group's Ready into one new batch."""
        ...

    def commit(self, lb: B, *, sync: bool | None = None) -> None:
        """Write (and sync if sync, default lb.must_sync) blocking the caller;
        raises RaftInvariantError while an asynchronous write is in flight."""
        ...

    async def write(self, lb: B, *, sync: bool | None = None) -> None:
        """Write (and sync if sync, default lb.must_sync) off the event loop."""
        ...

    async def bootstrap(self, group_id: int, conf_state: ConfState) -> None: ...

    async def clear_tombstone(self, group_id: int) -> None: ...
