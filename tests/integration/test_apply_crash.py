"""kill -9 a process applying shard writes: what it acknowledged survives, and
the versions it gives after a restart continue from what RocksDB kept.

The apply step finds each key's live version through an in-memory index
(shard/keyindex.py), which a crash loses. The writer
(helpers/apply_crash_writer.py) applies puts and deletes of 7 keys, one
synced apply batch per entry, and prints ``ack <index>`` after each write.
The test SIGKILLs it (by its pid) twice after some acknowledgements,
restarting it on the same DB in between (it resumes from the applied index
RocksDB holds), then reopens the DB and checks every key's create_revision,
mod_revision, version and value, and every event of its history, against a
model recomputed from the applied index alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from raft.storage import open_db
from shard.rocks import RocksEngine
from shard.statemachine import ShardStateMachine
from shard.types import EventType, PutRequest, RangeRequest
from tests.integration import killwriter

pytestmark = [pytest.mark.integration, pytest.mark.fault]

HELPERS = Path(__file__).parent / "helpers"
sys.path.insert(0, str(HELPERS))
from apply_crash_writer import SHARD_ID, SLOTS, request_of  # noqa: E402

WRITER = HELPERS / "apply_crash_writer.py"
DEADLINE_S = 30.0


def run_and_kill(db_path: Path, acks_wanted: int, log_path: Path) -> tuple[int, int]:
    """Start the writer, read until acks_wanted acknowledgements (or the
    deadline), SIGKILL it. Returns (index it started from, highest acked index)."""
    return killwriter.run_and_kill([sys.executable, str(WRITER), str(db_path), "1000000"], acks_wanted, log_path, DEADLINE_S, first_follows_ready=True)


def model_of(applied: int) -> tuple[int, dict[bytes, tuple[int, int, int, bytes]]]:
    """(revision, {key: (create_revision, mod_revision, version, value)})
    after entries 1..applied of the writer (stamp 0: revisions count up by
    one per write that changes something)."""
    rev = 0
    live: dict[bytes, tuple[int, int, int, bytes]] = {}
    for i in range(1, applied + 1):
        req = request_of(i)
        if isinstance(req, PutRequest):
            rev += 1
            old = live.get(req.key)
            live[req.key] = (old[0], rev, old[2] + 1, req.value) if old else (rev, rev, 1, req.value)
        elif req.key in live:
            rev += 1
            del live[req.key]
    return rev, live


def test_versions_after_kill_9_continue_from_what_rocksdb_kept(tmp_path: Path) -> None:
    db_path = tmp_path / "db"
    log_path = tmp_path / "writer.stderr"
    start1, acked1 = run_and_kill(db_path, 60, log_path)
    assert start1 == 0 and acked1 >= 60
    start2, acked2 = run_and_kill(db_path, 60, log_path)
    assert start2 >= acked1, "the restarted writer recovered less than was acknowledged"
    start3, acked3 = run_and_kill(db_path, 30, log_path)
    assert start3 >= acked2 and acked3 >= start3 + 30

    db = open_db(db_path)
    try:
        sm = ShardStateMachine(RocksEngine(db), SHARD_ID, SLOTS)
        applied = sm.applied_index()
        assert applied >= acked3
        rev, live = model_of(applied)
        assert sm.revision == rev
        kvs = sm.range(RangeRequest(b"\x00", b"\x00")).kvs
        got = {kv.key: (kv.create_revision, kv.mod_revision, kv.version, kv.value) for kv in kvs}
        assert got == live
        # every event of the history chains: a put after a delete starts at
        # version 1, created there; any other put is its predecessor's version + 1
        for key in (b"k%d" % i for i in range(7)):
            prev: tuple[int, int] | None = None  # (create, version) of the live version
            for ev in sm.events_since(key, b"", 1):
                if ev.type == EventType.DELETE:
                    assert prev is not None, ev
                    prev = None
                    continue
                want = (ev.kv.mod_revision, 1) if prev is None else (prev[0], prev[1] + 1)
                assert (ev.kv.create_revision, ev.kv.version) == want, ev
                prev = want
            assert (prev is None) == (key not in live)
    finally:
        db.close()
