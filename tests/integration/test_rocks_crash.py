"""kill -9 a process that persists Raft batches: everything it acknowledged survives.

The writer (helpers/rocks_crash_writer.py) prints ``ack <index>`` only after
``RocksLogStore.write`` returned, i.e. after the batch's WAL sync. The test
reads some acknowledgements, SIGKILLs the writer (by its pid), restarts it on
the same DB (it resumes from what it recovers), kills it again, then reopens
the DB and checks that every group holds every acknowledged index and that
each log is one consistent run without holes.

A SIGKILL loses the process, not the page cache, so this checks the store's
own crash consistency (write ordering, recovery, compaction under crash);
power-loss durability rests on the WAL fsync (flush_wal(sync=True)).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from raft.core import Entry, HardState
from raft.storage import RocksLogStore, open_db
from tests.integration import killwriter

pytestmark = [pytest.mark.integration, pytest.mark.fault]

WRITER = Path(__file__).parent / "helpers" / "rocks_crash_writer.py"
GROUPS = 8
DEADLINE_S = 30.0


def run_and_kill(db_path: Path, acks_wanted: int, log_path: Path) -> tuple[int, int]:
    """Start the writer, read until acks_wanted acknowledgements (or the
    deadline), SIGKILL it. Returns (index it started from, highest acked index)."""
    return killwriter.run_and_kill([sys.executable, str(WRITER), str(db_path), str(GROUPS), "1000000"], acks_wanted, log_path, DEADLINE_S, first_follows_ready=False)


def test_every_acknowledged_index_survives_kill_9(tmp_path: Path) -> None:
    db_path = tmp_path / "db"
    log_path = tmp_path / "writer.stderr"
    start1, acked1 = run_and_kill(db_path, 150, log_path)
    assert start1 == 0 and acked1 >= 150
    start2, acked2 = run_and_kill(db_path, 100, log_path)
    assert start2 >= acked1, "the restarted writer recovered less than was acknowledged"
    assert acked2 >= start2 + 100

    db = open_db(db_path)
    store = RocksLogStore(db)
    try:
        groups = store.recover(verify=True)  # verify: no hole anywhere in any log
        assert sorted(groups) == list(range(1, GROUPS + 1))
        lasts = {g.last_index() for g in groups.values()}
        assert len(lasts) == 1, f"groups disagree on the last index: {lasts}"  # one batch, atomically
        last = lasts.pop()
        assert last >= acked2
        for gid, g in groups.items():
            first = g.first_index()
            assert last - 35 <= first - 1 <= last - 10, "compaction ran and kept the recent log"
            entries = g.entries(first, last + 1)
            assert entries == [Entry(term=1, index=i, data=b"g%d-i%d" % (gid, i)) for i in range(first, last + 1)]
            assert g.term(first - 1) == 1
            assert g.initial_state()[0] == HardState(1, 1, last - 1)
    finally:
        store.close()
        db.close()
