"""MemoryStorage: table tests (etcd's storage_test.go cases, rewritten).

The storage under test holds a snapshot at (index 3, term 3) and the entries
4@4, 5@5 (and 6@6 where noted): ``_ents[0]`` is the dummy entry (3, 3).
"""

from __future__ import annotations

import pytest

from raft.core import (
    Compacted,
    ConfState,
    Entry,
    HardState,
    MemoryStorage,
    RaftInvariantError,
    Snapshot,
    SnapshotMetadata,
    Unavailable,
)

CS = ConfState(voters=(1, 2, 3))


def at(index: int, *terms: int) -> list[Entry]:
    return [Entry(term=t, index=index + k) for k, t in enumerate(terms)]


def storage(*terms_after_3: int) -> MemoryStorage:
    """Snapshot at (3, 3), then entries 4, 5, ... with the given terms."""
    s = MemoryStorage(conf_state=CS)
    s.apply_snapshot(Snapshot(SnapshotMetadata(index=3, term=3, conf_state=CS)))
    s.append(at(4, *terms_after_3))
    return s


def log_of(s: MemoryStorage) -> list[tuple[int, int]]:
    """(index, term) of the dummy entry and every entry after it."""
    first = s.first_index() - 1
    return [(i, s.term(i)) for i in range(first, s.last_index() + 1)]


def test_new_storage_is_empty() -> None:
    s = MemoryStorage(conf_state=CS)
    assert s.first_index() == 1
    assert s.last_index() == 0
    assert s.term(0) == 0
    assert s.entries(1, 1) == []
    assert s.initial_state() == (HardState(), CS)
    assert s.snapshot().is_empty


@pytest.mark.parametrize(
    ("index", "error", "term"),
    [
        (2, Compacted, None),
        (3, None, 3),
        (4, None, 4),
        (5, None, 5),
        (6, Unavailable, None),
    ],
)
def test_term(index: int, error: type[Exception] | None, term: int | None) -> None:
    s = storage(4, 5)
    if error is not None:
        with pytest.raises(error):
            s.term(index)
    else:
        assert s.term(index) == term


@pytest.mark.parametrize(
    ("lo", "hi", "max_size", "error", "want"),
    [
        (2, 6, None, Compacted, None),
        (3, 4, None, Compacted, None),
        (4, 5, None, None, [(4, 4)]),
        (4, 6, None, None, [(4, 4), (5, 5)]),
        (4, 7, None, None, [(4, 4), (5, 5), (6, 6)]),
        (4, 8, None, Unavailable, None),
        # Even with max_size 0, the first entry is returned.
        (4, 7, 0, None, [(4, 4)]),
        # Entries carry 10 bytes of data each: limits select whole entries.
        (4, 7, 20, None, [(4, 4), (5, 5)]),
        (4, 7, 25, None, [(4, 4), (5, 5)]),
        (4, 7, 29, None, [(4, 4), (5, 5)]),
        (4, 7, 30, None, [(4, 4), (5, 5), (6, 6)]),
    ],
)
def test_entries(
    lo: int, hi: int, max_size: int | None, error: type[Exception] | None, want: list[tuple[int, int]] | None
) -> None:
    s = MemoryStorage(conf_state=CS)
    s.apply_snapshot(Snapshot(SnapshotMetadata(index=3, term=3, conf_state=CS)))
    s.append([Entry(term=i, index=i, data=b"x" * 10) for i in (4, 5, 6)])
    if error is not None:
        with pytest.raises(error):
            s.entries(lo, hi, max_size)
        return
    got = s.entries(lo, hi, max_size)
    assert [(e.index, e.term) for e in got] == want
    assert all(e.data == b"x" * 10 for e in got)


def test_entries_returns_a_copy() -> None:
    s = storage(4, 5)
    got = s.entries(4, 6)
    got.clear()
    assert [(e.index, e.term) for e in s.entries(4, 6)] == [(4, 4), (5, 5)]


def test_last_index() -> None:
    s = storage(4, 5)
    assert s.last_index() == 5
    s.append(at(6, 5))
    assert s.last_index() == 6


def test_first_index() -> None:
    s = storage(4, 5)
    assert s.first_index() == 4
    s.compact(4)
    assert s.first_index() == 5


@pytest.mark.parametrize(
    ("compact_index", "want_dummy", "want_len"),
    [
        # Compacting at or below the snapshot is a no-op (etcd: ErrCompacted).
        (2, (3, 3), 3),
        (3, (3, 3), 3),
        (4, (4, 4), 2),
        (5, (5, 5), 1),
    ],
)
def test_compact(compact_index: int, want_dummy: tuple[int, int], want_len: int) -> None:
    s = storage(4, 5)
    s.compact(compact_index)
    log = log_of(s)
    assert log[0] == want_dummy
    assert len(log) == want_len
    assert s.first_index() == want_dummy[0] + 1
    assert s.last_index() == 5
    with pytest.raises(Compacted):
        s.term(want_dummy[0] - 1)
    with pytest.raises(Compacted):
        s.entries(want_dummy[0], 6)


def test_compact_beyond_last_index_is_an_invariant_error() -> None:
    s = storage(4, 5)
    with pytest.raises(RaftInvariantError):
        s.compact(6)


@pytest.mark.parametrize("index", [4, 5])
def test_create_snapshot(index: int) -> None:
    s = storage(4, 5)
    snap = s.create_snapshot(index, CS, b"data")
    assert snap == Snapshot(SnapshotMetadata(index=index, term=index, conf_state=CS), b"data")
    assert s.snapshot() == snap
    # Creating a snapshot does not compact the log.
    assert s.first_index() == 4
    assert s.last_index() == 5


def test_create_snapshot_older_than_current_keeps_current() -> None:
    s = storage(4, 5)
    newer = s.create_snapshot(5, CS, b"five")
    assert s.create_snapshot(4, CS, b"four") == newer
    assert s.snapshot() == newer


def test_create_snapshot_beyond_last_index_is_an_invariant_error() -> None:
    s = storage(4, 5)
    with pytest.raises(RaftInvariantError):
        s.create_snapshot(6, CS, b"data")


@pytest.mark.parametrize(
    ("entries", "want"),
    [
        # All compacted already: nothing changes.
        (at(1, 1, 2), [(3, 3), (4, 4), (5, 5)]),
        # Identical entries: nothing changes.
        (at(3, 3, 4, 5), [(3, 3), (4, 4), (5, 5)]),
        # A conflict at 4 replaces the suffix.
        (at(3, 3, 6, 6), [(3, 3), (4, 6), (5, 6)]),
        # Same prefix, one more.
        (at(3, 3, 4, 5, 5), [(3, 3), (4, 4), (5, 5), (6, 5)]),
        # Truncate the incoming compacted part, truncate the existing suffix, append.
        (at(2, 3, 3, 5), [(3, 3), (4, 5)]),
        # Truncate the existing entries and append.
        (at(4, 5), [(3, 3), (4, 5)]),
        # Direct append.
        (at(6, 5), [(3, 3), (4, 4), (5, 5), (6, 5)]),
    ],
)
def test_append(entries: list[Entry], want: list[tuple[int, int]]) -> None:
    s = storage(4, 5)
    s.append(entries)
    assert log_of(s) == want


def test_append_with_a_gap_is_an_invariant_error() -> None:
    s = storage(4, 5)
    with pytest.raises(RaftInvariantError):
        s.append(at(7, 5))


def test_append_empty_is_a_no_op() -> None:
    s = storage(4, 5)
    s.append([])
    assert log_of(s) == [(3, 3), (4, 4), (5, 5)]


def test_apply_snapshot_replaces_the_log() -> None:
    s = MemoryStorage(conf_state=CS)
    s.append(at(1, 1, 1, 2))
    snap = Snapshot(SnapshotMetadata(index=4, term=4, conf_state=ConfState(voters=(1, 2, 3, 4))), b"data")
    s.apply_snapshot(snap)
    assert s.snapshot() == snap
    assert s.first_index() == 5
    assert s.last_index() == 4
    assert s.term(4) == 4
    assert s.initial_state()[1] == ConfState(voters=(1, 2, 3, 4))
    with pytest.raises(Compacted):
        s.term(3)


def test_apply_snapshot_out_of_date_is_ignored() -> None:
    s = MemoryStorage(conf_state=CS)
    newer = Snapshot(SnapshotMetadata(index=4, term=4, conf_state=CS), b"four")
    s.apply_snapshot(newer)
    s.append(at(5, 4))
    s.apply_snapshot(Snapshot(SnapshotMetadata(index=3, term=3, conf_state=CS), b"three"))
    assert s.snapshot() == newer
    assert log_of(s) == [(4, 4), (5, 4)]


def test_hard_state_round_trip() -> None:
    s = MemoryStorage(conf_state=CS)
    s.set_hard_state(HardState(term=3, vote=2, commit=1))
    assert s.initial_state() == (HardState(term=3, vote=2, commit=1), CS)
