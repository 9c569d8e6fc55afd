"""etcd's request checks, and the execution of writes at one revision.

Static checks (``validate``), made before proposing and again at apply:
etcd's v3rpc/key.go rules. Empty keys; ``ignore_value`` with a value and
``ignore_lease`` with a lease; a txn's size (the largest of its compare,
success and failure lists must not exceed ``max_txn_ops``, and a nested txn
gets what its parent leaves); and etcd's ``checkIntervals`` duplicate rule:
in one branch no key may be put twice or put and deleted, nested txns
included (a put in a nested then-branch and one in its else-branch may
share a key: only one runs). Like etcd, a delete's range is taken
literally, so a from-key delete (range_end ``"\\0"``) overlaps nothing.

Execution (``Executor``), at apply: every write of one command gets the
same revision and a growing sub-revision; reads inside a txn see the txn's
earlier writes (etcd up to 3.6 updates its index per op). A key's live
version is found through the shard's KeyIndex (shard/keyindex.py: its
revision from memory, then one point read), which the Executor keeps in
step with every version it stages. A txn evaluates
all its compares, nested ones included, before any op runs, and checks the
chosen path (range revisions, keys that ignore_value/ignore_lease need)
before writing anything, so a failing txn writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from raft.core.errors import RaftInvariantError
from shard import keys, mvcc, mvcc_range, slots
from shard.errors import (
    DuplicateKey,
    EmptyKey,
    FutureRevision,
    KeyNotFound,
    LeaseProvided,
    RevisionCompacted,
    SlotNotOwned,
    TooManyOps,
    ValueProvided,
)
from shard.types import (
    ClosedTs,
    CommitMerge,
    Compare,
    CompareResult,
    CompareTarget,
    CompactionRequest,
    DeleteLeaseKeys,
    DeleteRangeRequest,
    DeleteRangeResponse,
    Event,
    EventType,
    KeyValue,
    PrepareMerge,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    Request,
    RequestOp,
    ResponseOp,
    Split,
    TxnPart,
    TxnRequest,
    TxnResponse,
)

if TYPE_CHECKING:
    from shard.engine import StagedView
    from shard.keyindex import KeyIndex

DEFAULT_MAX_TXN_OPS = 128

# --- static checks -----------------------------------------------------------------


def validate_op(op: RequestOp, max_txn_ops: int = DEFAULT_MAX_TXN_OPS) -> None:
    """Raise the RequestError etcd answers for a malformed request."""
    if isinstance(op, (RangeRequest, DeleteRangeRequest)):
        if not op.key:
            raise EmptyKey()
    elif isinstance(op, PutRequest):
        if not op.key:
            raise EmptyKey()
        if op.ignore_value and op.value:
            raise ValueProvided()
        if op.ignore_lease and op.lease != 0:
            raise LeaseProvided()
    elif isinstance(op, TxnRequest):
        _check_txn(op, max_txn_ops)
        _check_intervals(op.success)
        _check_intervals(op.failure)
    else:
        raise TypeError(f"not a txn op: {type(op).__name__}")


def validate(request: Request | RangeRequest, max_txn_ops: int = DEFAULT_MAX_TXN_OPS) -> None:
    """etcd's checks of a request, before it is proposed (or served): raise
    the RequestError etcd would answer."""
    if isinstance(request, (PutRequest, DeleteRangeRequest, TxnRequest, RangeRequest)):
        validate_op(request, max_txn_ops)
    elif isinstance(request, TxnPart):
        if request.txn is not None:
            validate_op(request.txn, max_txn_ops)
    elif isinstance(request, (CompactionRequest, ClosedTs, Split, DeleteLeaseKeys, PrepareMerge, CommitMerge)):
        return
    else:
        raise TypeError(f"not a shard request: {type(request).__name__}")


def _check_txn(t: TxnRequest, max_txn_ops: int) -> None:
    opc = max(len(t.compare), len(t.success), len(t.failure))
    if opc > max_txn_ops:
        raise TooManyOps()
    for c in t.compare:
        if not c.key:
            raise EmptyKey()
    for op in (*t.success, *t.failure):
        if isinstance(op, TxnRequest):
            _check_txn(op, max_txn_ops - opc)
        else:
            validate_op(op, max_txn_ops)


def _overlaps(dels: list[tuple[bytes, bytes]], key: bytes) -> bool:
    return any(lo <= key < hi for lo, hi in dels)


def _check_intervals(ops: Sequence[RequestOp]) -> tuple[set[bytes], list[tuple[bytes, bytes]]]:
    """(keys put, ranges deleted) by ops, nested txns included; raise
    DuplicateKey on a forbidden overlap."""
    dels: list[tuple[bytes, bytes]] = []
    for op in ops:
        if isinstance(op, DeleteRangeRequest):
            dels.append((op.key, op.range_end) if op.range_end else (op.key, op.key + b"\x00"))
    puts: set[bytes] = set()
    for op in ops:
        if not isinstance(op, TxnRequest):
            continue
        puts_then, dels_then = _check_intervals(op.success)
        puts_else, dels_else = _check_intervals(op.failure)
        for k in puts_then:
            if k in puts or _overlaps(dels, k):
                raise DuplicateKey()
            puts.add(k)
        for k in puts_else:
            if (k in puts and k not in puts_then) or _overlaps(dels, k):
                raise DuplicateKey()
            puts.add(k)
        dels.extend(dels_then)
        dels.extend(dels_else)
    for op in ops:
        if isinstance(op, PutRequest):
            if op.key in puts or _overlaps(dels, op.key):
                raise DuplicateKey()
            puts.add(op.key)
    return puts, dels


def _all_keys(op: RequestOp) -> Iterator[tuple[bytes, bytes]]:
    """(key, range_end) of everything a request reads or writes."""
    if isinstance(op, TxnRequest):
        for c in op.compare:
            yield c.key, c.range_end
        for sub in (*op.success, *op.failure):
            yield from _all_keys(sub)
    elif isinstance(op, PutRequest):
        yield op.key, b""
    else:
        yield op.key, op.range_end


def check_owned(op: RequestOp, owned: slots.SlotRanges, slot_count: int) -> None:
    """Raise SlotNotOwned if op names a key (or a range confined to one
    slot) that this shard does not own. Ranges over many slots are served
    for the owned part."""
    if isinstance(op, PutRequest):  # the common case, without the generator
        slot = slots.slot_of(op.key, slot_count)
        if not slots.contains(owned, slot):
            raise SlotNotOwned(f"key {op.key!r} is in slot {slot}, not owned by this shard")
        return
    for key, range_end in _all_keys(op):
        one = slots.single_slot(key, range_end, slot_count)
        if one is not None and not slots.contains(owned, one):
            raise SlotNotOwned(f"key {key!r} is in slot {one}, not owned by this shard")


# --- compares ------------------------------------------------------------------------


def _compare_kv(c: Compare, kv: KeyValue) -> bool:
    if c.target == CompareTarget.VALUE:
        a: bytes | int = kv.value
        b: bytes | int = c.operand if isinstance(c.operand, bytes) else b""
    else:
        a = {
            CompareTarget.VERSION: kv.version,
            CompareTarget.CREATE: kv.create_revision,
            CompareTarget.MOD: kv.mod_revision,
            CompareTarget.LEASE: kv.lease,
        }[c.target]
        b = c.operand if isinstance(c.operand, int) else 0
    result = (a > b) - (a < b)  # type: ignore[operator]
    if c.result == CompareResult.EQUAL:
        return result == 0
    if c.result == CompareResult.NOT_EQUAL:
        return result != 0
    if c.result == CompareResult.GREATER:
        return result > 0
    return result < 0


# --- execution ------------------------------------------------------------------------


class Executor:
    """Runs the ops of one command at one new revision.

    `base_rev` is the shard's revision before the command, `new_rev` the one
    its writes get, `horizon` the highest revision a read may name (the
    revision or the closed timestamp, whichever is higher). `index` is the
    shard's KeyIndex: read for the keys of owned slots, and told of every
    version written."""

    def __init__(
        self,
        view: StagedView,
        owned: slots.SlotRanges,
        slot_count: int,
        base_rev: int,
        new_rev: int,
        horizon: int,
        compact_rev: int,
        index: KeyIndex,
    ) -> None:
        self.view = view
        self.index = index
        self.owned = owned
        self.slot_count = slot_count
        self.base_rev = base_rev
        self.new_rev = new_rev
        self.horizon = horizon
        self.compact_rev = compact_rev
        self.changes = 0
        self.events: list[Event] = []
        self._written: dict[tuple[int, bytes], int] = {}  # (slot, key) -> sub of its write

    @property
    def revision(self) -> int:
        return self.new_rev if self.changes else self.base_rev

    # reads
    def live(self, key: bytes) -> KeyValue | None:
        """The key's live version now (this command's writes included), or
        None if it is absent."""
        slot = slots.slot_of(key, self.slot_count)
        if not slots.contains(self.owned, slot):
            return mvcc.live_kv(self.view, slot, key)  # not this shard's slot: not indexed
        return self._indexed(slot, key)

    def _indexed(self, slot: int, key: bytes) -> KeyValue | None:
        """live() of a key of an owned slot: its revision from the index,
        then one point read (none if absent)."""
        rev = self.index.revision(self.view, slot, key)
        if not rev:
            return None
        raw = self.view.get(keys.mvcc_key(slot, key, rev))
        if raw is None:
            raise RaftInvariantError(f"key index names revision {rev} of {key!r} in slot {slot}, which is not stored")
        return mvcc.kv_of(key, rev, raw)

    def compare(self, c: Compare) -> bool:
        if c.range_end:
            kvs = list(mvcc.visible(self.view, self.owned, self.slot_count, c.key, c.range_end))
        else:
            kv = self.live(c.key)
            kvs = [kv] if kv is not None else []
        if not kvs:
            if c.target == CompareTarget.VALUE:
                return False  # etcd: a value compare on missing keys always fails
            return _compare_kv(c, KeyValue(c.key))
        return all(_compare_kv(c, kv) for kv in kvs)

    def path(self, t: TxnRequest) -> list[bool]:
        """etcd's compareToPath: the branch taken by t and by every nested txn
        on the way, depth first, all decided before any op runs."""
        ok = all(self.compare(c) for c in t.compare)
        out = [ok]
        for op in t.success if ok else t.failure:
            if isinstance(op, TxnRequest):
                out.extend(self.path(op))
        return out

    def check_range(self, r: RangeRequest) -> None:
        if r.revision == 0:
            return
        if r.revision < 0:
            # etcd: below its first compact revision (initially -1), so
            # "compacted" once anything was compacted, else the current revision
            if self.compact_rev > 0:
                raise RevisionCompacted()
            return
        if r.revision > self.horizon:
            raise FutureRevision()
        if r.revision < self.compact_rev:
            raise RevisionCompacted()

    def check(self, op: RequestOp, path: list[bool] | None = None) -> int:
        """etcd's checkTxn over the path about to run; returns how many path
        entries op consumed."""
        if isinstance(op, RangeRequest):
            self.check_range(op)
        elif isinstance(op, PutRequest):
            if (op.ignore_value or op.ignore_lease) and self.live(op.key) is None:
                raise KeyNotFound()
        elif isinstance(op, TxnRequest):
            assert path is not None
            used = 1
            for sub in op.success if path[0] else op.failure:
                if isinstance(sub, TxnRequest):
                    used += self.check(sub, path[used:])
                else:
                    self.check(sub)
            return used
        return 0

    # writes
    def _write(self, slot: int, key: bytes, record: bytes) -> None:
        """Stage an encoded version of key at new_rev (the caller tells the
        index)."""
        sub = self.changes
        self.changes += 1
        old_sub = self._written.get((slot, key))
        if old_sub is not None:
            # A second write of one key at this revision (etcd allows it
            # only through a from-key delete): it replaces the first.
            self.view.delete(keys.rev_key(slot, self.new_rev, old_sub))
        self._written[(slot, key)] = sub
        self.view.put(keys.mvcc_key(slot, key, self.new_rev), record)
        self.view.put(keys.rev_key(slot, self.new_rev, sub), key)

    def put(self, p: PutRequest) -> PutResponse:
        """Callers own p.key's slot (check_owned; PartExecutor.put skips the
        keys of other slots)."""
        key = p.key
        rev = self.new_rev
        slot = slots.slot_of(key, self.slot_count)
        prev = self._indexed(slot, key)
        value, lease = p.value, p.lease
        if prev is None:
            create, version = rev, 1
            if p.ignore_value:
                value = b""
            if p.ignore_lease:
                lease = 0
        else:
            create, version = prev.create_revision, prev.version + 1
            if p.ignore_value:
                value = prev.value
            if p.ignore_lease:
                lease = prev.lease
        self._write(slot, key, keys.encode_live(create, version, lease, value))
        self.index.put(slot, key, rev)
        self.events.append(Event(EventType.PUT, KeyValue(key, create, rev, version, value, lease), prev))
        return PutResponse(rev, prev if p.prev_kv else None)

    def delete_range(self, d: DeleteRangeRequest) -> DeleteRangeResponse:
        if d.range_end:
            doomed = list(mvcc.visible(self.view, self.owned, self.slot_count, d.key, d.range_end))
        else:  # one key: what visible() finds, from the index (nothing in a slot not owned)
            slot = slots.slot_of(d.key, self.slot_count)
            kv = self._indexed(slot, d.key) if slots.contains(self.owned, slot) else None
            doomed = [kv] if kv is not None else []
        for kv in doomed:
            slot = slots.slot_of(kv.key, self.slot_count)
            self._write(slot, kv.key, keys.TOMBSTONE_RECORD)
            self.index.remove(slot, kv.key)
            self.events.append(Event(EventType.DELETE, KeyValue(kv.key, mod_revision=self.new_rev), kv))
        return DeleteRangeResponse(self.revision, len(doomed), tuple(doomed) if d.prev_kv else ())

    def range(self, r: RangeRequest) -> RangeResponse:
        at_rev = r.revision if r.revision > 0 else None
        return mvcc_range.evaluate(self.view, self.owned, self.slot_count, r, at_rev, self.revision)

    def run(self, op: RequestOp, path: list[bool] | None = None) -> tuple[ResponseOp, int]:
        """Execute op (a txn along path); returns (response, path entries used)."""
        if isinstance(op, PutRequest):
            return self.put(op), 0
        if isinstance(op, DeleteRangeRequest):
            return self.delete_range(op), 0
        if isinstance(op, RangeRequest):
            return self.range(op), 0
        assert path is not None
        used = 1
        responses: list[ResponseOp] = []
        for sub in op.success if path[0] else op.failure:
            if isinstance(sub, TxnRequest):
                resp, n = self.run(sub, path[used:])
                used += n
            else:
                resp, _ = self.run(sub)
            responses.append(resp)
        return TxnResponse(self.revision, path[0], tuple(responses)), used

    def txn(self, t: TxnRequest) -> TxnResponse:
        path = self.path(t)
        self.check(t, path)
        resp, _ = self.run(t, path)
        assert isinstance(resp, TxnResponse)
        return self._fix_revisions(resp)

    def _fix_revisions(self, resp: TxnResponse) -> TxnResponse:
        # etcd reports the txn's final revision in the outer header, and so
        # in the nested txn headers, which share the outer response's.
        subs = tuple(self._fix_revisions(s) if isinstance(s, TxnResponse) else s for s in resp.responses)
        return TxnResponse(self.revision, resp.succeeded, subs)
