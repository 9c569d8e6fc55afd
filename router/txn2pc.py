"""A Txn whose compares or writes span shards: two-phase commit, coordinated
by the router that got it (DESIGN.md, "Transactions across shards"; each
participant's side is shard/txn2pc.py).

1. Plan: the participants are the shards of every compare and of every
   write of either branch; the *primary* (the lowest shard id) will hold
   the txn's record. A txn id is this router's id and a counter.
2. PREPARE on every participant at once: each locks itself for the txn
   (no other write applies there until the txn is decided there), and
   answers its compare results, the ops it owns, the ops it would refuse,
   and its floor. A participant locked by another txn for longer than
   LOCK_PATIENCE_S makes this txn give up: ABORT everywhere, back off a
   random while, and start again with a new id (no participant ever waits
   holding a lock for another txn, so two txns cannot deadlock).
3. The branch is decided here from the combined compares (etcd's
   compareToPath); an op on it that a participant would refuse ends the txn
   with that error, nothing applied.
4. DECIDE on the primary: the record becomes COMMITTED (and the primary
   applies its part) at a revision R above every floor, unless someone
   resolved the txn first (then ABORTED: start again).
5. COMMIT on every other participant at R (each applies its part in op
   order, so its ranges see the txn's earlier writes); ranges reaching
   shards that are not participants are read there at R; the answers merge
   into one etcd TxnResponse at R. FORGET drops the record afterwards.

A request that meets a lock older than the forwarder's lock_recovery_s
resolves it (``resolve``): RESOLVE on the primary (ABORTED if still
undecided, else the decision), then COMMIT or ABORT on the locked shard.
Crash points (FLOTILLA_CRASH_AT, flotilla/procs.py): txn_after_prepare,
txn_after_decide, txn_during_commit (one secondary committed, not all).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import struct
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from flotillapb import store_pb2 as spb
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from router import merge, slots
from router.cache import RoutingCache, ShardRoute
from router.etcd_errors import EtcdError
from router.etcd_errors import from_kv_error
from router.forward import Forwarder, LockedTooLong, ReadMode

log = logging.getLogger(__name__)

LOCK_PATIENCE_S = 1.0
"""The longest a PREPARE waits for an older txn's lock before this txn gives
up and starts again (a younger one's lock is never waited for)."""
ATTEMPTS = 1000
"""Starts of one txn at most (conflicts, a map that changed, a txn resolved by someone else); its deadline ends it first."""

RETRIED = frozenset({"timeout", "no_leader", "outcome_unknown"})
"""The forwarder's own answers (a shard that did not answer in time): a txn
whose PREPARE got one starts again within its deadline."""

# shard/errors.py codes a PREPARE reports for ops it would refuse -> KvError codes
_FAILED_CODES = {2: spb.KvError.KEY_NOT_FOUND, 7: spb.KvError.COMPACTED, 8: spb.KvError.FUTURE_REVISION}

COMPARE_TRUE, COMPARE_FALSE, COMPARE_TRUE_EMPTY, COMPARE_FALSE_EMPTY = 1, 2, 3, 4


class Router(Protocol):
    fwd: Forwarder
    cache: RoutingCache

    def stamp(self, header: epb.ResponseHeader, revision: int | None = None) -> None: ...


class _Again(Exception):
    """This attempt of the txn is given up, nothing applied: start again."""


class Conflict(_Again):
    pass


# --- numbering (the same as shard/txn2pc.py's) -----------------------------------------


def _kind(op: epb.RequestOp) -> str:
    return op.WhichOneof("request") or ""


def flat_compares(t: epb.TxnRequest) -> Iterator[epb.Compare]:
    yield from t.compare
    for op in (*t.success, *t.failure):
        if _kind(op) == "request_txn":
            yield from flat_compares(op.request_txn)


def flat_ops(t: epb.TxnRequest) -> Iterator[epb.RequestOp]:
    for op in (*t.success, *t.failure):
        yield op
        if _kind(op) == "request_txn":
            yield from flat_ops(op.request_txn)


def op_range(op: epb.RequestOp) -> tuple[bytes, bytes]:
    k = _kind(op)
    if k == "request_put":
        return op.request_put.key, b""
    if k == "request_delete_range":
        return op.request_delete_range.key, op.request_delete_range.range_end
    if k == "request_range":
        return op.request_range.key, op.request_range.range_end
    return b"", b""


def decide_path(t: epb.TxnRequest, results: Sequence[bool]) -> list[bool]:
    """etcd's compareToPath over the combined compare results (numbered as flat_compares)."""

    def walk(txn: epb.TxnRequest, at: int) -> tuple[list[bool], int]:
        n = len(txn.compare)
        ok = all(results[at : at + n])
        at += n
        path = [ok]
        for branch, ops in ((True, txn.success), (False, txn.failure)):
            for op in ops:
                if _kind(op) == "request_txn":
                    sub, at = walk(op.request_txn, at)
                    if branch == ok:
                        path.extend(sub)
        return path, at

    return walk(t, 0)[0]


def executed_ops(t: epb.TxnRequest, path: Sequence[bool]) -> set[int]:
    """The flat_ops numbers of the ops on the path."""
    out: set[int] = set()

    def walk(txn: epb.TxnRequest, taken: bool, pi: int, idx: int) -> tuple[int, int]:
        ok = path[pi] if taken else False
        if taken:
            pi += 1
        for branch, ops in ((True, txn.success), (False, txn.failure)):
            for op in ops:
                here = taken and ok == branch
                if here:
                    out.add(idx)
                idx += 1
                if _kind(op) == "request_txn":
                    pi, idx = walk(op.request_txn, here, pi, idx)
        return pi, idx

    walk(t, True, 0, 0)
    return out


def combine_compares(n: int, answers: Sequence[Sequence[int]]) -> list[bool] | None:
    """Each compare's result over the participants' answers (None: some
    compare was evaluated by no participant: the map changed)."""
    out: list[bool] = []
    for i in range(n):
        seen = [a[i] for a in answers if i < len(a) and a[i]]
        if not seen:
            return None
        with_keys = [v for v in seen if v in (COMPARE_TRUE, COMPARE_FALSE)]
        if with_keys:
            out.append(all(v == COMPARE_TRUE for v in with_keys))
        else:
            out.append(all(v == COMPARE_TRUE_EMPTY for v in seen))
    return out


# --- the coordinator --------------------------------------------------------------------


@dataclass(slots=True)
class _Plan:
    participants: dict[int, ShardRoute]
    primary: int
    single_writes: set[int] = field(default_factory=set)
    """flat_ops numbers of the writes of one key or one slot (one owner each)."""


class CrossShardTxns:
    def __init__(self, kv: Router) -> None:
        self._kv = kv
        self._ids = itertools.count(1)
        self._resolving: dict[bytes, asyncio.Future[None]] = {}
        self.crash_hook: Callable[[str], None] | None = None
        self.stats: dict[str, int] = {}
        """Counters: committed, aborted_conflict, resolved, ... (tests, metrics)."""
        self._forgets: set[asyncio.Task[None]] = set()
        kv.fwd.lock_resolver = self.resolve

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def _crash(self, point: str) -> None:
        if self.crash_hook is not None:
            self.crash_hook(point)

    def _new_id(self, started: int) -> bytes:
        """(HLC of the txn's first start, router id): its age, the same over
        restarts; then a counter, unique per attempt."""
        return struct.pack(">QQQ", started, self._kv.fwd.router_id, next(self._ids))

    # -- planning ---------------------------------------------------------------------
    def _plan(self, req: epb.TxnRequest) -> _Plan:
        cache = self._kv.cache
        found: dict[int, ShardRoute] = {}
        single: set[int] = set()
        for c in flat_compares(req):
            for s in cache.shards_for_range(c.key, c.range_end):
                found[s.shard_id] = s
        for i, op in enumerate(flat_ops(req)):
            k = _kind(op)
            if k == "request_txn":
                continue
            key, end = op_range(op)
            if k in ("request_put", "request_delete_range"):
                if not end or slots.range_slot(key, end, cache.slot_count) is not None:
                    single.add(i)
                for s in cache.shards_for_range(key, end):
                    found[s.shard_id] = s
        if not found:
            # only ranges: the shard of the first one holds the (empty) lock
            first = next((op for op in flat_ops(req) if _kind(op) == "request_range"), None)
            s = cache.shards_for_range(*op_range(first))[0] if first is not None else cache.shard_of_slot(0)
            found[s.shard_id] = s
        return _Plan(found, min(found), single)

    def _route(self, shard_id: int, epoch: tuple[int, int] | None = None) -> Callable[[], ShardRoute]:
        """The route of one step. With the epoch the PREPARE was planned at, a
        change starts the txn again (nothing was decided); without (every
        later step), a shard gone from the map ends the call with "outcome
        unknown", never a restart: the txn may be decided already, and a
        restart would apply it twice."""
        cache = self._kv.cache

        def route() -> ShardRoute:
            r = cache.shard(shard_id)
            if epoch is not None and (r is None or r.epoch[1] != epoch[1]):
                raise _Again(f"shard {shard_id} changed while the txn was prepared")
            if r is None:
                raise EtcdError("outcome_unknown", f"shard {shard_id} of a txn being decided left the map")
            return r

        return route

    async def _part(
        self,
        shard_id: int,
        msg: spb.ShardTxnPartRequest,
        deadline: float,
        *,
        epoch: tuple[int, int] | None = None,
        patience: float | None = None,
        yield_to: Callable[[bytes], bool] | None = None,
    ) -> spb.ShardTxnPartResponse:
        a = await self._kv.fwd.call(
            "txn_part", msg, route=self._route(shard_id, epoch), deadline=deadline, lock_patience_s=patience, yield_to=yield_to
        )
        resp: spb.ShardTxnPartResponse = a.response
        return resp

    # -- the txn ------------------------------------------------------------------------
    async def run(self, req: epb.TxnRequest, deadline: float) -> epb.TxnResponse:
        kv = self._kv
        loop = asyncio.get_running_loop()
        now = kv.fwd.hlc.now(kv.fwd.now_ms())
        for op in flat_ops(req):
            if _kind(op) == "request_range" and op.request_range.revision > now:
                raise EtcdError("future_rev")
        last = ""
        for attempt in range(ATTEMPTS):
            try:
                return await self._attempt(req, deadline, now)
            except _Again as again:
                last = str(again)
                self._count("restarted")
                wait = min(0.05, 0.002 * (1 << min(attempt, 5))) * random.uniform(0.5, 1.0)
                if loop.time() + wait >= deadline:
                    break
                await asyncio.sleep(wait)
                if isinstance(again, Conflict):
                    continue
                await kv.cache.refresh()
        raise EtcdError("timeout", f"the txn across shards could not complete: {last}")

    async def _attempt(self, req: epb.TxnRequest, deadline: float, started: int) -> epb.TxnResponse:
        kv = self._kv
        plan = self._plan(req)
        txn_id = self._new_id(started)
        age = txn_id[:16]

        def older(holder: bytes) -> bool:
            """Whether the lock's txn goes first (wait-die: this one gives up)."""
            return holder[:16] < age
        sids = sorted(plan.participants)
        prepares = [
            self._part(
                sid,
                spb.ShardTxnPartRequest(
                    phase=spb.TXN_PREPARE,
                    txn_id=txn_id,
                    primary_shard_id=plan.primary,
                    txn=req,
                    slot_version=plan.participants[sid].epoch[1],
                ),
                deadline,
                epoch=plan.participants[sid].epoch,
                patience=LOCK_PATIENCE_S,
                yield_to=older,
            )
            for sid in sids
        ]
        results = await asyncio.gather(*prepares, return_exceptions=True)
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        answers = [r for r in results if isinstance(r, spb.ShardTxnPartResponse)]
        if failure is None and any(a.state != spb.TXN_PREPARED for a in answers):
            failure = Conflict("the txn was resolved by another router while it prepared")
        if failure is not None:
            await self._abort(txn_id, plan, deadline)
            if isinstance(failure, LockedTooLong):
                self._count("conflicts")
                raise Conflict(str(failure))
            if isinstance(failure, EtcdError) and failure.name in RETRIED:
                # Nothing was decided (no DECIDE was sent): nothing applied,
                # whatever happened to the PREPAREs; start again.
                raise _Again(failure.detail or failure.message)
            raise failure
        self._crash("txn_after_prepare")
        by_sid = dict(zip(sids, answers, strict=True))
        n_compares = sum(1 for _ in flat_compares(req))
        combined = combine_compares(n_compares, [list(a.compares) for a in answers])
        owner: dict[int, int] = {}
        for sid, a in by_sid.items():
            for i in a.owned:
                owner[i] = sid
        if combined is None or any(i not in owner for i in plan.single_writes):
            await self._abort(txn_id, plan, deadline)
            raise _Again("the shard map changed under the txn")
        path = decide_path(req, combined)
        executed = executed_ops(req, path)
        for a in answers:
            for f in a.failed:
                if f.op in executed:
                    await self._abort(txn_id, plan, deadline)
                    raise _error_of(f.code)
        floor = max(a.revision for a in answers)
        kv.fwd.hlc.observe(floor)
        ops = list(flat_ops(req))
        needs = self._needs(ops, executed, plan)
        if not any(_kind(ops[i]) in ("request_put", "request_delete_range") for i in executed):
            # The branch writes nothing: the answer is the prepared state
            # (every participant held it at once) at the highest floor. A
            # participant's state at its own floor is that state (nothing is
            # written there until its lock goes), readable at once; other
            # shards are read at the highest floor. The locks go in the background.
            self._background(self._release(txn_id, plan, deadline))
            self._count("read_only")
            floors = {sid: a.revision for sid, a in by_sid.items()}
            return await self._response(req, path, floor, {}, owner, deadline, read_at=floors)
        decided = await self._part(
            plan.primary,
            spb.ShardTxnPartRequest(phase=spb.TXN_DECIDE, txn_id=txn_id, commit=True, path=path, revision=floor),
            deadline,
        )
        if decided.state != spb.TXN_COMMITTED:
            await self._abort(txn_id, plan, deadline, primary_too=False)
            raise Conflict("the txn was resolved (aborted) by another router before its decision")
        revision = decided.revision
        kv.fwd.hlc.observe(revision)
        self._crash("txn_after_decide")
        commits = self._commit(txn_id, plan, path, revision, deadline)
        if not needs:
            # Decided, and the answer needs nothing from the other
            # participants: answer now, their commits follow (a read of a
            # key they write waits for it: reads of locked keys wait).
            self._background(commits)
            return await self._response(req, path, revision, {plan.primary: decided}, owner, deadline)
        parts = await commits
        parts[plan.primary] = decided
        for sid, p in parts.items():
            if not p.has_txn:
                # committed by a resolver before this router's COMMIT arrived: its answers are gone
                raise EtcdError("outcome_unknown", f"the txn committed, but shard {sid}'s answer was lost")
        return await self._response(req, path, revision, parts, owner, deadline)

    def _needs(self, ops: list[epb.RequestOp], executed: set[int], plan: _Plan) -> bool:
        """Whether an op of the branch needs an answer from a participant
        other than the primary: a range reaching one, a delete on one (its
        count), a put returning its previous value there."""
        cache = self._kv.cache
        for i in executed:
            op = ops[i]
            k = _kind(op)
            if k == "request_txn":
                continue
            if k == "request_put" and not op.request_put.prev_kv:
                continue
            key, end = op_range(op)
            for s in cache.shards_for_range(key, end):
                if s.shard_id in plan.participants and s.shard_id != plan.primary:
                    return True
        return False

    async def _commit(
        self, txn_id: bytes, plan: _Plan, path: list[bool], revision: int, deadline: float
    ) -> dict[int, spb.ShardTxnPartResponse]:
        """COMMIT on every participant but the primary; FORGET once all did."""
        parts: dict[int, spb.ShardTxnPartResponse] = {}
        commit = spb.ShardTxnPartRequest(phase=spb.TXN_COMMIT, txn_id=txn_id, path=path, revision=revision)
        tasks = {asyncio.ensure_future(self._part(sid, commit, deadline)): sid for sid in plan.participants if sid != plan.primary}
        pending = set(tasks)
        crashed_once = False
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                parts[tasks[t]] = t.result()
            if not crashed_once:
                crashed_once = True
                self._crash("txn_during_commit")
        self._count("committed")
        self._forget(txn_id, plan.primary, deadline)
        return parts

    def _background(self, work: Awaitable[object]) -> None:
        async def run() -> None:
            try:
                await work
            except (EtcdError, _Again, LockedTooLong) as exc:
                # A lock left behind is resolved by the next request that meets it.
                log.info("a txn's background step failed: %s", exc)

        t = asyncio.ensure_future(run())
        self._forgets.add(t)
        t.add_done_callback(self._forgets.discard)

    async def _abort(self, txn_id: bytes, plan: _Plan, deadline: float, *, primary_too: bool = True) -> None:
        """Record ABORTED on the primary (so a PREPARE still in flight there
        is refused) and drop every secondary's lock. Best effort: a lock left
        behind is resolved by the next request that meets it."""
        calls = []
        if primary_too:
            calls.append(self._part(plan.primary, spb.ShardTxnPartRequest(phase=spb.TXN_DECIDE, txn_id=txn_id, commit=False), deadline))
        abort = spb.ShardTxnPartRequest(phase=spb.TXN_ABORT, txn_id=txn_id)
        calls += [self._part(sid, abort, deadline) for sid in plan.participants if sid != plan.primary]
        for r in await asyncio.gather(*calls, return_exceptions=True):
            if isinstance(r, BaseException) and not isinstance(r, (EtcdError, _Again)):
                raise r
        self._count("aborted")
        self._forget(txn_id, plan.primary, deadline)

    async def _release(self, txn_id: bytes, plan: _Plan, deadline: float) -> None:
        """Drop every participant's lock, the primary's too, with no record: for
        a txn whose every PREPARE was answered (none is still in flight to
        apply later) and that writes nothing."""
        abort = spb.ShardTxnPartRequest(phase=spb.TXN_ABORT, txn_id=txn_id)
        for r in await asyncio.gather(*(self._part(sid, abort, deadline) for sid in plan.participants), return_exceptions=True):
            if isinstance(r, BaseException) and not isinstance(r, (EtcdError, _Again)):
                raise r

    def _forget(self, txn_id: bytes, primary: int, deadline: float) -> None:
        # A record left behind (this failed) is harmless but for merges of that shard.
        self._background(self._part(primary, spb.ShardTxnPartRequest(phase=spb.TXN_FORGET, txn_id=txn_id), deadline))

    # -- the answer -----------------------------------------------------------------------
    async def _response(
        self,
        req: epb.TxnRequest,
        path: list[bool],
        revision: int,
        parts: dict[int, spb.ShardTxnPartResponse],
        owner: dict[int, int],
        deadline: float,
        read_at: dict[int, int] | None = None,
    ) -> epb.TxnResponse:
        """The etcd answer: `parts` are the participants' answers of the
        branch; ranges are completed from the other shards, read at
        `revision` (or at read_at[shard])."""
        kv = self._kv
        read_at = read_at or {}
        flat = list(flat_ops(req))
        index = {id(op): i for i, op in enumerate(flat)}
        shards = sorted(parts)
        out = epb.TxnResponse()
        jobs: list[tuple[epb.RangeRequest, epb.RangeResponse, list[merge.ShardRange]]] = []

        def build(txn: epb.TxnRequest, pieces: dict[int, epb.TxnResponse], into: epb.TxnResponse, pi: int) -> int:
            ok = path[pi]
            pi += 1
            into.succeeded = ok
            ops = txn.success if ok else txn.failure
            for j, op in enumerate(ops):
                i = index[id(op)]
                r = into.responses.add()
                k = _kind(op)
                subs = {sid: p.responses[j] for sid, p in pieces.items()}
                if k == "request_put":
                    r.response_put.SetInParent()
                    if owner.get(i) in subs:
                        r.response_put.CopyFrom(subs[owner[i]].response_put)
                elif k == "request_delete_range":
                    d = r.response_delete_range
                    d.deleted = sum(s.response_delete_range.deleted for s in subs.values())
                    d.prev_kvs.extend(sorted((kv for s in subs.values() for kv in s.response_delete_range.prev_kvs), key=lambda x: x.key))
                elif k == "request_range":
                    rr = op.request_range
                    got = [merge.ShardRange(s.response_range.kvs, s.response_range.more, s.response_range.count) for s in subs.values()]
                    jobs.append((rr, r.response_range, got))
                else:
                    pi = build(op.request_txn, {sid: s.response_txn for sid, s in subs.items()}, r.response_txn, pi)
            return pi

        build(req, {sid: parts[sid].txn for sid in shards}, out, 0)

        async def complete(rr: epb.RangeRequest, into: epb.RangeResponse, got: list[merge.ShardRange]) -> None:
            others = [s.shard_id for s in kv.cache.shards_for_range(rr.key, rr.range_end) if s.shard_id not in parts]
            if others:

                async def read(sid: int) -> merge.ShardRange:
                    at = epb.RangeRequest()
                    at.CopyFrom(rr)
                    at.serializable = False
                    at.revision = rr.revision or read_at.get(sid, revision)
                    if at.keys_only and _by_value(at):
                        at.keys_only = False
                    mode = ReadMode(spb.READ_AT_REVISION, revision=at.revision)
                    a = await kv.fwd.call("range", at, route=self._route(sid), deadline=deadline, mode=mode)
                    return merge.ShardRange(a.response.kvs, a.response.more, a.response.count)

                got = got + list(await asyncio.gather(*(read(sid) for sid in others)))
            merged = merge.merge_ranges(got, limit=rr.limit, sort_order=rr.sort_order, sort_target=rr.sort_target)
            into.kvs.extend(merged.kvs)
            into.more = merged.more
            into.count = merged.count
            if rr.keys_only:
                for item in into.kvs:
                    item.value = b""

        await asyncio.gather(*(complete(rr, into, got) for rr, into, got in jobs))
        _stamp_all(kv, out, revision)
        return out

    # -- recovery ---------------------------------------------------------------------------
    async def resolve(self, shard_id: int, lock: spb.TxnLocked, deadline: float) -> None:
        """Decide a txn whose lock a request met and that its coordinator
        left (ABORTED unless it was decided), and apply that on shard_id."""
        txn_id = bytes(lock.txn_id)
        running = self._resolving.get(txn_id)
        if running is not None:
            await asyncio.shield(running)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._resolving[txn_id] = fut
        try:
            rec = await self._part(lock.primary_shard_id, spb.ShardTxnPartRequest(phase=spb.TXN_RESOLVE, txn_id=txn_id), deadline)
            if shard_id != lock.primary_shard_id:
                if rec.state == spb.TXN_COMMITTED:
                    msg = spb.ShardTxnPartRequest(phase=spb.TXN_COMMIT, txn_id=txn_id, path=rec.path, revision=rec.revision)
                else:
                    msg = spb.ShardTxnPartRequest(phase=spb.TXN_ABORT, txn_id=txn_id)
                await self._part(shard_id, msg, deadline)
            self._count("resolved_" + ("committed" if rec.state == spb.TXN_COMMITTED else "aborted"))
            log.info("resolved txn %s on shard %d: %s", txn_id.hex(), shard_id, spb.TxnState.Name(rec.state))
        finally:
            del self._resolving[txn_id]
            fut.set_result(None)


def _by_value(r: epb.RangeRequest) -> bool:
    return merge.effective_order(r.sort_order, r.sort_target) != merge.SORT_NONE and r.sort_target == merge.TARGET_VALUE


def _stamp_all(kv: Router, resp: epb.TxnResponse, revision: int) -> None:
    kv.stamp(resp.header, revision)
    for r in resp.responses:
        which = r.WhichOneof("response")
        if which == "response_txn":
            _stamp_all(kv, r.response_txn, revision)
        elif which is not None:
            kv.stamp(getattr(r, which).header, revision)


def _error_of(code: int) -> EtcdError:
    return from_kv_error(spb.KvError(code=_FAILED_CODES.get(code, spb.KvError.INVALID_REQUEST)))
