"""The log store of the multi-group Raft runtime: its protocol, the RocksDB
implementation, and its key codec.

``LogStore`` (``logstore.py``) is what the runtime uses. ``open_db`` opens the
process's one RocksDB; ``RocksLogStore`` (``rocks.py``) keeps every group's
log, hard state and snapshot metadata in it (``GroupStorage``,
``groupview.py``, is what a group's Raft core reads through) and persists many
groups' Readys, staged in a ``LogBatch`` (``batch.py``), with one write and one
sync. ``keys`` documents the key layout and value records.
"""

from __future__ import annotations

from raft.storage.batch import LogBatch
from raft.storage.groupview import GroupStorage
from raft.storage.logstore import FatalStorageError, LogStore
from raft.storage.rocks import RocksLogStore, open_db

__all__ = [
    "FatalStorageError",
    "GroupStorage",
    "LogBatch",
    "LogStore",
    "RocksLogStore",
    "open_db",
]
