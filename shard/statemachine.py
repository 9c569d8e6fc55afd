"""ShardStateMachine: etcd's multi-version key-value semantics for one shard,
as the runtime's StateMachine (raft/runtime/statemachine.py).

Each committed entry is one ``Command`` (shard/codec.py). Applying it:

1. The leader's closed timestamp (piggybacked, or a ``ClosedTs`` entry)
   raises the shard's ``closed_ts``.
2. Dedup (Raft thesis 6.3), a window per router id (replicated, in the
   engine): its ``floor``, the largest ``seq_floor`` any of the router's
   commands carried (the router has the answer of every seq below it), and
   the outcome of each seq >= floor applied. A command first raises the
   floor to its seq_floor (dropping the outcomes below; a command without
   one, from a router of one write in flight per router id, raises it to
   its own seq). Then a seq below the floor gets ``OutcomeUnknown`` (it was
   answered or abandoned: never applied again), a seq in the window already
   applied gets its stored first outcome, and any other is applied and its
   outcome stored. So one router id may have many writes in flight, applied
   in any order, each at most once.
3. A writing command gets ``rev = max(prev_rev + 1, stamp, closed_ts + 1)``
   (shard/hlc.py): one revision for all the writes of a txn. A command that
   writes nothing (a failed or read-only txn, a delete of nothing, an error)
   leaves the revision alone.
4. The result is an ``Applied``: the outcome (a response, or the ShardError
   etcd would answer) and the events to fan out to watchers.
5. The shard's live key count and approximate live size (the sum of
   len(key) + len(value) of its live keys) follow the events, in the
   replicated meta (the STATS record, shard/keys.py): a PUT without prev_kv
   adds one key and len(key) + len(value); a PUT over a live key adds
   len(value) - len(prev value); a DELETE takes away one key and
   len(key) + len(prev value). A split scans the moved slots to give the new
   shard its figures (see ``_split``). A shard whose meta predates the
   figures reports them as unknown (0, ``stats_known`` False) until a split
   recomputes them: the apply step never scans a whole shard by surprise.
6. Merges (``PrepareMerge`` in the source's log, ``CommitMerge`` in the
   target's): see ``_prepare_merge`` and ``_commit_merge``. A frozen source
   applies nothing after its PrepareMerge: every later entry is answered
   SlotNotOwned (a routing error: the router retries elsewhere) with no
   effect at all, not even on the closed timestamp or the dedup windows, so
   its final state is the same on every replica that applied the freeze.

Reads (``range``, ``events_since``) serve the applied state. Everything is
read through the engine plus the writes staged in the current apply batch
(``StagedView``), because the runtime writes the batch only after the round.
Reads must run on the thread that applies, or use ``reader(frozen=True)``.

Pure: the engine is passed in; no I/O, clocks, threads or asyncio here.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

from shard import hlc, keys, mvcc, mvcc_range, slots
from shard import snapshot as snap
from shard.codec import decode_command, decode_outcome, encode_outcome
from shard.engine import StagedView, scan
from shard.errors import (
    CodecError,
    FutureRevision,
    InvalidCommand,
    InvalidSplit,
    OutcomeUnknown,
    RevisionCompacted,
    ShardError,
    SlotNotOwned,
)
from shard.txn import DEFAULT_MAX_TXN_OPS, Executor, check_owned, validate_op
from raft.core.errors import RaftInvariantError
from shard.types import (
    BOOTSTRAP_EPOCH,
    AckResponse,
    ClosedTs,
    Command,
    CommitMerge,
    CompactionRequest,
    CompactionResponse,
    DeleteLeaseKeys,
    DeleteRangeRequest,
    DeleteRangeResponse,
    Epoch,
    Event,
    EventType,
    PrepareMerge,
    PutRequest,
    RangeRequest,
    RangeResponse,
    Request,
    Response,
    Split,
    TxnRequest,
)

if TYPE_CHECKING:
    from raft.core.types import Entry
    from shard.engine import KvEngine, KvReader, WriteBatch

Outcome = Union[Response, ShardError]
GroupConf = Callable[[], tuple[Sequence[int], Sequence[int]]]
OtherSlots = Callable[[], slots.SlotRanges]


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying one entry produced. `revision` is the shard's revision
    after it; `duplicate` says the outcome came from the dedup table."""

    index: int
    revision: int
    outcome: Outcome
    events: tuple[Event, ...] = ()
    duplicate: bool = False
    split_to: int = 0
    """A split applied here: the id of the shard it created (0: none)."""
    merged_from: int = 0
    """A CommitMerge applied here: the id of the source shard it took over (0: none)."""
    frozen: bool = False
    """This entry was the shard's PrepareMerge: it is frozen from here on."""

    @property
    def ok(self) -> bool:
        return not isinstance(self.outcome, ShardError)


class MergeNotReady(RaftInvariantError):
    """A CommitMerge reached a replica whose local copy of the source shard
    has not applied its PrepareMerge at the named index. Taking over the
    slots then would serve data the source may still be missing, and
    skipping the entry would make this replica diverge from the others:
    fail-stop instead (the runtime ends the process). The store node never
    proposes a CommitMerge before every source replica reported its freeze
    (placement confirms it), so this is a broken precondition, not a race."""


@dataclass(slots=True)
class DedupWindow:
    """One router id's dedup state: the floor, and the encoded outcome of
    each seq >= floor applied (`heap`: those seqs, for pruning in order)."""

    floor: int = 0
    outcomes: dict[int, bytes] = field(default_factory=dict)
    heap: list[int] = field(default_factory=list)

    def add(self, seq: int, outcome: bytes) -> None:
        self.outcomes[seq] = outcome
        heapq.heappush(self.heap, seq)

    def raise_floor(self, floor: int) -> list[int]:
        """Raise the floor; return the seqs dropped (below it)."""
        self.floor = floor
        dropped = []
        while self.heap and self.heap[0] < floor:
            seq = heapq.heappop(self.heap)
            del self.outcomes[seq]
            dropped.append(seq)
        return dropped


def validate(request: Request | RangeRequest, max_txn_ops: int = DEFAULT_MAX_TXN_OPS) -> None:
    """etcd's checks of a request, before it is proposed (or served): raise
    the RequestError etcd would answer."""
    if isinstance(request, (PutRequest, DeleteRangeRequest, TxnRequest, RangeRequest)):
        validate_op(request, max_txn_ops)
    elif isinstance(request, (CompactionRequest, ClosedTs, Split, DeleteLeaseKeys, PrepareMerge, CommitMerge)):
        return
    else:
        raise TypeError(f"not a shard request: {type(request).__name__}")


@dataclass(frozen=True, slots=True)
class ShardReader:
    """The applied state of a shard at one moment, for reads: the store view
    plus the revisions and slots that go with it."""

    view: KvReader
    ranges: slots.SlotRanges
    slot_count: int
    revision: int
    compact_revision: int
    readable_revision: int
    max_txn_ops: int = DEFAULT_MAX_TXN_OPS

    def _check_read_revision(self, revision: int) -> None:
        if revision <= 0:  # etcd reads the current revision
            return
        if revision > self.readable_revision:
            raise FutureRevision()
        if revision < self.compact_revision:
            raise RevisionCompacted()

    def range(self, r: RangeRequest) -> RangeResponse:
        validate_op(r, self.max_txn_ops)
        check_owned(r, self.ranges, self.slot_count)
        self._check_read_revision(r.revision)
        at_rev = r.revision if r.revision > 0 else None
        return mvcc_range.evaluate(self.view, self.ranges, self.slot_count, r, at_rev, self.revision)

    def events_since(
        self, key: bytes, range_end: bytes, start_rev: int, limit: int = 0, prev_kv: bool = False
    ) -> tuple[Event, ...]:
        if start_rev < self.compact_revision:
            raise RevisionCompacted()
        return mvcc.events_since(self.view, self.ranges, self.slot_count, key, range_end, start_rev, limit, prev_kv)


def live_totals(view: KvReader, ranges: slots.SlotRanges, slot_count: int) -> tuple[int, int]:
    """(key count, sum of len(key) + len(value)) of the live keys of the
    given slots, by a scan of their MVCC records (ShardStateMachine keeps
    these figures; this is the brute force, used at a split)."""
    n = size = 0
    for ukey, _, raw in mvcc.visible_raw(view, slots.normalize(ranges), slot_count, b"\x00", b"\x00"):
        n += 1
        size += len(ukey) + keys.value_size(raw)
    return n, size


class ShardStateMachine:
    def __init__(
        self,
        engine: KvEngine,
        shard_id: int,
        slot_count: int = slots.DEFAULT_SLOTS,
        slot_ranges: slots.SlotRanges | None = None,
        max_txn_ops: int = DEFAULT_MAX_TXN_OPS,
        group_conf: GroupConf | None = None,
        other_slots: OtherSlots | None = None,
    ) -> None:
        """Open the shard's state from the engine. slot_count and slot_ranges
        describe a new shard; a shard with state on disk keeps its own.
        group_conf tells the voters and learners of the shard's Raft group as
        of the entry being applied (what a split's new group starts with).
        other_slots tells the slots the other shards hosted on this node own
        (a snapshot restore leaves their data alone)."""
        self._engine = engine
        self.group_conf = group_conf
        self.other_slots = other_slots
        self.shard_id = shard_id
        self.max_txn_ops = max_txn_ops
        self._staged: StagedView | None = None
        raw_slots = engine.get(keys.slots_key(shard_id))
        if raw_slots is not None:
            self._slot_count, ranges = keys.decode_slots(raw_slots)
            self._ranges: slots.SlotRanges = slots.normalize(ranges)
            self._slots_dirty = False
        else:
            if not 0 < slot_count <= slots.MAX_SLOTS:
                raise ValueError(f"slot count must be in 1..{slots.MAX_SLOTS}, got {slot_count}")
            self._slot_count = slot_count
            self._ranges = slots.normalize(slot_ranges if slot_ranges is not None else slots.full(slot_count))
            self._slots_dirty = True
        self._load_state(engine)

    def _load_state(self, reader: KvReader) -> None:
        raw = reader.get(keys.state_key(self.shard_id))
        st = keys.decode_state(raw) if raw is not None else keys.ShardState()
        self._applied = st.applied
        self._revision = st.revision
        self._compact = st.compact_revision
        self._closed_ts = st.closed_ts
        raw_epoch = reader.get(keys.epoch_key(self.shard_id))
        self._epoch = Epoch(*keys.decode_epoch(raw_epoch)) if raw_epoch is not None else BOOTSTRAP_EPOCH
        raw_stats = reader.get(keys.stats_key(self.shard_id))
        # No STATS record: a new shard (no STATE either) starts from zero; a
        # shard from before the figures were kept has them unknown (None).
        self._stats: tuple[int, int] | None = (
            keys.decode_stats(raw_stats) if raw_stats is not None else (0, 0) if raw is None else None
        )
        self._stats_dirty = raw_stats is None and raw is None
        raw_group = reader.get(keys.group_key(self.shard_id))
        self._bootstrap_conf = keys.decode_group(raw_group) if raw_group is not None else None
        cp = keys.child_prefix(self.shard_id)
        self._children = tuple(keys.child_of_key(k) for k, _ in scan(reader, cp, cp + b"\xff" * 8 + b"\x00"))
        raw_merge = reader.get(keys.merge_key(self.shard_id))
        self._merge: keys.MergeState | None = keys.decode_merge(raw_merge) if raw_merge is not None else None
        mp = keys.merged_prefix(self.shard_id)
        # MERGED keys end with the source's id, laid out as CHILD keys are.
        self._merged = frozenset(keys.child_of_key(k) for k, _ in scan(reader, mp, mp + b"\xff" * 8 + b"\x00"))
        self._index = self._applied
        self._dedup: dict[int, DedupWindow] = {}
        prefix = keys.dedup_prefix(self.shard_id)
        for k, v in scan(reader, prefix, prefix + b"\xff" * 16 + b"\x00"):
            router_id, seq = keys.parse_dedup_key(k)
            w = self._dedup.setdefault(router_id, DedupWindow())
            if seq is None:  # the router record sorts before its entries
                w.floor, legacy = keys.decode_dedup_router(v)
                if legacy is not None:
                    w.add(*legacy)
            elif seq >= w.floor:
                w.add(seq, keys.decode_dedup_entry(v))

    # --- what the node reads ---------------------------------------------------------

    @property
    def slot_count(self) -> int:
        return self._slot_count

    @property
    def slot_ranges(self) -> slots.SlotRanges:
        return self._ranges

    @property
    def epoch(self) -> Epoch:
        return self._epoch

    @property
    def children(self) -> tuple[int, ...]:
        """The shards split off this one (as applied here)."""
        return self._children

    @property
    def merge_state(self) -> keys.MergeState | None:
        """This shard's freeze for a merge into another (None: not frozen)."""
        return self._merge

    @property
    def frozen(self) -> bool:
        return self._merge is not None

    @property
    def merged_sources(self) -> frozenset[int]:
        """The shards merged into this one (as applied here)."""
        return self._merged

    @property
    def bootstrap_conf(self) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """(voters, learners) a split-created shard's group starts with; None
        for a shard created otherwise."""
        return self._bootstrap_conf

    @property
    def key_count(self) -> int:
        """How many live keys the shard holds, as applied (0 if unknown)."""
        return self._stats[0] if self._stats is not None else 0

    @property
    def size_bytes(self) -> int:
        """The sum of len(key) + len(value) of the shard's live keys, as
        applied (0 if unknown): an approximation of its size, which leaves
        out old versions, tombstones and record overhead."""
        return self._stats[1] if self._stats is not None else 0

    @property
    def stats_known(self) -> bool:
        """False for a shard whose meta predates key_count and size_bytes
        (until a split recomputes them)."""
        return self._stats is not None

    @property
    def revision(self) -> int:
        """The revision of the last write applied (0 before any)."""
        return self._revision

    @property
    def compact_revision(self) -> int:
        return self._compact

    @property
    def closed_ts(self) -> int:
        return self._closed_ts

    @property
    def readable_revision(self) -> int:
        """The highest revision a read may name here: the state at any revision
        up to the closed timestamp is final once the closed timestamp applied."""
        return max(self._revision, self._closed_ts)

    def owns(self, key: bytes) -> bool:
        return slots.contains(self._ranges, slots.slot_of(key, self._slot_count))

    def last_seq(self, router_id: int) -> int:
        """The latest sequence applied for a router whose outcome is still
        kept (0: none)."""
        w = self._dedup.get(router_id)
        return max(w.outcomes, default=0) if w is not None else 0

    def dedup_window(self, router_id: int) -> tuple[int, tuple[int, ...]]:
        """(floor, the seqs whose outcomes are kept, in order) of a router
        id; (0, ()) for one never seen."""
        w = self._dedup.get(router_id)
        return (w.floor, tuple(sorted(w.outcomes))) if w is not None else (0, ())

    def reader(self, frozen: bool = False) -> ShardReader:
        """The applied state for reads. frozen: later applies do not change
        what it reads in memory (for reading off the applying thread; the
        engine underneath stays live, which reads at a fixed revision do not
        notice, as versions are never rewritten, unless a compaction passes
        that revision meanwhile)."""
        view: KvReader = self._engine
        if self._staged is not None:
            view = self._staged.freeze() if frozen else self._staged
        return ShardReader(
            view, self._ranges, self._slot_count, self._revision, self._compact, self.readable_revision, self.max_txn_ops
        )

    def range(self, r: RangeRequest) -> RangeResponse:
        """etcd's Range over this shard's slots, at r.revision (0: now)."""
        return self.reader().range(r)

    def events_since(
        self, key: bytes, range_end: bytes, start_rev: int, limit: int = 0, prev_kv: bool = False
    ) -> tuple[Event, ...]:
        """The events of [key, range_end) from start_rev on (see mvcc.events_since)."""
        return self.reader().events_since(key, range_end, start_rev, limit, prev_kv)

    # --- the runtime's StateMachine ---------------------------------------------------------

    def applied_index(self) -> int:
        return self._applied

    def _stage(self, wb: WriteBatch) -> StagedView:
        # A new batch means the runtime wrote the previous one: start over.
        if self._staged is None or self._staged.batch is not wb:
            self._staged = StagedView(self._engine, wb)
        return self._staged

    def release_staged(self) -> None:
        """Forget the staged writes (call once their batch is written, to free
        memory early; optional)."""
        self._staged = None

    def apply(self, entries: Sequence[Entry], wb: WriteBatch) -> list[object]:
        view = self._stage(wb)
        out: list[object] = [self._apply_entry(e.index, e.data, view) for e in entries]
        if entries:
            self._applied = entries[-1].index
            self._write_state(view)
        return out

    def on_applied_index(self, index: int, wb: WriteBatch) -> None:
        self._applied = index
        self._write_state(self._stage(wb))

    def on_conf_change(self, index: int, wb: WriteBatch) -> None:
        """The shard's group applied a conf change at index: conf_version + 1."""
        self._epoch = Epoch(self._epoch.conf_version + 1, self._epoch.slot_version)
        self._stage(wb).put(keys.epoch_key(self.shard_id), keys.encode_epoch(*self._epoch_tuple()))

    def _epoch_tuple(self) -> tuple[int, int]:
        return self._epoch.conf_version, self._epoch.slot_version

    def _write_state(self, view: StagedView) -> None:
        st = keys.ShardState(self._applied, self._revision, self._compact, self._closed_ts)
        view.put(keys.state_key(self.shard_id), keys.encode_state(st))
        if self._slots_dirty:
            view.put(keys.slots_key(self.shard_id), keys.encode_slots(self._slot_count, self._ranges))
            self._slots_dirty = False
        if self._stats_dirty and self._stats is not None:
            view.put(keys.stats_key(self.shard_id), keys.encode_stats(*self._stats))
        self._stats_dirty = False

    def _count(self, events: Sequence[Event]) -> None:
        """Follow the live key count and size through applied events."""
        if self._stats is None or not events:
            return
        n, size = self._stats
        for ev in events:
            prev = ev.prev_kv
            if ev.type == EventType.PUT:
                if prev is None:
                    n += 1
                    size += len(ev.kv.key) + len(ev.kv.value)
                else:
                    size += len(ev.kv.value) - len(prev.value)
            elif prev is not None:  # a DELETE carries the live version it removed
                n -= 1
                size -= len(prev.key) + len(prev.value)
        self._stats = (n, size)
        self._stats_dirty = True

    def _apply_entry(self, index: int, data: bytes, view: StagedView) -> Applied:
        try:
            cmd = decode_command(data)
        except CodecError as exc:
            return Applied(index, self._revision, InvalidCommand(f"log entry is not a valid shard command: {exc}"))
        if self._merge is not None:  # frozen: nothing after the PrepareMerge has any effect
            return Applied(index, self._revision, SlotNotOwned(f"shard {self.shard_id} is frozen for a merge into shard {self._merge.target}"))
        self._index = index
        self._closed_ts = max(self._closed_ts, cmd.closed_ts)
        if isinstance(cmd.request, ClosedTs):
            self._closed_ts = max(self._closed_ts, cmd.request.ts)
        window: DedupWindow | None = None
        if cmd.router_id:
            window = self._dedup.get(cmd.router_id)
            if window is None:
                window = self._dedup[cmd.router_id] = DedupWindow()
            # No seq_floor: a router with one write in flight per router id.
            floor = cmd.seq_floor or cmd.seq
            if floor > window.floor:
                for seq in window.raise_floor(floor):
                    view.delete(keys.dedup_seq_key(self.shard_id, cmd.router_id, seq))
                view.put(keys.dedup_key(self.shard_id, cmd.router_id), keys.encode_dedup_floor(floor))
            if cmd.seq < window.floor:
                return Applied(index, self._revision, OutcomeUnknown(), (), True)
            known = window.outcomes.get(cmd.seq)
            if known is not None:
                return Applied(index, self._revision, decode_outcome(known), (), True)
        outcome, events = self._execute(cmd, view)
        self._count(events)
        ok = not isinstance(outcome, ShardError)
        split_to = cmd.request.new_shard_id if isinstance(cmd.request, Split) and ok else 0
        merged_from = cmd.request.source_shard_id if isinstance(cmd.request, CommitMerge) and ok else 0
        frozen = isinstance(cmd.request, PrepareMerge) and ok
        if window is not None:
            encoded = encode_outcome(outcome)
            window.add(cmd.seq, encoded)
            view.put(keys.dedup_seq_key(self.shard_id, cmd.router_id, cmd.seq), keys.encode_dedup_entry(encoded))
        return Applied(index, self._revision, outcome, events, split_to=split_to, merged_from=merged_from, frozen=frozen)

    def _execute(self, cmd: Command, view: StagedView) -> tuple[Outcome, tuple[Event, ...]]:
        req = cmd.request
        try:
            if isinstance(req, (PutRequest, DeleteRangeRequest, TxnRequest)):
                return self._write(cmd, req, view)
            if isinstance(req, CompactionRequest):
                return self._compact_to(req, view), ()
            if isinstance(req, ClosedTs):
                return AckResponse(self._revision), ()
            if isinstance(req, Split):
                return self._split(req, view), ()
            if isinstance(req, DeleteLeaseKeys):
                return self._delete_lease_keys(cmd, req, view)
            if isinstance(req, PrepareMerge):
                return self._prepare_merge(req, view), ()
            if isinstance(req, CommitMerge):
                return self._commit_merge(req, view), ()
        except ShardError as err:
            return err, ()
        return InvalidCommand(f"unexpected request {type(req).__name__}"), ()

    def _write(
        self, cmd: Command, req: PutRequest | DeleteRangeRequest | TxnRequest, view: StagedView
    ) -> tuple[Outcome, tuple[Event, ...]]:
        validate_op(req, self.max_txn_ops)
        check_owned(req, self._ranges, self._slot_count)
        new_rev = hlc.next_revision(self._revision, cmd.stamp, self._closed_ts)
        if new_rev > hlc.MAX_REVISION:
            raise InvalidCommand(f"revision {new_rev} overflows int64")
        ex = Executor(
            view, self._ranges, self._slot_count, self._revision, new_rev, self.readable_revision, self._compact
        )
        resp: Response
        if isinstance(req, PutRequest):
            ex.check(req)
            resp = ex.put(req)
        elif isinstance(req, DeleteRangeRequest):
            resp = ex.delete_range(req)
        else:
            resp = ex.txn(req)
        if ex.changes:
            self._revision = new_rev
        return resp, tuple(ex.events)

    def _delete_lease_keys(
        self, cmd: Command, req: DeleteLeaseKeys, view: StagedView
    ) -> tuple[Outcome, tuple[Event, ...]]:
        """Delete the owned keys whose live version carries req.lease_id, all
        at one new revision (none: the revision stays)."""
        new_rev = hlc.next_revision(self._revision, cmd.stamp, self._closed_ts)
        if new_rev > hlc.MAX_REVISION:
            raise InvalidCommand(f"revision {new_rev} overflows int64")
        ex = Executor(
            view, self._ranges, self._slot_count, self._revision, new_rev, self.readable_revision, self._compact
        )
        deleted = 0
        for key in dict.fromkeys(req.keys):
            if not key or not self.owns(key):
                continue
            kv = mvcc.live_kv(view, slots.slot_of(key, self._slot_count), key)
            if kv is not None and kv.lease == req.lease_id:
                deleted += ex.delete_range(DeleteRangeRequest(key)).deleted
        if ex.changes:
            self._revision = new_rev
        return DeleteRangeResponse(ex.revision, deleted, ()), tuple(ex.events)

    def _compact_to(self, req: CompactionRequest, view: StagedView) -> CompactionResponse:
        if req.revision <= self._compact:
            raise RevisionCompacted()
        if req.revision > self.readable_revision:
            raise FutureRevision()
        mvcc.compact(view, view, self._ranges, self._compact, req.revision)
        self._compact = req.revision
        return CompactionResponse(self._revision)

    def _split(self, req: Split, view: StagedView) -> AckResponse:
        """Give the slots `moved` to shard new_shard_id. Their data stays where
        it is; the new shard's meta starts as a copy of this one's (revision,
        compact revision, closed timestamp, dedup table; applied index 0), so
        a replica of it opened on this node continues the same history. This
        shard's slot_version grows by one and the new shard starts at the
        same epoch; the new shard's meta records the group conf to bootstrap
        its Raft group with (this group's, as of this entry).

        The live key count and size of the moved slots are counted by a scan
        here (their data is this shard's, so every replica counts the same):
        the new shard starts with them, and this shard keeps the rest. Where
        that subtraction cannot be trusted (this shard's figures unknown, or
        the new shard already hosted here, its data in the moved slots
        possibly newer than this shard's), this shard scans the slots it
        keeps instead, which only it writes."""
        moved = slots.normalize(req.moved)
        if (
            req.new_shard_id == self.shard_id
            or req.new_shard_id == 0
            or req.new_shard_id in self._children
            or not moved
            or not slots.is_subset(moved, self._ranges)
            or slots.is_subset(self._ranges, moved)
        ):
            raise InvalidSplit()
        new = req.new_shard_id
        self._epoch = Epoch(self._epoch.conf_version, self._epoch.slot_version + 1)
        view.put(keys.epoch_key(self.shard_id), keys.encode_epoch(*self._epoch_tuple()))
        kept = slots.subtract(self._ranges, moved)
        created = view.get(keys.slots_key(new)) is None
        if created:
            moved_stats = live_totals(view, moved, self._slot_count)
            if self._stats is not None:
                self._stats = (self._stats[0] - moved_stats[0], self._stats[1] - moved_stats[1])
            st = keys.ShardState(0, self._revision, self._compact, self._closed_ts)
            view.delete_range(keys.meta_prefix(new), keys.meta_end(new))
            view.put(keys.state_key(new), keys.encode_state(st))
            view.put(keys.stats_key(new), keys.encode_stats(*moved_stats))
            view.put(keys.slots_key(new), keys.encode_slots(self._slot_count, moved))
            for router_id, w in sorted(self._dedup.items()):
                view.put(keys.dedup_key(new, router_id), keys.encode_dedup_floor(w.floor))
                for seq, outcome in sorted(w.outcomes.items()):
                    view.put(keys.dedup_seq_key(new, router_id, seq), keys.encode_dedup_entry(outcome))
            view.put(keys.epoch_key(new), keys.encode_epoch(*self._epoch_tuple()))
            voters, learners = self.group_conf() if self.group_conf is not None else ((), ())
            view.put(keys.group_key(new), keys.encode_group(tuple(voters), tuple(learners)))
        # else: this node already hosts the new shard (created from the map,
        # from a snapshot of its leader, while this replica lagged): its meta
        # is its own and newer; only this shard's side of the split applies.
        if not created or self._stats is None:
            self._stats = live_totals(view, kept, self._slot_count)
        self._stats_dirty = True
        view.put(keys.child_key(self.shard_id, new), b"\x01")
        self._children = (*self._children, new)
        self._ranges = kept
        self._slots_dirty = True
        return AckResponse(self._revision)

    def _prepare_merge(self, req: PrepareMerge, view: StagedView) -> AckResponse:
        """Freeze this shard for a merge into req.target_shard_id: record the
        index and revision it froze at (its final state: nothing applied
        after this entry changes it), and bump slot_version so requests at
        the old epoch are refused."""
        if req.target_shard_id in (0, self.shard_id):
            raise InvalidCommand(f"shard {self.shard_id} cannot merge into shard {req.target_shard_id}")
        self._merge = keys.MergeState(req.target_shard_id, self._index, self._revision)
        view.put(keys.merge_key(self.shard_id), keys.encode_merge(self._merge))
        self._epoch = Epoch(self._epoch.conf_version, self._epoch.slot_version + 1)
        view.put(keys.epoch_key(self.shard_id), keys.encode_epoch(*self._epoch_tuple()))
        return AckResponse(self._revision)

    def _commit_merge(self, req: CommitMerge, view: StagedView) -> AckResponse:
        """Take over the frozen source shard req.source_shard_id. Its data is
        already in this node's engine under its slots, final since its
        PrepareMerge; its meta (slots, revisions, figures, dedup windows) is
        read from the engine too, and is the same on every replica because
        a frozen shard applies nothing after its freeze. So every replica
        whose local source froze at req.source_index computes the same
        result. One that did not raises MergeNotReady (fail-stop; see
        there). A second CommitMerge of the same source (placement sent the
        step again before it saw the first) is a no-op.

        The slots join this shard's; revision, compact revision and closed
        timestamp become the larger of the two (the source's writes all have
        revisions <= its final revision, so the next write here is above
        every event of both: watches continue in order); the dedup windows
        are merged per router id (see _merge_dedup); the key count and size
        add up (unknown if either is); slot_version + 1. The source's MERGE
        record is marked committed, and this shard records the source as
        merged (the node then destroys the source's group, keeping its slots'
        data, which is now this shard's)."""
        src = req.source_shard_id
        if src in self._merged:
            return AckResponse(self._revision)
        raw = view.get(keys.merge_key(src))
        frozen = keys.decode_merge(raw) if raw is not None else None
        if frozen is None or frozen.target != self.shard_id or frozen.index != req.source_index or frozen.committed:
            raise MergeNotReady(
                f"shard {self.shard_id}: CommitMerge of shard {src} frozen at index {req.source_index}, "
                f"but the local shard {src} shows {frozen}"
            )
        raw_slots = view.get(keys.slots_key(src))
        raw_state = view.get(keys.state_key(src))
        if raw_slots is None or raw_state is None:
            raise MergeNotReady(f"shard {self.shard_id}: merge source {src} has no slots or state here")
        _, src_ranges = keys.decode_slots(raw_slots)
        st = keys.decode_state(raw_state)
        raw_stats = view.get(keys.stats_key(src))
        if self._stats is not None and raw_stats is not None:
            n, size = keys.decode_stats(raw_stats)
            self._stats = (self._stats[0] + n, self._stats[1] + size)
        elif self._stats is not None:
            self._stats = None  # unknown until a split recomputes them
            view.delete(keys.stats_key(self.shard_id))
        self._stats_dirty = self._stats is not None
        self._merge_dedup(src, view)
        self._ranges = slots.merge(self._ranges, slots.normalize(src_ranges))
        self._slots_dirty = True
        self._revision = max(self._revision, st.revision)
        self._compact = max(self._compact, st.compact_revision)
        self._closed_ts = max(self._closed_ts, st.closed_ts)
        self._epoch = Epoch(self._epoch.conf_version, self._epoch.slot_version + 1)
        view.put(keys.epoch_key(self.shard_id), keys.encode_epoch(*self._epoch_tuple()))
        view.put(keys.merge_key(src), keys.encode_merge(keys.MergeState(frozen.target, frozen.index, frozen.revision, True)))
        view.put(keys.merged_key(self.shard_id, src), b"\x01")
        self._merged = self._merged | {src}
        return AckResponse(self._revision)

    def _merge_dedup(self, src: int, view: StagedView) -> None:
        """Merge the source's dedup windows into this shard's. Seqs are
        router-wide, so a router's floor (every seq below has its answer at
        the router) holds for both shards: the merged floor is the larger.
        A seq kept by both (one request applies in one of them at most; the
        other refused it, SlotNotOwned, while the router's map was behind)
        keeps the outcome that is not that refusal."""
        prefix = keys.dedup_prefix(src)
        theirs: dict[int, DedupWindow] = {}
        for k, v in scan(view, prefix, prefix + b"\xff" * 16 + b"\x00"):
            router_id, seq = keys.parse_dedup_key(k)
            w = theirs.setdefault(router_id, DedupWindow())
            if seq is None:
                w.floor, legacy = keys.decode_dedup_router(v)
                if legacy is not None:
                    w.add(*legacy)
            elif seq >= w.floor:
                w.add(seq, keys.decode_dedup_entry(v))
        for router_id, tw in sorted(theirs.items()):
            mine = self._dedup.get(router_id)
            if mine is None:
                mine = self._dedup[router_id] = DedupWindow()
            floor = max(mine.floor, tw.floor)
            if floor > mine.floor:
                for seq in mine.raise_floor(floor):
                    view.delete(keys.dedup_seq_key(self.shard_id, router_id, seq))
            view.put(keys.dedup_key(self.shard_id, router_id), keys.encode_dedup_floor(floor))
            for seq, outcome in sorted(tw.outcomes.items()):
                if seq < floor:
                    continue
                known = mine.outcomes.get(seq)
                if known is not None and (
                    isinstance(decode_outcome(outcome), SlotNotOwned) or not isinstance(decode_outcome(known), SlotNotOwned)
                ):
                    continue
                if known is None:
                    mine.add(seq, outcome)
                else:
                    mine.outcomes[seq] = outcome
                view.put(keys.dedup_seq_key(self.shard_id, router_id, seq), keys.encode_dedup_entry(outcome))

    # --- snapshots ---------------------------------------------------------------------

    def snapshot_header(self) -> snap.SnapshotHeader:
        return snap.SnapshotHeader(self.shard_id, self._applied, self._slot_count, self._ranges)

    def snapshot_chunks(self, chunk_bytes: int = snap.DEFAULT_CHUNK_BYTES) -> Iterator[bytes]:
        """The snapshot at applied_index() in chunks (read lazily: consume it
        before the next apply, or pass a pinned engine snapshot to
        snapshot.iter_chunks instead)."""
        return snap.iter_chunks(self._staged or self._engine, self.snapshot_header(), chunk_bytes)

    def snapshot(self) -> bytes:
        return b"".join(self.snapshot_chunks())

    def snapshot_stream(self, chunk_bytes: int = snap.DEFAULT_CHUNK_BYTES) -> tuple[int, Iterator[bytes]]:
        """(applied index, the snapshot at it in chunks), read lazily from a
        pinned engine view: later applies do not change what it yields, and
        no more than a chunk is held at a time. Call it only when everything
        applied is written to the engine (the runtime does, between rounds)."""
        return self._applied, snap.iter_chunks(self._engine.snapshot(), self.snapshot_header(), chunk_bytes)

    def restore_chunks(
        self, chunks: Iterable[bytes], index: int, wb: WriteBatch, batch_bytes: int = snap.DEFAULT_INGEST_BATCH_BYTES
    ) -> None:
        """Replace the state by a snapshot read in pieces, with bounded
        memory: records go to the engine in batches of about batch_bytes
        (written directly, ahead of wb), and the shard's STATE record, which
        says what is applied, last, into wb. A crash in between leaves the
        shard with no state record (applied 0), so the runtime restores
        again from the log store's snapshot."""
        dec = snap.StreamDecoder()
        state_key = keys.state_key(self.shard_id)
        state_raw: bytes | None = None
        batch = self._engine.new_batch()
        staged = 0
        cleared = False
        for piece in chunks:
            records = dec.feed(piece)
            if dec.header is not None and not cleared:
                h = dec.header
                if h.shard_id != self.shard_id:
                    raise CodecError(f"snapshot of shard {h.shard_id} given to shard {self.shard_id}")
                if h.applied != index:
                    raise CodecError(f"snapshot data at {h.applied} does not match metadata index {index}")
                snap.clear(batch, self.shard_id, self._slots_to_clear(h.ranges))
                cleared = True
            for k, v in records:
                if k == state_key:
                    state_raw = v
                    continue
                batch.put(k, v)
                staged += len(k) + len(v)
            if staged >= batch_bytes:
                self._write_ingest_batch(batch)
                batch, staged = self._engine.new_batch(), 0
        header = dec.finish()
        self._write_ingest_batch(batch)
        view = self._stage(wb)
        if state_raw is not None:
            view.put(state_key, state_raw)
        self._slot_count = header.slot_count
        self._ranges = slots.normalize(header.ranges)
        self._load_state(view)
        self._applied = index
        self._slots_dirty = True
        self._write_state(view)

    def _slots_to_clear(self, incoming: slots.SlotRanges) -> slots.SlotRanges:
        """What a snapshot restore clears: every slot the snapshot brings,
        and every slot this replica held that no other shard hosted here
        holds. (A replica that missed a split, restored from a snapshot of
        its shard taken after it, must not wipe the slots the split's new
        shard already holds on this node, having been created from the map.)"""
        held = self._ranges
        if self.other_slots is not None:
            held = slots.subtract(held, slots.normalize(self.other_slots()))
        return slots.merge(held, incoming)

    def _write_ingest_batch(self, batch: WriteBatch) -> None:
        self._engine.write(batch)
        flush = getattr(self._engine, "flush_memtable", None)
        if flush is not None:  # keep a big ingest out of memory (RocksDB memtables)
            flush()

    def restore(self, data: bytes, index: int, wb: WriteBatch) -> None:
        header, offset = snap.decode_header(data)
        if header.shard_id != self.shard_id:
            raise CodecError(f"snapshot of shard {header.shard_id} given to shard {self.shard_id}")
        if header.applied != index:
            raise CodecError(f"snapshot data at {header.applied} does not match metadata index {index}")
        view = self._stage(wb)
        snap.clear(view, self.shard_id, self._slots_to_clear(header.ranges))
        snap.ingest(data, view, offset)
        self._slot_count = header.slot_count
        self._ranges = slots.normalize(header.ranges)
        self._load_state(view)
        self._applied = index
        self._slots_dirty = True
        self._write_state(view)

