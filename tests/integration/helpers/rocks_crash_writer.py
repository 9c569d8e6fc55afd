"""Persist Raft batches to a RocksLogStore in a loop; print each acknowledged index.

Usage: python rocks_crash_writer.py DB_PATH GROUPS MAX_BATCHES

Every batch appends one entry to each of GROUPS groups (the same index in all
of them) plus the hard state, with one write and one sync. Only after
``persist`` returned does the writer print ``ack <index>`` (flushed): every
printed index is durable. Every 25 batches it also compacts each group's log
below index-10, so truncation runs while the process may be killed. It runs
until killed (the test kills it with SIGKILL) or until MAX_BATCHES.

Entry data is ``g<group>-i<index>`` so a checker can verify every entry.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root

from raft.core import Entry, HardState, Ready  # noqa: E402
from raft.storage import RocksLogStore, open_db  # noqa: E402


def ready(entries: tuple[Entry, ...], hs: HardState) -> Ready:
    return Ready(
        soft_state=None,
        hard_state=hs,
        entries=entries,
        snapshot=None,
        committed_entries=(),
        messages=(),
        messages_after_persist=(),
        read_states=(),
        must_sync=True,
    )


async def main(db_path: str, groups: int, max_batches: int) -> None:
    db = open_db(db_path)
    store = RocksLogStore(db, cache_entries=16)
    recovered = store.recover()
    last = min((g.last_index() for g in recovered.values()), default=0)
    print(f"ready {last}", flush=True)
    for _ in range(max_batches):
        index = last + 1
        batch = [
            (gid, ready((Entry(term=1, index=index, data=b"g%d-i%d" % (gid, index)),), HardState(1, 1, index - 1)))
            for gid in range(1, groups + 1)
        ]
        lb = store.stage(batch)
        if index % 25 == 0:
            for gid in range(1, groups + 1):
                lb.compact(gid, index - 10)
        await store.write(lb)
        last = index
        print(f"ack {index}", flush=True)
    store.close()
    db.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
