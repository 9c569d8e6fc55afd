"""Apply shard writes through ShardStateMachine on RocksDB in a loop; print each acknowledged index.

Usage: python apply_crash_writer.py DB_PATH MAX_ENTRIES

The writer resumes at the shard's applied index (what RocksDB kept) and
applies entry after entry, as the store's ready loop does: a fresh WriteBatch,
``sm.apply``, ``sm.on_applied_index``, then one write with sync=True. Only
after that write returned does it print ``ack <index>`` (flushed). Entry i is
a write of key ``k<i % 7>``: a delete when i % 5 == 0, else a put of value
``v<i>``, so a checker can recompute every key's create_revision, version
and mod_revision from the applied index alone (stamps are 0: each write that
changes something takes the next revision). It runs until killed (the test
kills it with SIGKILL) or until MAX_ENTRIES.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root

import rocksdict  # noqa: E402

from raft.core import Entry  # noqa: E402
from raft.storage import open_db  # noqa: E402
from shard.codec import encode_command  # noqa: E402
from shard.rocks import RocksEngine  # noqa: E402
from shard.statemachine import ShardStateMachine  # noqa: E402
from shard.types import Command, DeleteRangeRequest, PutRequest, Request  # noqa: E402

SHARD_ID = 3
SLOTS = 16


def request_of(index: int) -> Request:
    key = b"k%d" % (index % 7)
    return DeleteRangeRequest(key) if index % 5 == 0 else PutRequest(key, b"v%d" % index)


def main(db_path: str, max_entries: int) -> None:
    db = open_db(db_path)
    engine = RocksEngine(db)
    sm = ShardStateMachine(engine, SHARD_ID, SLOTS)
    synced = rocksdict.WriteOptions()
    synced.sync = True
    last = sm.applied_index()
    print(f"ready {last}", flush=True)
    for _ in range(max_entries):
        index = last + 1
        wb = engine.new_batch()
        sm.apply([Entry(term=1, index=index, data=encode_command(Command(request_of(index))))], wb)
        sm.on_applied_index(index, wb)
        db.write(wb, synced)
        last = index
        print(f"ack {index}", flush=True)
    db.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
