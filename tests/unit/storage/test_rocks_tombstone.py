"""A destroyed group's tombstone in the RocksDB log store (issue #7): removing
a group may leave a number in its place, which survives a restart, is not a
group (recovery does not host it), and goes away when cleared or when the
group is removed again without one."""

from __future__ import annotations

from pathlib import Path

from raft.core import ConfState, Entry, HardState, Ready
from raft.storage import RocksLogStore, open_db
from raft.storage import keys
from raft.storage.keys import tombstone_key

CS = ConfState(voters=(1, 2, 3))


def _ready(*entries: Entry) -> Ready:
    return Ready(
        soft_state=None,
        hard_state=HardState(term=2, vote=1, commit=entries[-1].index),
        entries=tuple(entries),
        snapshot=None,
        committed_entries=(),
        messages=(),
        messages_after_persist=(),
        read_states=(),
        must_sync=True,
    )


def _open(path: Path) -> tuple[object, RocksLogStore]:
    db = open_db(path)
    store = RocksLogStore(db)
    store.recover()
    return db, store


def _close(db: object, store: RocksLogStore) -> None:
    store.close()
    db.close()  # type: ignore[attr-defined]


async def test_tombstone_survives_restart_and_hides_the_group(tmp_path: Path) -> None:
    db, store = _open(tmp_path / "db")
    await store.bootstrap(7, CS)
    await store.persist([(7, _ready(Entry(term=2, index=2, data=b"x"), Entry(term=2, index=3, data=b"y")))])
    await store.bootstrap(8, CS)
    assert store.tombstone(7) is None
    await store.remove_group(7, tombstone=5)
    assert store.tombstone(7) == 5
    assert 7 not in store.group_ids() and 8 in store.group_ids()
    # only the tombstone is left of group 7 on disk
    left = [k for k, _ in db.items(from_key=keys.group_start(7)) if k < keys.group_end(7)]  # type: ignore[attr-defined]
    assert left == [tombstone_key(7)]
    _close(db, store)

    db, store = _open(tmp_path / "db")
    assert store.tombstone(7) == 5
    assert store.group_ids() == [8]  # a tombstone is not a group to host
    assert store.group(7).last_index() == 0 and store.group(7).initial_state()[0].is_empty
    await store.clear_tombstone(7)
    assert store.tombstone(7) is None
    _close(db, store)

    db, store = _open(tmp_path / "db")
    assert store.tombstone(7) is None
    _close(db, store)


async def test_removing_again_without_tombstone_drops_it_and_a_live_group_keeps_it(tmp_path: Path) -> None:
    db, store = _open(tmp_path / "db")
    await store.remove_group(3, tombstone=2)
    await store.remove_group(3, tombstone=4)  # twice: the later number
    assert store.tombstone(3) == 4
    # hosted again without clearing: the tombstone and the new log coexist
    await store.bootstrap(3, CS)
    _close(db, store)
    db, store = _open(tmp_path / "db")
    assert store.tombstone(3) == 4 and 3 in store.group_ids()
    await store.remove_group(3)
    assert store.tombstone(3) is None
    _close(db, store)
    db, store = _open(tmp_path / "db")
    assert store.tombstone(3) is None and 3 not in store.group_ids()
    _close(db, store)
