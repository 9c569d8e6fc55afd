"""The Raft log: stable entries in Storage, unstable entries (not yet
persisted) in memory, and the commit and apply cursors.

    storage (persisted) .......... | unstable (to persist) ......
    first_index()        unstable.offset-1 | unstable.offset   last_index()

`committed` and `applied` follow Raft's rules: applied <= committed <=
last_index(); neither ever decreases.
"""

from __future__ import annotations

import logging

from raft.core.errors import Compacted, RaftInvariantError, Unavailable
from raft.core.storage import Storage, limit_size
from raft.core.types import Entry, Snapshot


class Unstable:
    """Entries and a snapshot that are not yet persisted."""

    __slots__ = ("snapshot", "entries", "offset")

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset

    def maybe_first_index(self) -> int | None:
        if self.snapshot is not None:
            return self.snapshot.metadata.index + 1
        return None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.metadata.index
        return None

    def maybe_term(self, i: int) -> int | None:
        if i < self.offset:
            if self.snapshot is not None and self.snapshot.metadata.index == i:
                return self.snapshot.metadata.term
            return None
        last = self.maybe_last_index()
        if last is None or i > last:
            return None
        return self.entries[i - self.offset].term

    def stable_to(self, i: int, t: int) -> None:
        gt = self.maybe_term(i)
        if gt is None:
            return
        # Only entries still in unstable with a matching term become stable;
        # if they were replaced meanwhile, they will be persisted again.
        if gt == t and i >= self.offset:
            del self.entries[: i + 1 - self.offset]
            self.offset = i + 1

    def stable_snap_to(self, i: int) -> None:
        if self.snapshot is not None and self.snapshot.metadata.index == i:
            self.snapshot = None

    def restore(self, s: Snapshot) -> None:
        self.offset = s.metadata.index + 1
        self.entries = []
        self.snapshot = s

    def truncate_and_append(self, ents: list[Entry]) -> None:
        after = ents[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(ents)
        elif after <= self.offset:
            # Replace the whole unstable part (and logically the stable
            # suffix from `after` on, which storage truncates on persist).
            self.offset = after
            self.entries = list(ents)
        else:
            del self.entries[after - self.offset :]
            self.entries.extend(ents)

    def slice(self, lo: int, hi: int) -> list[Entry]:
        upper = self.offset + len(self.entries)
        if lo > hi or lo < self.offset or hi > upper:
            raise RaftInvariantError(f"unstable.slice[{lo},{hi}) out of bound [{self.offset},{upper}]")
        return self.entries[lo - self.offset : hi - self.offset]


class RaftLog:
    def __init__(self, storage: Storage, logger: logging.Logger | logging.LoggerAdapter[logging.Logger], max_committed_size_per_ready: int) -> None:
        self.storage = storage
        self.logger = logger
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        self.committed = first - 1
        self.applied = first - 1
        self.max_committed_size_per_ready = max_committed_size_per_ready

    def __repr__(self) -> str:
        return (
            f"committed={self.committed}, applied={self.applied}, "
            f"unstable.offset={self.unstable.offset}, len(unstable.entries)={len(self.unstable.entries)}"
        )

    # -- indexes and terms ------------------------------------------------
    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self) -> int:
        i = self.unstable.maybe_last_index()
        return i if i is not None else self.storage.last_index()

    def last_stable_index(self) -> int:
        """The last index of this log that is persisted (0 if unknown)."""
        if self.unstable.snapshot is not None:
            return 0
        return min(self.storage.last_index(), self.unstable.offset - 1)

    def term(self, i: int) -> int:
        """Term of entry i. Raises Compacted/Unavailable outside [first-1, last]."""
        dummy = self.first_index() - 1
        if i < dummy:
            raise Compacted(f"index {i} compacted")
        if i > self.last_index():
            raise Unavailable(f"index {i} unavailable")
        t = self.unstable.maybe_term(i)
        if t is not None:
            return t
        return self.storage.term(i)

    def zero_term_on_err(self, i: int) -> int:
        try:
            return self.term(i)
        except (Compacted, Unavailable):
            return 0

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, i: int, t: int) -> bool:
        try:
            return self.term(i) == t
        except (Compacted, Unavailable):
            return False

    def is_up_to_date(self, lasti: int, term: int) -> bool:
        """§5.4.1: a candidate's log is at least as up-to-date as ours."""
        lt = self.last_term()
        return term > lt or (term == lt and lasti >= self.last_index())

    # -- appends ----------------------------------------------------------
    def maybe_append(self, index: int, log_term: int, committed: int, ents: tuple[Entry, ...]) -> int | None:
        """Follower side of AppendEntries. Returns the new last index of the
        appended range, or None if the log does not contain (index, log_term)."""
        if not self.match_term(index, log_term):
            return None
        lastnewi = index + len(ents)
        ci = self.find_conflict(ents)
        if ci != 0:
            if ci <= self.committed:
                raise RaftInvariantError(f"entry {ci} conflict with committed entry [committed({self.committed})]")
            offset = index + 1
            if ci - offset > len(ents):
                raise RaftInvariantError(f"index, {ci - offset}, is out of range [{len(ents)}]")
            self.append(list(ents[ci - offset :]))
        self.commit_to(min(committed, lastnewi))
        return lastnewi

    def append(self, ents: list[Entry]) -> int:
        if not ents:
            return self.last_index()
        after = ents[0].index - 1
        if after < self.committed:
            raise RaftInvariantError(f"after({after}) is out of range [committed({self.committed})]")
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    def find_conflict(self, ents: tuple[Entry, ...]) -> int:
        """Index of the first entry whose term differs from ours (0 if none);
        an entry beyond our last index counts as a conflict (a new entry)."""
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest (i, t) with i <= index and our term t <= term
        (fast log back-tracking, thesis §5.3 optimization)."""
        while index > 0:
            try:
                our = self.term(index)
            except (Compacted, Unavailable):
                return index, 0
            if our <= term:
                return index, our
            index -= 1
        return 0, 0

    # -- reads ------------------------------------------------------------
    def slice(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        """Entries in [lo, hi). Raises Compacted if lo < first_index()."""
        if lo > hi:
            raise RaftInvariantError(f"invalid slice {lo} > {hi}")
        fi = self.first_index()
        if lo < fi:
            raise Compacted(f"slice from {lo} but first index is {fi}")
        if hi > self.last_index() + 1:
            raise RaftInvariantError(f"slice[{lo},{hi}) out of bound [{fi},{self.last_index()}]")
        if lo == hi:
            return []
        off = self.unstable.offset
        ents: list[Entry] = []
        if lo < off:
            stored = self.storage.entries(lo, min(hi, off), max_size)
            if len(stored) < min(hi, off) - lo:
                return stored  # size-limited
            ents = stored
        if hi > off:
            unstable = self.unstable.slice(max(lo, off), hi)
            ents = ents + unstable if ents else unstable
        return limit_size(ents, max_size)

    def entries(self, i: int, max_size: int | None = None) -> list[Entry]:
        if i > self.last_index():
            return []
        return self.slice(i, self.last_index() + 1, max_size)

    def all_entries(self) -> list[Entry]:
        """Every entry still in the log (for tests and debugging)."""
        return self.entries(self.first_index())

    def unstable_entries(self) -> tuple[Entry, ...]:
        return tuple(self.unstable.entries)

    def has_unstable_entries(self) -> bool:
        return bool(self.unstable.entries)

    def has_next_committed_entries(self) -> bool:
        if self.has_pending_snapshot():
            return False
        return self.committed > self.applied

    def next_committed_entries(self) -> tuple[Entry, ...]:
        if not self.has_next_committed_entries():
            return ()
        lo = max(self.applied + 1, self.first_index())
        return tuple(self.slice(lo, self.committed + 1, self.max_committed_size_per_ready))

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    def pending_snapshot(self) -> Snapshot | None:
        return self.unstable.snapshot

    def has_pending_snapshot(self) -> bool:
        return self.unstable.snapshot is not None

    # -- cursors ----------------------------------------------------------
    def commit_to(self, to_commit: int) -> None:
        if self.committed < to_commit:
            if self.last_index() < to_commit:
                raise RaftInvariantError(
                    f"to_commit({to_commit}) is out of range [last_index({self.last_index()})]. "
                    "Was the raft log corrupted, truncated, or lost?"
                )
            self.committed = to_commit

    def maybe_commit(self, max_index: int, term: int) -> bool:
        """Commit up to max_index only if that entry is of `term` (§5.4.2)."""
        if max_index > self.committed and self.zero_term_on_err(max_index) == term:
            self.commit_to(max_index)
            return True
        return False

    def applied_to(self, i: int) -> None:
        if i == 0:
            return
        if self.committed < i or i < self.applied:
            raise RaftInvariantError(f"applied({i}) is out of range [prev_applied({self.applied}), committed({self.committed})]")
        self.applied = i

    def stable_to(self, i: int, t: int) -> None:
        self.unstable.stable_to(i, t)

    def stable_snap_to(self, i: int) -> None:
        self.unstable.stable_snap_to(i)

    def restore(self, s: Snapshot) -> None:
        self.logger.info(
            "log [%r] starts to restore snapshot [index: %d, term: %d]", self, s.metadata.index, s.metadata.term
        )
        self.committed = s.metadata.index
        self.unstable.restore(s)
