"""ShardStateMachine: etcd's multi-version key-value semantics for one shard,
as the runtime's StateMachine (raft/runtime/statemachine.py).

Each committed entry is one ``Command`` (shard/codec.py). Applying it:

1. The leader's closed timestamp (piggybacked, or a ``ClosedTs`` entry)
   raises the shard's ``closed_ts``.
2. Dedup (Raft thesis 6.3; shard/dedup.py): a command of a router id is
   applied at most once; a retry gets its first outcome, and a seq below
   its router's floor gets ``OutcomeUnknown``.
3. A writing command gets ``rev = max(prev_rev + 1, stamp, closed_ts + 1)``
   (shard/hlc.py): one revision for all the writes of a txn. A command that
   writes nothing (a failed or read-only txn, a delete of nothing, an error)
   leaves the revision alone.
4. The result is an ``Applied``: the outcome (a response, or the ShardError
   etcd would answer) and the events to fan out to watchers.
5. The shard's meta (shard/meta.py: revisions, closed timestamp, epoch,
   slots, live key count and size) follows, and is written into the apply
   batch with the applied index.
6. Splits and merges (``Split``; ``PrepareMerge`` in the source's log,
   ``CommitMerge`` in the target's) apply in shard/splitmerge.py. A frozen
   source applies nothing after its PrepareMerge: every later entry is
   answered SlotNotOwned (a routing error: the router retries elsewhere)
   with no effect at all, not even on the closed timestamp or the dedup
   windows, so its final state is the same on every replica that applied
   the freeze.

Writes find each key's live version through the shard's KeyIndex
(shard/keyindex.py): its revision from memory, for the slots written since
the process started, loaded from the state when first asked; then one
point read. The index is derived state only: a snapshot restore clears it,
a split forgets the moved slots and a CommitMerge the slots it takes over.

Reads (``range``, ``events_since``; shard/reader.py) serve the applied state. Everything is
read through the engine plus the writes staged in the current apply batch
(``StagedView``), because the runtime writes the batch only after the round.
Reads must run on the thread that applies, or use ``reader(frozen=True)``.

Snapshots of the state and their restore are in shard/smsnapshots.py
(mixed in).

Pure: the engine is passed in; no I/O, clocks, threads or asyncio here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shard import hlc, keys, mvcc, slots, txn2pc
from shard.codec import decode_command
from shard.dedup import DedupTable, Outcome
from shard.engine import StagedView
from shard.errors import CodecError, FutureRevision, InvalidCommand, RevisionCompacted, ShardError, SlotNotOwned, TxnLocked
from shard.keyindex import KeyIndex
from shard.meta import ShardMeta
from shard.reader import ShardReader
from shard.smsnapshots import ShardSnapshots
from shard.splitmerge import GroupConf, apply_commit_merge, apply_prepare_merge, apply_split
from shard.txn import DEFAULT_MAX_TXN_OPS, Executor, check_owned, validate_op
from shard.types import (
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
    PrepareMerge,
    PutRequest,
    RangeRequest,
    RangeResponse,
    Response,
    Split,
    TxnPart,
    TxnPartResponse,
    TxnPhase,
    TxnRequest,
    TxnResponse,
    TxnState,
)

if TYPE_CHECKING:
    from raft.core.types import Entry
    from shard.engine import KvEngine, KvReader, WriteBatch

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


class ShardStateMachine(ShardSnapshots):
    __slots__ = ("_dedup", "_engine", "_index", "_lock", "_meta", "_staged", "group_conf", "max_txn_ops", "other_slots", "shard_id")  # thousands per store (issue #20)

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
        self._meta = ShardMeta.open(engine, shard_id, slot_count, slot_ranges)
        self._dedup = DedupTable.load(engine, shard_id)
        self._lock = txn2pc.load_lock(engine, shard_id)
        self._index = KeyIndex()
        """Each key's live revision, for the slots the apply step touched
        (shard/keyindex.py). Derived: empty at start, loaded from the state."""

    def _load_state(self, reader: KvReader) -> None:
        self._meta.load(reader)
        self._dedup = DedupTable.load(reader, self.shard_id)
        self._lock = txn2pc.load_lock(reader, self.shard_id)

    # --- what the node reads ---------------------------------------------------------

    @property
    def slot_count(self) -> int:
        return self._meta.slot_count

    @property
    def slot_ranges(self) -> slots.SlotRanges:
        return self._meta.ranges

    @property
    def epoch(self) -> Epoch:
        return self._meta.epoch

    @property
    def children(self) -> tuple[int, ...]:
        """The shards split off this one (as applied here)."""
        return self._meta.children

    @property
    def merge_state(self) -> keys.MergeState | None:
        """This shard's freeze for a merge into another (None: not frozen)."""
        return self._meta.merge

    @property
    def frozen(self) -> bool:
        return self._meta.merge is not None

    @property
    def merged_sources(self) -> frozenset[int]:
        """The shards merged into this one (as applied here)."""
        return self._meta.merged

    @property
    def bootstrap_conf(self) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """(voters, learners) a split-created shard's group starts with; None
        for a shard created otherwise."""
        return self._meta.bootstrap_conf

    @property
    def key_count(self) -> int:
        """How many live keys the shard holds, as applied (0 if unknown)."""
        return self._meta.stats[0] if self._meta.stats is not None else 0

    @property
    def size_bytes(self) -> int:
        """The sum of len(key) + len(value) of the shard's live keys, as
        applied (0 if unknown): an approximation of its size, which leaves
        out old versions, tombstones and record overhead."""
        return self._meta.stats[1] if self._meta.stats is not None else 0

    @property
    def stats_known(self) -> bool:
        """False for a shard whose meta predates key_count and size_bytes
        (until a split recomputes them)."""
        return self._meta.stats is not None

    @property
    def revision(self) -> int:
        """The revision of the last write applied (0 before any)."""
        return self._meta.revision

    @property
    def compact_revision(self) -> int:
        return self._meta.compact

    @property
    def closed_ts(self) -> int:
        return self._meta.closed_ts

    @property
    def txn_lock(self) -> txn2pc.TxnLock | None:
        """The lock of the txn across shards prepared here and not decided
        yet (None: unlocked; shard/txn2pc.py)."""
        return self._lock

    def locked_error(self) -> TxnLocked:
        lock = self._lock
        assert lock is not None
        return TxnLocked(
            f"shard {self.shard_id} is locked by txn {lock.txn_id.hex()} (primary shard {lock.primary})",
            txn_id=lock.txn_id,
            primary=lock.primary,
            locked_at=lock.stamp,
        )

    @property
    def readable_revision(self) -> int:
        """The highest revision a read may name here: the state at any revision
        up to the closed timestamp is final once the closed timestamp applied."""
        return self._meta.readable_revision

    def owns(self, key: bytes) -> bool:
        return slots.contains(self._meta.ranges, slots.slot_of(key, self._meta.slot_count))

    def last_seq(self, router_id: int) -> int:
        """The latest sequence applied for a router whose outcome is still
        kept (0: none)."""
        return self._dedup.last_seq(router_id)

    def dedup_window(self, router_id: int) -> tuple[int, tuple[int, ...]]:
        """(floor, the seqs whose outcomes are kept, in order) of a router
        id; (0, ()) for one never seen."""
        return self._dedup.window(router_id)

    def reader(self, frozen: bool = False, readable: int = 0) -> ShardReader:
        """The applied state for reads. frozen: later applies do not change
        what it reads in memory (for reading off the applying thread; the
        engine underneath stays live, which reads at a fixed revision do not
        notice, as versions are never rewritten, unless a compaction passes
        that revision meanwhile)."""
        view: KvReader = self._engine
        if self._staged is not None:
            view = self._staged.freeze() if frozen else self._staged
        m = self._meta
        return ShardReader(view, m.ranges, m.slot_count, m.revision, m.compact, max(m.readable_revision, readable), self.max_txn_ops)

    def range(self, r: RangeRequest, readable: int = 0) -> RangeResponse:
        """etcd's Range over this shard's slots, at r.revision (0: now).
        readable: a higher readable revision the node vouches for (a closed
        timestamp of the side channel, shard/sidets.py; never applied here)."""
        return self.reader(readable=readable).range(r)

    def events_since(
        self, key: bytes, range_end: bytes, start_rev: int, limit: int = 0, prev_kv: bool = False
    ) -> tuple[Event, ...]:
        """The events of [key, range_end) from start_rev on (see mvcc.events_since)."""
        return self.reader().events_since(key, range_end, start_rev, limit, prev_kv)

    # --- the runtime's StateMachine ---------------------------------------------------------

    def applied_index(self) -> int:
        return self._meta.applied

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
            self._meta.applied = entries[-1].index
            self._meta.write(view)
        return out

    def on_applied_index(self, index: int, wb: WriteBatch) -> None:
        self._meta.applied = index
        self._meta.write(self._stage(wb))

    def on_conf_change(self, index: int, wb: WriteBatch) -> None:
        """The shard's group applied a conf change at index: conf_version + 1."""
        self._meta.bump_conf_version(self._stage(wb))

    def _apply_entry(self, index: int, data: bytes, view: StagedView) -> Applied:
        m = self._meta
        try:
            cmd = decode_command(data)
        except CodecError as exc:
            return Applied(index, m.revision, InvalidCommand(f"log entry is not a valid shard command: {exc}"))
        if m.merge is not None:  # frozen: nothing after the PrepareMerge has any effect
            return Applied(index, m.revision, SlotNotOwned(f"shard {self.shard_id} is frozen for a merge into shard {m.merge.target}"))
        lock = self._lock
        if lock is not None and not txn2pc.is_part(cmd.request, lock):
            # Locked by a txn across shards: nothing else applies, with no
            # effect at all (not on the closed timestamp, not on dedup):
            # its sender retries once the txn is decided here.
            return Applied(index, m.revision, self.locked_error())
        m.index = index
        closed = max(cmd.closed_ts, cmd.request.ts if isinstance(cmd.request, ClosedTs) else 0)
        if lock is None:
            m.closed_ts = max(m.closed_ts, closed)
        window, answered = self._dedup.admit(cmd, view)
        if answered is not None:
            return Applied(index, m.revision, answered, (), True)
        outcome, events = self._execute(cmd, view)
        if lock is not None and self._lock is None:
            # The txn was decided here (its part applied at the commit
            # revision): the closed timestamp moves again.
            m.closed_ts = max(m.closed_ts, closed)
        m.count(events)
        ok = not isinstance(outcome, ShardError)
        split_to = cmd.request.new_shard_id if isinstance(cmd.request, Split) and ok else 0
        merged_from = cmd.request.source_shard_id if isinstance(cmd.request, CommitMerge) and ok else 0
        frozen = isinstance(cmd.request, PrepareMerge) and ok
        if window is not None:
            self._dedup.record(window, cmd, outcome, view)
        return Applied(index, m.revision, outcome, events, split_to=split_to, merged_from=merged_from, frozen=frozen)

    def _execute(self, cmd: Command, view: StagedView) -> tuple[Outcome, tuple[Event, ...]]:
        req = cmd.request
        try:
            if isinstance(req, (PutRequest, DeleteRangeRequest, TxnRequest)):
                return self._write(cmd, req, view)
            if isinstance(req, CompactionRequest):
                return self._compact_to(req, view), ()
            if isinstance(req, ClosedTs):
                return AckResponse(self._meta.revision), ()
            if isinstance(req, Split):
                ack = apply_split(self._meta, self._dedup, req, view, self.group_conf)
                self._index.forget(slots.normalize(req.moved))  # another shard writes them now
                return ack, ()
            if isinstance(req, DeleteLeaseKeys):
                return self._delete_lease_keys(cmd, req, view)
            if isinstance(req, PrepareMerge):
                if txn2pc.has_records(view, self.shard_id):
                    # A secondary may still ask for an outcome recorded here.
                    raise TxnLocked(f"shard {self.shard_id} keeps txn records not yet forgotten: no merge until they are")
                return apply_prepare_merge(self._meta, req, view), ()
            if isinstance(req, CommitMerge):
                before = self._meta.ranges
                ack = apply_commit_merge(self._meta, self._dedup, req, view)
                # The source's slots: its data, unknown to the index until loaded.
                self._index.forget(slots.subtract(self._meta.ranges, before))
                return ack, ()
            if isinstance(req, TxnPart):
                return self._txn_part(cmd, req, view)
        except ShardError as err:
            return err, ()
        return InvalidCommand(f"unexpected request {type(req).__name__}"), ()

    def _executor(self, cmd: Command, view: StagedView) -> Executor:
        """An Executor for the writes of cmd, all at its one new revision."""
        m = self._meta
        new_rev = hlc.next_revision(m.revision, cmd.stamp, m.closed_ts)
        if new_rev > hlc.MAX_REVISION:
            raise InvalidCommand(f"revision {new_rev} overflows int64")
        return Executor(view, m.ranges, m.slot_count, m.revision, new_rev, m.readable_revision, m.compact, self._index)

    def _write(
        self, cmd: Command, req: PutRequest | DeleteRangeRequest | TxnRequest, view: StagedView
    ) -> tuple[Outcome, tuple[Event, ...]]:
        validate_op(req, self.max_txn_ops)
        check_owned(req, self._meta.ranges, self._meta.slot_count)
        ex = self._executor(cmd, view)
        resp: Response
        if isinstance(req, PutRequest):
            ex.check(req)
            resp = ex.put(req)
        elif isinstance(req, DeleteRangeRequest):
            resp = ex.delete_range(req)
        else:
            resp = ex.txn(req)
        if ex.changes:
            self._meta.revision = ex.new_rev
        return resp, tuple(ex.events)

    # --- txns across shards (shard/txn2pc.py) ---------------------------------------------

    def _set_lock(self, lock: txn2pc.TxnLock | None, view: StagedView) -> None:
        self._lock = lock
        if lock is None:
            view.delete(keys.txn_lock_key(self.shard_id))
        else:
            view.put(keys.txn_lock_key(self.shard_id), txn2pc.encode_lock(lock))

    def _record(self, txn_id: bytes, rec: txn2pc.TxnRecord, view: StagedView) -> None:
        view.put(keys.txn_record_key(self.shard_id, txn_id), txn2pc.encode_record(rec))

    def _txn_part(self, cmd: Command, req: TxnPart, view: StagedView) -> tuple[Outcome, tuple[Event, ...]]:
        m = self._meta
        lock = self._lock
        mine = lock is not None and lock.txn_id == req.txn_id
        if req.phase == TxnPhase.PREPARE:
            if req.txn is None:
                raise InvalidCommand("a PREPARE without its txn")
            if req.primary == self.shard_id:
                rec = txn2pc.load_record(view, self.shard_id, req.txn_id)
                if rec is not None:  # resolved (aborted) before it prepared here
                    return TxnPartResponse(rec.state, rec.revision, path=rec.path), ()
            if not mine:
                if req.slot_version and req.slot_version != m.epoch.slot_version:
                    raise SlotNotOwned(f"shard {self.shard_id} changed its slots since the txn was planned")
                validate_op(req.txn, self.max_txn_ops)
                floor = max(m.revision, m.closed_ts)
                self._set_lock(txn2pc.TxnLock(req.txn_id, req.primary, cmd.stamp, floor, req.txn), view)
            lock = self._lock
            assert lock is not None
            return txn2pc.evaluate(view, m.ranges, m.slot_count, lock.floor, m.compact, lock.txn), ()
        if req.phase == TxnPhase.DECIDE:
            rec = txn2pc.load_record(view, self.shard_id, req.txn_id)
            if rec is not None:
                return TxnPartResponse(rec.state, rec.revision, path=rec.path), ()
            if not mine or not req.commit:
                self._record(req.txn_id, txn2pc.TxnRecord(TxnState.ABORTED, 0, cmd.stamp), view)
                if mine:
                    self._set_lock(None, view)
                return TxnPartResponse(TxnState.ABORTED), ()
            assert lock is not None
            txn2pc.check_path(lock.txn, req.path)
            rev = hlc.next_revision(m.revision, cmd.stamp, max(m.closed_ts, lock.floor, req.revision))
            resp, events = self._commit_part(lock, req.path, rev, view)
            self._record(req.txn_id, txn2pc.TxnRecord(TxnState.COMMITTED, rev, cmd.stamp, req.path), view)
            self._set_lock(None, view)
            return TxnPartResponse(TxnState.COMMITTED, rev, path=req.path, txn=resp), events
        if req.phase == TxnPhase.COMMIT:
            if not mine:
                return TxnPartResponse(TxnState.COMMITTED, req.revision), ()  # applied before (or resolved)
            assert lock is not None
            txn2pc.check_path(lock.txn, req.path)
            if req.revision <= max(m.revision, m.closed_ts, lock.floor):
                raise InvalidCommand(f"commit revision {req.revision} is not above shard {self.shard_id}'s floor")
            resp, events = self._commit_part(lock, req.path, req.revision, view)
            self._set_lock(None, view)
            return TxnPartResponse(TxnState.COMMITTED, req.revision, path=req.path, txn=resp), events
        if req.phase == TxnPhase.ABORT:
            if mine:
                self._set_lock(None, view)
            return TxnPartResponse(TxnState.ABORTED, m.revision), ()
        if req.phase == TxnPhase.RESOLVE:
            rec = txn2pc.load_record(view, self.shard_id, req.txn_id)
            if rec is None:
                rec = txn2pc.TxnRecord(TxnState.ABORTED, 0, cmd.stamp)
                self._record(req.txn_id, rec, view)
                if mine:
                    self._set_lock(None, view)
            return TxnPartResponse(rec.state, rec.revision, path=rec.path), ()
        if req.phase == TxnPhase.FORGET:
            view.delete(keys.txn_record_key(self.shard_id, req.txn_id))
            return TxnPartResponse(TxnState.ABORTED, m.revision), ()
        raise InvalidCommand(f"unknown txn phase {req.phase}")

    def _commit_part(
        self, lock: txn2pc.TxnLock, path: tuple[bool, ...], rev: int, view: StagedView
    ) -> tuple[TxnResponse, tuple[Event, ...]]:
        m = self._meta
        if rev > hlc.MAX_REVISION:
            raise InvalidCommand(f"revision {rev} overflows int64")
        ex = txn2pc.PartExecutor(view, m.ranges, m.slot_count, m.revision, rev, max(rev, m.readable_revision), m.compact, self._index)
        resp = txn2pc.run_part(ex, lock.txn, path)
        if ex.changes:
            m.revision = rev
        return resp, tuple(ex.events)

    def _delete_lease_keys(
        self, cmd: Command, req: DeleteLeaseKeys, view: StagedView
    ) -> tuple[Outcome, tuple[Event, ...]]:
        """Delete the owned keys whose live version carries req.lease_id, all
        at one new revision (none: the revision stays)."""
        ex = self._executor(cmd, view)
        deleted = 0
        for key in dict.fromkeys(req.keys):
            if not key or not self.owns(key):
                continue
            kv = ex.live(key)
            if kv is not None and kv.lease == req.lease_id:
                deleted += ex.delete_range(DeleteRangeRequest(key)).deleted
        if ex.changes:
            self._meta.revision = ex.new_rev
        return DeleteRangeResponse(ex.revision, deleted, ()), tuple(ex.events)

    def _compact_to(self, req: CompactionRequest, view: StagedView) -> CompactionResponse:
        m = self._meta
        if req.revision <= m.compact:
            raise RevisionCompacted()
        if req.revision > m.readable_revision:
            raise FutureRevision()
        mvcc.compact(view, view, m.ranges, m.compact, req.revision)
        m.compact = req.revision
        return CompactionResponse(m.revision)

    # --- snapshots ---------------------------------------------------------------------
