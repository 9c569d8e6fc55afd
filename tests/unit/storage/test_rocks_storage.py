"""The RocksDB log store (raft/storage) against a real RocksDB in tmp_path.

- Storage-protocol conformance: the same operations applied to MemoryStorage
  (the in-memory twin) and to a GroupStorage must give the same observable
  answers, including errors; run with a cache that holds everything and with
  a tiny one (older entries then come from RocksDB), and with every operation
  in its own batch or all in one batch.
- Restart: 100 groups with different logs, hard states and snapshots are
  recovered exactly.
- Group commit: a batch spanning 100 groups is one RocksDB write and one sync.
- Fail-stop: a failing write or sync raises FatalStorageError, poisons the
  store, and leaves every in-memory view as it was.
"""

from __future__ import annotations

import asyncio
import functools
import random
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pytest
import rocksdict

from raft.core import (
    Compacted,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    MemoryStorage,
    RaftInvariantError,
    Ready,
    Snapshot,
    SnapshotMetadata,
    Unavailable,
)
from raft.storage import FatalStorageError, GroupStorage, LogBatch, RocksLogStore, open_db
from raft.storage import keys

# -- helpers ---------------------------------------------------------------------


def ents(first: int, *terms: int, size: int | None = None) -> list[Entry]:
    """Entries at first, first+1, ... with the given terms; data names them
    (or is `size` bytes long)."""
    out = []
    for k, t in enumerate(terms):
        i = first + k
        data = b"i%d" % i if size is None else bytes([i % 251]) * size
        out.append(Entry(term=t, index=i, data=data))
    return out


def ready(
    *,
    entries: Sequence[Entry] = (),
    hard_state: HardState | None = None,
    snapshot: Snapshot | None = None,
    must_sync: bool | None = None,
) -> Ready:
    return Ready(
        soft_state=None,
        hard_state=hard_state,
        entries=tuple(entries),
        snapshot=snapshot,
        committed_entries=(),
        messages=(),
        messages_after_persist=(),
        read_states=(),
        must_sync=bool(entries) if must_sync is None else must_sync,
    )


def snap(index: int, term: int, voters: tuple[int, ...] = (1, 2, 3), data: bytes = b"") -> Snapshot:
    return Snapshot(SnapshotMetadata(index=index, term=term, conf_state=ConfState(voters=voters)), data)


class Spy:
    """A DB wrapper that counts calls and can inject failures; everything else
    is delegated to the real Rdict."""

    def __init__(self, db: rocksdict.Rdict) -> None:
        self._db = db
        self.writes = 0
        self.syncs = 0
        self.snapshot_gets = 0
        self.fail_write: Exception | None = None
        self.fail_sync: Exception | None = None
        self.sync_gate: threading.Event | None = None  # flush_wal waits on it
        self.written = threading.Event()

    def write(self, wb: rocksdict.WriteBatch, opts: rocksdict.WriteOptions) -> None:
        self.writes += 1
        if self.fail_write is not None:
            raise self.fail_write
        self._db.write(wb, opts)
        self.written.set()

    def flush_wal(self, sync: bool) -> None:
        self.syncs += 1
        if self.sync_gate is not None:
            assert self.sync_gate.wait(10), "sync gate never opened"
        if self.fail_sync is not None:
            raise self.fail_sync
        self._db.flush_wal(sync)

    def snapshot(self) -> CountingSnapshot:
        return CountingSnapshot(self, self._db.snapshot())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


class CountingSnapshot:
    """A RocksDB snapshot whose point reads the Spy counts."""

    def __init__(self, spy: Spy, inner: Any) -> None:
        self._spy = spy
        self._inner = inner

    def __getitem__(self, key: bytes) -> bytes:
        self._spy.snapshot_gets += 1
        value: bytes = self._inner[key]
        return value


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "db"


@dataclass
class Opened:
    db: rocksdict.Rdict
    spy: Spy
    store: RocksLogStore
    closed: bool = False


@pytest.fixture
def opener(db_path: Path) -> Iterator[Callable[..., Opened]]:
    """Opens (and at teardown closes) stores over the DB at db_path."""
    opened: list[Opened] = []

    def open_store(**kw: Any) -> Opened:
        kw.setdefault("keep_snapshot_data", True)
        db = open_db(db_path)
        spy = Spy(db)
        store = RocksLogStore(spy, **kw)  # type: ignore[arg-type]
        o = Opened(db, spy, store)
        opened.append(o)
        return o

    yield open_store
    for o in opened:
        close(o)


def close(o: Opened) -> None:
    if not o.closed:
        o.closed = True
        o.store.close()
        o.db.close()


def outcome(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except (Compacted, Unavailable, RaftInvariantError) as exc:
        return type(exc)


def observe(s: Any, *, every_span: bool = True) -> dict[str, Any]:
    """Everything a reader can see through the Storage protocol (with
    every_span=False, entries() only over a sample of spans)."""
    first, last = s.first_index(), s.last_index()
    obs: dict[str, Any] = {
        "first": first,
        "last": last,
        "initial_state": s.initial_state(),
        "snapshot": s.snapshot(),
        "terms": [outcome(functools.partial(s.term, i)) for i in range(max(0, first - 3), last + 3)],
    }
    spans = []
    los = range(max(0, first - 2), last + 3) if every_span else sorted({first - 1, first, (first + last) // 2, last})
    for lo in los:
        his = range(lo, last + 3) if every_span else sorted({lo, lo + 1, last + 1, last + 2})
        for hi in his:
            for max_size in (None, 0, 3, 7, 20):
                spans.append(outcome(functools.partial(s.entries, lo, hi, max_size)))
    obs["entries"] = spans
    return obs


# -- conformance against MemoryStorage -------------------------------------------

Op = tuple[Any, ...]

CS = ConfState(voters=(1, 2, 3))

SCENARIOS: dict[str, list[Op]] = {
    "empty": [],
    "append": [("append", ents(1, 1, 1, 2, 2, 3))],
    "append in pieces": [("append", ents(1, 1, 1)), ("append", ents(3, 1)), ("append", ents(4, 2, 2))],
    "conflicting suffix truncated": [("append", ents(1, 1, 1, 1, 1, 1, 1, 1, 1)), ("append", ents(4, 2, 2))],
    "truncate to first entry": [("append", ents(1, 1, 1, 1, 1)), ("append", ents(1, 2))],
    "overlap same terms extends": [("append", ents(1, 1, 1, 1)), ("append", ents(2, 1, 1, 1, 1, 1))],
    "gap is an invariant error": [("append", ents(1, 1, 1)), ("append", ents(5, 1))],
    "hard state": [("hs", HardState(term=3, vote=2, commit=1)), ("append", ents(1, 3)), ("hs", HardState(3, 2, 1))],
    "compact": [("append", ents(1, 1, 1, 2, 2, 3, 3, 3)), ("compact", 4), ("compact", 2), ("compact", 4)],
    "compact everything": [("append", ents(1, 1, 1, 2)), ("compact", 3), ("append", ents(4, 2, 5))],
    "compact beyond last is an invariant error": [("append", ents(1, 1, 1)), ("compact", 4)],
    "append below offset is trimmed": [
        ("append", ents(1, 1, 1, 1, 1, 1, 1)),
        ("compact", 5),
        ("append", ents(2, 1, 1)),
        ("append", ents(3, 1, 1, 1, 2, 2, 2)),
    ],
    "apply snapshot then append": [
        ("append", ents(1, 1, 1, 1)),
        ("snapshot", snap(10, 3, data=b"state@10")),
        ("append", ents(11, 3, 4)),
    ],
    "stale snapshot ignored": [
        ("snapshot", snap(10, 3)),
        ("append", ents(11, 3, 3)),
        ("snapshot", snap(5, 2)),
        ("snapshot", snap(10, 3)),
    ],
    "snapshot below last drops the log": [("append", ents(1, 1, 1, 1, 1, 1)), ("snapshot", snap(3, 1))],
    "create snapshot, compact, append": [
        ("append", ents(1, 1, 1, 2, 2, 2, 3)),
        ("create", 4, ConfState(voters=(1, 2), learners=(5,)), b"applied@4"),
        ("create", 2, CS, b"older: ignored"),
        ("compact", 4),
        ("append", ents(6, 4, 4)),
    ],
    "create snapshot beyond last is an invariant error": [("append", ents(1, 1)), ("create", 3, CS, b"")],
    "sizes": [("append", ents(1, 1, 1, 1, size=4) + ents(4, 1, 1, size=0) + ents(6, 1, 1, 1, size=9))],
    "bootstrap": [("bootstrap", ConfState(voters=(1, 2, 3), learners=(4,))), ("append", ents(2, 1, 1))],
}


def apply_to_memory(ms: MemoryStorage, op: Op) -> None:
    kind = op[0]
    if kind == "append":
        ms.append(op[1])
    elif kind == "hs":
        ms.set_hard_state(op[1])
    elif kind == "compact":
        ms.compact(op[1])
    elif kind == "snapshot":
        ms.apply_snapshot(op[1])
    elif kind == "create":
        ms.create_snapshot(op[1], op[2], op[3])
    elif kind == "bootstrap":
        pass  # MemoryStorage gets its bootstrap conf state from its constructor
    else:
        raise AssertionError(kind)


def stage(lb: LogBatch, group_id: int, op: Op) -> None:
    kind = op[0]
    if kind == "append":
        lb.append(group_id, op[1])
    elif kind == "hs":
        lb.set_hard_state(group_id, op[1])
    elif kind == "compact":
        lb.compact(group_id, op[1])
    elif kind == "snapshot":
        lb.apply_snapshot(group_id, op[1])
    elif kind == "create":
        lb.create_snapshot(group_id, op[1], op[2], op[3])
    elif kind == "bootstrap":
        lb.bootstrap(group_id, op[1])
    else:
        raise AssertionError(kind)


def memory_for(ops: list[Op]) -> MemoryStorage:
    """The memory twin; a bootstrap is a snapshot at (1, 1) carrying the
    conf state, and a hard state at that term and commit (RocksLogStore.bootstrap)."""
    boot = [op[1] for op in ops if op[0] == "bootstrap"]
    ms = MemoryStorage()
    if boot:
        ms.apply_snapshot(Snapshot(SnapshotMetadata(1, 1, boot[0])))
        ms.set_hard_state(HardState(1, 0, 1))
    return ms


@pytest.mark.parametrize("cache", ["all", "tiny", "bytes"])
@pytest.mark.parametrize("one_batch", [False, True], ids=["batch-per-op", "one-batch"])
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_group_storage_conforms_to_memory_storage(
    opener: Callable[..., Opened], name: str, one_batch: bool, cache: str
) -> None:
    kw = {"all": {}, "tiny": {"cache_entries": 2}, "bytes": {"cache_bytes": 5}}[cache]
    o = opener(**kw)
    store = o.store
    store.recover()
    ops = SCENARIOS[name]
    ms = memory_for(ops)
    gs = store.group(42)
    lb = store.batch()
    for op in ops:
        want = outcome(lambda: apply_to_memory(ms, op))
        got = outcome(lambda: stage(lb, 42, op))
        assert got == want, f"{op[0]}: memory {want!r}, rocks {got!r}"
        if not one_batch:
            store.commit(lb)
            lb = store.batch()
            assert observe(gs) == observe(ms), op
    store.commit(lb)
    assert observe(gs) == observe(ms)

    # And exactly the same after a restart.
    close(o)
    o2 = opener(**kw)
    groups = o2.store.recover(verify=True)
    if ops:
        assert list(groups) == [42]
    assert observe(o2.store.group(42)) == observe(ms)


def test_readies_are_staged_like_the_memory_host(opener: Callable[..., Opened]) -> None:
    """snapshot, then entries, then hard state: the order RawNode's docs prescribe."""
    store = opener().store
    store.recover()
    ms = MemoryStorage()
    rds = [
        ready(entries=ents(1, 1, 1, 1), hard_state=HardState(1, 1, 0)),
        ready(hard_state=HardState(1, 1, 2), must_sync=False),
        ready(snapshot=snap(8, 2, data=b"s"), entries=ents(9, 2, 2), hard_state=HardState(2, 3, 8), must_sync=True),
        ready(entries=ents(10, 3)),
    ]
    for rd in rds:
        if rd.snapshot is not None:
            ms.apply_snapshot(rd.snapshot)
        ms.append(rd.entries)
        if rd.hard_state is not None:
            ms.set_hard_state(rd.hard_state)
        lb = store.stage([(5, rd)])
        assert lb.must_sync == rd.must_sync
        store.commit(lb)
        assert observe(store.group(5)) == observe(ms)


def test_entry_kinds_and_empty_data_round_trip(opener: Callable[..., Opened]) -> None:
    o = opener(cache_entries=0)
    o.store.recover()
    e = [Entry(1, 1, EntryKind.CONF_CHANGE, b"\x00cc"), Entry(1, 2, EntryKind.NORMAL, b""), Entry(2**63, 3, data=b"x" * 1000)]
    lb = o.store.batch()
    lb.append(2**64 - 1, e)
    o.store.commit(lb)
    assert o.store.group(2**64 - 1).entries(1, 4) == e
    close(o)
    o2 = opener()
    o2.store.recover(verify=True)
    got = o2.store.group(2**64 - 1).entries(1, 4)
    assert got == e and [x.kind for x in got] == [EntryKind.CONF_CHANGE, EntryKind.NORMAL, EntryKind.NORMAL]


# -- recovery ----------------------------------------------------------------------


def random_history(rng: random.Random, group_id: int) -> list[Op]:
    """A random but valid history of one group's log operations."""
    ops: list[Op] = []
    ms = MemoryStorage()
    term = 1
    for _ in range(rng.randint(0, 12)):
        choice = rng.random()
        last, first = ms.last_index(), ms.first_index()
        if choice < 0.5:
            start = rng.randint(first, last + 1) if rng.random() < 0.3 else last + 1
            term += rng.random() < 0.3
            op: Op = ("append", ents(start, *[term] * rng.randint(1, 20), size=rng.choice([None, 0, 40])))
        elif choice < 0.65:
            op = ("hs", HardState(term=term, vote=rng.choice([0, 1, 2, 3]), commit=rng.randint(0, last)))
        elif choice < 0.75 and last >= first:
            op = ("compact", rng.randint(first - 1, last))
        elif choice < 0.85 and last >= first:
            idx = rng.randint(first, last)
            op = ("create", idx, ConfState(voters=(1, 2, group_id % 7 + 3)), b"g%d@%d" % (group_id, idx))
        else:
            term += 1
            idx = last + rng.randint(1, 50)
            op = ("snapshot", snap(idx, term, voters=(group_id % 5 + 1,), data=b"snap%d" % idx))
        apply_to_memory(ms, op)
        ops.append(op)
    return ops


def test_restart_recovers_every_group_exactly(opener: Callable[..., Opened]) -> None:
    rng = random.Random(7)
    histories = {gid: random_history(rng, gid) for gid in range(1, 101)}
    memories = {gid: memory_for(ops) for gid, ops in histories.items()}
    o = opener(cache_entries=4)
    o.store.recover()
    # Interleave the groups' histories, several groups per batch, as the ready loop does.
    cursors = {gid: 0 for gid in histories}
    while any(cursors[g] < len(histories[g]) for g in histories):
        lb = o.store.batch()
        for gid in rng.sample(sorted(histories), 30):
            for _ in range(rng.randint(1, 3)):
                if cursors[gid] < len(histories[gid]):
                    op = histories[gid][cursors[gid]]
                    apply_to_memory(memories[gid], op)
                    stage(lb, gid, op)
                    cursors[gid] += 1
        o.store.commit(lb)
    written = {gid for gid, ops in histories.items() if ops}
    for gid in written:
        assert observe(o.store.group(gid), every_span=False) == observe(memories[gid], every_span=False), gid
    close(o)

    o2 = opener(cache_entries=4)
    groups = o2.store.recover(verify=True)
    assert set(groups) == written
    for gid in written:
        assert observe(groups[gid], every_span=False) == observe(memories[gid], every_span=False), gid
        assert groups[gid].entries(groups[gid].first_index(), groups[gid].last_index() + 1) == memories[gid].entries(
            memories[gid].first_index(), memories[gid].last_index() + 1
        )
    assert o2.store.group_ids() == sorted(written)


def test_other_prefixes_are_not_mistaken_for_groups(opener: Callable[..., Opened]) -> None:
    o = opener()
    o.db[b"\x00shard"] = b"1"
    o.db[b"\x02placement"] = b"2"
    o.db[b"\xffzzz"] = b"3"
    assert o.store.recover() == {}


def test_corrupt_record_is_fatal_on_recovery(opener: Callable[..., Opened]) -> None:
    o = opener()
    o.store.recover()
    lb = o.store.batch()
    lb.append(3, ents(1, 1, 1))
    o.store.commit(lb)
    o.db[keys.hard_state_key(3)] = b"\x09garbage"  # unknown format version
    close(o)
    o2 = opener()
    with pytest.raises(FatalStorageError):
        o2.store.recover()


def test_hole_in_log_is_fatal_on_recovery(opener: Callable[..., Opened]) -> None:
    o = opener()
    o.store.recover()
    lb = o.store.batch()
    lb.append(3, ents(1, 1, 1, 1, 1, 1))
    o.store.commit(lb)
    del o.db[keys.log_key(3, 3)]
    close(o)
    with pytest.raises(FatalStorageError, match="hole"):
        opener().store.recover()


# -- reading ------------------------------------------------------------------


def test_entries_beyond_the_cache_come_from_rocksdb(opener: Callable[..., Opened]) -> None:
    o = opener(cache_entries=8)
    o.store.recover()
    ms = MemoryStorage()
    for start in range(1, 101, 10):
        lb = o.store.batch()
        lb.append(1, ents(start, *[1] * 10))
        ms.append(ents(start, *[1] * 10))
        o.store.commit(lb)
    gs = o.store.group(1)
    assert gs.cached_first_index() == 93
    spy = o.spy
    spy.snapshot_gets = 0
    assert gs.entries(93, 101) == ms.entries(93, 101)
    assert [gs.term(i) for i in range(93, 101)] == [1] * 8
    assert spy.snapshot_gets == 0, "the hot tail must be served from memory"
    assert gs.entries(1, 101) == ms.entries(1, 101)
    assert spy.snapshot_gets == 92
    spy.snapshot_gets = 0
    assert gs.entries(1, 101, max_size=10) == ms.entries(1, 101, max_size=10)
    assert spy.snapshot_gets == 6, "reading stops at the first entry over max_size"
    assert gs.term(50) == 1


def test_a_trimmed_cache_keeps_the_last_entry_and_reads_the_rest_back(opener: Callable[..., Opened]) -> None:
    """A group gone quiet keeps only its last entry in memory (issue #20);
    the log reads the same, and appending goes on from there."""
    o = opener(cache_entries=64)
    o.store.recover()
    ms = MemoryStorage()
    lb = o.store.batch()
    lb.append(1, ents(1, 1, 1, 2, 2, 3))
    ms.append(ents(1, 1, 1, 2, 2, 3))
    o.store.commit(lb)
    gs = o.store.group(1)
    assert gs.cached_first_index() == 1
    gs.trim_cache()
    assert gs.cached_first_index() == 5
    o.spy.snapshot_gets = 0
    assert gs.term(5) == 3 and o.spy.snapshot_gets == 0, "the last entry's term is served from memory"
    assert gs.entries(1, 6) == ms.entries(1, 6)
    assert [gs.term(i) for i in range(1, 6)] == [1, 1, 2, 2, 3]
    # appending after it, and overwriting a suffix, still work from the trimmed cache
    lb = o.store.batch()
    lb.append(1, ents(6, 3, 3))
    ms.append(ents(6, 3, 3))
    o.store.commit(lb)
    assert gs.cached_first_index() == 5 and gs.entries(1, 8) == ms.entries(1, 8)
    gs.trim_cache()
    lb = o.store.batch()
    lb.append(1, ents(4, 4, 4))
    ms.append(ents(4, 4, 4))
    o.store.commit(lb)
    assert gs.last_index() == 5 and gs.entries(1, 6) == ms.entries(1, 6)
    assert [gs.term(i) for i in range(1, 6)] == [1, 1, 2, 4, 4]


async def test_unsynced_batch_is_invisible_until_its_sync_completes(opener: Callable[..., Opened]) -> None:
    """The view changes only after the sync; reads of older entries (from
    RocksDB) do not see the memtable state of a batch still being synced."""
    o = opener(cache_entries=2)
    store, spy = o.store, o.spy
    store.recover()
    lb = store.batch()
    lb.append(1, ents(1, *[1] * 10))
    lb.set_hard_state(1, HardState(1, 1, 2))
    await store.write(lb)
    gs = store.group(1)
    before = observe(gs)

    spy.sync_gate = threading.Event()
    spy.written.clear()
    task = asyncio.create_task(
        store.persist([(1, ready(entries=ents(3, 2, 2), hard_state=HardState(2, 2, 3)))])
    )
    try:
        assert await asyncio.to_thread(spy.written.wait, 10)  # written to RocksDB, sync blocked
        assert gs.last_index() == 10 and gs.hard_state == HardState(1, 1, 2)
        assert observe(gs) == before  # entries 3.. still read with their old term
    finally:
        spy.sync_gate.set()
    await task
    assert gs.last_index() == 4 and gs.term(3) == 2 and gs.hard_state == HardState(2, 2, 3)
    assert [e.term for e in gs.entries(1, 5)] == [1, 1, 2, 2]


async def test_cancelled_persist_still_updates_the_view(opener: Callable[..., Opened]) -> None:
    o = opener()
    store, spy = o.store, o.spy
    store.recover()
    spy.sync_gate = threading.Event()
    spy.written.clear()
    task = asyncio.create_task(store.persist([(1, ready(entries=ents(1, 1, 1)))]))
    assert await asyncio.to_thread(spy.written.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert store.group(1).last_index() == 0
    spy.sync_gate.set()
    await store.write(store.batch())  # the executor is FIFO: the cancelled write finished first
    assert store.group(1).last_index() == 2
    lb = store.batch()
    lb.append(1, ents(3, 1))  # the group is free for the next batch
    await store.write(lb)
    assert store.group(1).last_index() == 3


def test_group_cannot_be_staged_in_two_open_batches(opener: Callable[..., Opened]) -> None:
    store = opener().store
    store.recover()
    a, b = store.batch(), store.batch()
    a.append(1, ents(1, 1))
    with pytest.raises(RaftInvariantError):
        b.append(1, ents(1, 1))
    b.append(2, ents(1, 1))  # other groups are fine
    a.discard()
    c = store.batch()
    c.append(1, ents(1, 1))
    store.commit(c)
    store.commit(b)
    assert store.group(1).last_index() == 1 and store.group(2).last_index() == 1
    with pytest.raises(RaftInvariantError):
        store.commit(c)


def test_store_must_recover_before_use(opener: Callable[..., Opened]) -> None:
    store = opener().store
    with pytest.raises(RaftInvariantError):
        store.group(1)
    store.recover()
    with pytest.raises(RaftInvariantError):
        store.recover()


# -- group commit -------------------------------------------------------------------


async def test_batch_of_100_groups_is_one_write_and_one_sync(opener: Callable[..., Opened]) -> None:
    o = opener()
    store, spy = o.store, o.spy
    store.recover()
    batch = [(gid, ready(entries=ents(1, 1, 1, 1), hard_state=HardState(1, gid, 0))) for gid in range(100)]
    spy.writes = spy.syncs = 0
    extra_key = b"\x02applied-by-the-state-machine"
    await store.persist(batch, extra_writes=lambda wb: wb.put(extra_key, b"42"))
    assert (spy.writes, spy.syncs) == (1, 1)
    assert o.db[extra_key] == b"42"
    for gid in range(100):
        g = store.group(gid)
        assert g.last_index() == 3 and g.hard_state == HardState(1, gid, 0)


async def test_commit_index_only_batch_is_not_synced(opener: Callable[..., Opened]) -> None:
    o = opener()
    store, spy = o.store, o.spy
    store.recover()
    await store.persist([(1, ready(entries=ents(1, 1), hard_state=HardState(1, 1, 0)))])
    spy.writes = spy.syncs = 0
    await store.persist([(1, ready(hard_state=HardState(1, 1, 1), must_sync=False))])
    assert (spy.writes, spy.syncs) == (1, 0)
    assert store.group(1).hard_state == HardState(1, 1, 1)
    await store.persist([(1, ready(hard_state=HardState(2, 0, 1), must_sync=True))])
    assert (spy.writes, spy.syncs) == (2, 1)


async def test_log_management_helpers(opener: Callable[..., Opened]) -> None:
    o = opener()
    store = o.store
    store.recover()
    await store.bootstrap(9, CS)
    assert store.group(9).initial_state() == (HardState(1, 0, 1), CS)
    assert (store.group(9).first_index(), store.group(9).last_index()) == (2, 1)
    await store.persist([(9, ready(entries=ents(2, 1, 1, 1, 1, 1)))])
    s = await store.create_snapshot(9, 4, CS, b"state@4")
    assert s == Snapshot(SnapshotMetadata(4, 1, CS), b"state@4") == store.group(9).snapshot()
    await store.compact(9, 4)
    assert store.group(9).first_index() == 5
    assert o.db.get(keys.log_key(9, 2)) is None  # the prefix is gone from disk, not just hidden
    await store.apply_snapshot(9, snap(20, 3))
    assert (store.group(9).first_index(), store.group(9).last_index()) == (21, 20)
    o.db[keys.applied_key(9)] = keys.encode_applied(20)
    lb = store.batch()
    lb.append(10, ents(1, 1))
    await store.write(lb)
    await store.remove_group(9)
    assert 9 not in store.group_ids() and 10 in store.group_ids()
    assert list(o.db.keys(from_key=keys.group_start(9)))[:1] == [keys.log_key(10, 0)]
    close(o)
    assert set(opener().store.recover()) == {10}


# -- fail-stop ---------------------------------------------------------------------


@pytest.mark.parametrize("where", ["write", "sync"])
async def test_failed_write_or_sync_is_fatal_and_leaves_the_view(opener: Callable[..., Opened], where: str) -> None:
    o = opener()
    store, spy = o.store, o.spy
    store.recover()
    await store.persist([(1, ready(entries=ents(1, 1, 1), hard_state=HardState(1, 1, 1)))])
    views = {1: observe(store.group(1))}
    injected = OSError(5, "injected I/O error")
    setattr(spy, f"fail_{where}", injected)
    with pytest.raises(FatalStorageError) as info:
        await store.persist([(1, ready(entries=ents(2, 2, 2), hard_state=HardState(2, 2, 1))), (2, ready(entries=ents(1, 1)))])
    assert info.value.__cause__ is injected
    assert observe(store.group(1)) == views[1]
    assert store.group(2).last_index() == 0
    assert store.failed
    # Poisoned: no later write goes through, even once the fault is gone.
    spy.fail_write = spy.fail_sync = None
    writes = spy.writes
    with pytest.raises(FatalStorageError):
        await store.persist([(3, ready(entries=ents(1, 1)))])
    with pytest.raises(FatalStorageError):
        store.commit(store.batch())
    assert spy.writes == writes


def test_write_to_a_closed_db_is_fatal(opener: Callable[..., Opened]) -> None:
    o = opener()
    o.store.recover()
    lb = o.store.batch()
    lb.append(1, ents(1, 1))
    o.store.commit(lb)
    o.db.close()
    o.closed = True
    lb = o.store.batch()
    lb.append(1, ents(2, 1))
    with pytest.raises(FatalStorageError) as info:
        o.store.commit(lb)
    assert isinstance(info.value.__cause__, rocksdict.DbClosedError)
    assert o.store.group(1).last_index() == 1
    o.store.close()


# -- key codec ----------------------------------------------------------------------


def test_key_order_makes_each_log_one_contiguous_range() -> None:
    ks = [keys.log_key(g, i) for g in (0, 1, 256, 2**64 - 1) for i in (0, 1, 255, 256, 2**32, 2**64 - 1)]
    assert ks == sorted(ks)
    for g in (0, 1, 2**64 - 1):
        group_keys = [keys.hard_state_key(g), keys.snapshot_meta_key(g), keys.snapshot_data_key(g), keys.applied_key(g)]
        for k in group_keys + [keys.log_key(g, 0), keys.log_key(g, 2**64 - 1)]:
            assert keys.group_start(g) <= k < keys.group_end(g) <= keys.raft_end()
            assert keys.parse_group(k) == g
        assert keys.log_key(g, 0) < keys.log_key(g, 2**64 - 1) < keys.log_end(g) <= keys.group_end(g)
        assert all(not (keys.log_key(g, 0) <= k < keys.log_end(g)) for k in group_keys)
    assert keys.parse_key(keys.log_key(7, 9)) == (7, keys.Kind.LOG, 9)
    assert keys.parse_key(keys.hard_state_key(7)) == (7, keys.Kind.HARD_STATE, None)
    with pytest.raises(keys.RecordError):
        keys.parse_key(b"\x01short")


def test_value_records_round_trip_and_are_versioned() -> None:
    e = Entry(5, 9, EntryKind.CONF_CHANGE, b"abc")
    assert keys.decode_entry(9, keys.encode_entry(e)) == e
    hs = HardState(2**64 - 1, 3, 17)
    assert keys.decode_hard_state(keys.encode_hard_state(hs)) == hs
    meta = SnapshotMetadata(10, 2, ConfState(voters=(1, 2, 3), learners=(9,)))
    assert keys.decode_snapshot_metadata(keys.encode_snapshot_metadata(meta)) == meta
    assert keys.decode_applied(keys.encode_applied(77)) == 77
    assert keys.encode_hard_state(HardState(1, 2, 3))[0] == keys.FORMAT_VERSION
    for bad in (b"", b"\x02" + keys.encode_hard_state(hs)[1:], keys.encode_hard_state(hs) + b"x"):
        with pytest.raises(keys.RecordError):
            keys.decode_hard_state(bad)
    with pytest.raises(keys.RecordError):
        keys.decode_entry(1, b"\x01\x00")
    with pytest.raises(keys.RecordError):
        keys.decode_entry(1, keys.encode_entry(e)[:9] + b"\x07")  # unknown entry kind
    with pytest.raises(keys.RecordError):
        keys.decode_snapshot_metadata(keys.encode_snapshot_metadata(meta)[:-1])


def test_public_names_are_all() -> None:
    import raft.storage

    public = {n for n in dir(raft.storage) if not n.startswith("_")} - {"annotations", "batch", "groupview", "keys", "logstore", "rocks"}
    assert set(raft.storage.__all__) == public
    assert issubclass(FatalStorageError, Exception) and not issubclass(FatalStorageError, RaftInvariantError)
    assert GroupStorage.__name__ == "GroupStorage"


# -- with the real core ---------------------------------------------------------------


async def test_single_node_groups_run_and_restart_on_the_store(opener: Callable[..., Opened]) -> None:
    """RawNodes over GroupStorages, persisted by the store in one batch per
    round; after a restart every node resumes from what was synced."""
    import logging

    from raft.core import Config, RawNode, StateRole

    def node(store: RocksLogStore, gid: int, applied: int = 0) -> RawNode:
        return RawNode(Config(id=1, applied=applied), store.group(gid), rng=random.Random(gid), logger=logging.getLogger("t"))

    async def run(store: RocksLogStore, nodes: dict[int, RawNode]) -> dict[int, list[bytes]]:
        applied: dict[int, list[bytes]] = {gid: [] for gid in nodes}
        for _ in range(20):
            busy = [(gid, n) for gid, n in nodes.items() if n.has_ready()]
            if not busy:
                return applied
            readies = [(gid, n.ready()) for gid, n in busy]
            await store.persist([(gid, rd) for gid, rd in readies])
            for (gid, n), (_, rd) in zip(busy, readies):
                applied[gid] += [e.data for e in rd.committed_entries if e.data]
                n.advance(rd)
        raise AssertionError("groups did not quiesce")

    o = opener()
    o.store.recover()
    for gid in range(1, 6):
        await o.store.bootstrap(gid, ConfState(voters=(1,)))
    nodes = {gid: node(o.store, gid) for gid in range(1, 6)}
    for n in nodes.values():
        n.campaign()
    await run(o.store, nodes)
    assert all(n.raft.role == StateRole.LEADER for n in nodes.values())
    for gid, n in nodes.items():
        for k in range(gid):
            n.propose(b"g%d-%d" % (gid, k))
    applied = await run(o.store, nodes)
    assert applied == {gid: [b"g%d-%d" % (gid, k) for k in range(gid)] for gid in nodes}
    status = {gid: (n.raft.hard_state(), n.raft.raft_log.last_index()) for gid, n in nodes.items()}
    close(o)

    o2 = opener()
    groups = o2.store.recover(verify=True)
    assert set(groups) == set(nodes)
    restarted = {gid: node(o2.store, gid, applied=status[gid][0].commit) for gid in groups}
    assert {gid: (n.raft.hard_state(), n.raft.raft_log.last_index()) for gid, n in restarted.items()} == status
    for n in restarted.values():
        n.campaign()
    await run(o2.store, restarted)
    restarted[3].propose(b"after restart")
    assert (await run(o2.store, restarted))[3] == [b"after restart"]
