"""KeyIndex: each key's latest live revision, per slot, in memory (etcd's
treeIndex idea, cut down to what the apply step asks).

A put needs the live version of its key (create revision, version, lease,
value: for the new record, the event's prev_kv and the shard's stats).
Finding it with ``mvcc.latest`` costs a RocksDB iterator and a seek per put;
the index says which revision holds the live version, and the version is
then one point read of ``keys.mvcc_key(slot, key, revision)`` (none at all
for a key that is absent: a new key costs no read).

What it holds: for each *loaded* slot, ``{user key: mod revision}`` of the
keys whose latest version is not a tombstone. A slot is loaded the first
time the apply step asks about it, from the shard's state as the apply step
reads it (the engine plus the apply batch's staged writes: a ``StagedView``),
by one pass over the slot's MVCC keys (one seek per key). From then on the
apply step's own writes keep it (``put``, ``remove``): the Executor calls
them for every version it stages (shard/txn.py).

Why it stays right:

- It is derived state only. Nothing is in it that is not in RocksDB or in
  the apply batch it is written with; a restart (or kill -9) starts with an
  empty index and loads slots from what RocksDB kept, so nothing depends on
  memory that a crash loses.
- Only the shard that owns a slot writes that slot's data. A slot's data
  changes in some other way only by: a snapshot restore (the state machine
  forgets every slot); a split (the moved slots are forgotten: another shard
  writes them from now on); a CommitMerge (the slots taken over are
  forgotten, and load from the source's final data when first asked). The
  Executor asks only about slots its shard owns (keys of other slots, e.g.
  a compare in a txn across shards, are read the old way, with a seek).
- Compaction never deletes a live latest version (``mvcc.compact`` keeps
  the latest version at or below the compact revision unless it is a
  tombstone, and every version above it), so the index needs nothing.

Memory: one dict per loaded slot, and per live key one dict entry, the key's
bytes object (shared with the request that put it, or made by the load) and
an int: about 110 bytes plus the key's length per live key on CPython 3.11
(tracemalloc: 131 bytes per 16-byte key, 179 per 64-byte key, for 100,000
keys over 1024 slots). Only the slots asked about since the process started
are loaded, and loading a slot costs one seek per key in it.

Pure: reads go through a KvReader; no I/O, clocks or threads of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shard import keys, slots

if TYPE_CHECKING:
    from shard.engine import KvReader


class KeyIndex:
    """The latest live revision of each key of the loaded slots (see the
    module docstring)."""

    __slots__ = ("_slots",)

    def __init__(self) -> None:
        self._slots: dict[int, dict[bytes, int]] = {}

    def revision(self, view: KvReader, slot: int, key: bytes) -> int:
        """The mod revision of key's live version (0: absent or deleted),
        loading the slot from view first if it is not loaded."""
        live = self._slots.get(slot)
        if live is None:
            live = self._load(view, slot)
        return live.get(key, 0)

    def put(self, slot: int, key: bytes, revision: int) -> None:
        """A live version of key at revision was staged."""
        live = self._slots.get(slot)
        if live is not None:  # an unloaded slot loads the write with the rest
            live[key] = revision

    def remove(self, slot: int, key: bytes) -> None:
        """A tombstone of key was staged."""
        live = self._slots.get(slot)
        if live is not None:
            live.pop(key, None)

    def forget(self, ranges: slots.SlotRanges) -> None:
        """Unload the slots in ranges (their data changed other than by this
        shard's writes, or is no longer this shard's)."""
        for slot in [s for s in self._slots if slots.contains(ranges, s)]:
            del self._slots[slot]

    def clear(self) -> None:
        self._slots.clear()

    def loaded(self) -> list[int]:
        """The loaded slots, ascending."""
        return sorted(self._slots)

    def live_keys(self, slot: int) -> dict[bytes, int] | None:
        """A copy of a loaded slot's {key: revision} (None: not loaded)."""
        live = self._slots.get(slot)
        return dict(live) if live is not None else None

    def __len__(self) -> int:
        """How many live keys the loaded slots hold."""
        return sum(len(live) for live in self._slots.values())

    def _load(self, view: KvReader, slot: int) -> dict[bytes, int]:
        live: dict[bytes, int] = {}
        lo = keys.data_prefix(slot)
        c = view.cursor(lo, keys.data_slot_end(slot))
        c.seek(lo)
        while c.valid():
            sk = c.key()  # the newest version of its key: ~revision sorts newest first
            if not keys.is_tombstone(c.value()):
                live[keys.user_key_of(sk)] = keys.revision_of(sk)
            c.seek(keys.key_end_of(sk))
        self._slots[slot] = live
        return live
