"""The RocksDB log store of the multi-group Raft runtime, and its key codec.

``open_db`` opens the process's one RocksDB; ``RocksLogStore`` keeps every
group's log, hard state and snapshot metadata in it (``GroupStorage`` is what a
group's Raft core reads through) and persists many groups' Readys with one
write and one sync. ``keys`` documents the key layout and value records.
"""

from __future__ import annotations

from raft.storage.rocks import FatalStorageError, GroupStorage, LogBatch, RocksLogStore, open_db

__all__ = [
    "FatalStorageError",
    "GroupStorage",
    "LogBatch",
    "RocksLogStore",
    "open_db",
]
