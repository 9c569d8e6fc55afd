"""The etcd KV service over shards.

- Range of one key, or of a range inside one hash tag: forwarded to the one
  shard. Any other range (a prefix, from-key, the whole key space) is
  scattered to every shard and merged (router/merge.py), *at one revision*:
  each shard is read first as the client asked (linearizable, serializable
  or bounded-stale); R is the largest revision any shard answered at; every
  shard that answered at a smaller revision and whose closed timestamp was
  still below R is read again at revision R (a shard whose closed timestamp
  had passed R already answered the state at R). A shard closes R shortly
  (the router's HLC, >= R, reaches it with the request), so the second read
  waits at most about one closed-timestamp interval.
- A read's header.revision (one shard or many) is the cluster's current
  revision as far as the read vouches for it (KvRouter.read_revision,
  DESIGN.md "Reads"): the largest revision this router has seen, capped at
  what every shard read had closed, never below the read's own revision R.
- Put, and DeleteRange of one key: forwarded. A DeleteRange over many shards
  is one delete per shard, each atomic in its shard, but *not one revision*
  for the whole range (etcd's is); header.revision is the largest.
- Txn: forwarded when every key it compares or writes is in one shard (its
  ranges completed from other shards by router/txnreads.py when they reach
  further); else run by two-phase commit across its shards
  (router/txn2pc.py), atomic at one revision.
- Compact: sent to every shard.
- Requests over 1.5 MiB get etcd's "request is too large".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc.aio

from flotillapb import store_pb2 as spb
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc
from router import merge, slots, txn2pc, txnreads
from router.cache import RoutingCache, ShardRoute
from router.etcd_errors import EtcdError, abort_with
from router.forward import Answer, Forwarder, ReadMode

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1536 * 1024  # etcd's --max-request-bytes default
STALENESS_METADATA = "max-staleness-ms"


@dataclass(frozen=True, slots=True)
class Identity:
    """What the router puts in every etcd ResponseHeader."""

    cluster_id: int
    member_id: int
    raft_term: int = 1


class LeaseChecker:
    """Whether a lease exists (placement holds leases)."""

    async def exists(self, lease_id: int, deadline: float) -> bool:
        raise EtcdError("lease_not_found")


class KvRouter:
    def __init__(
        self,
        forwarder: Forwarder,
        cache: RoutingCache,
        identity: Identity,
        *,
        default_staleness_ms: int = 0,
        leases: LeaseChecker | None = None,
        scatter_attempts: int = 5,
    ) -> None:
        self.fwd = forwarder
        self.cache = cache
        self.identity = identity
        self.default_staleness_ms = default_staleness_ms
        self.leases = leases or LeaseChecker()
        self._scatter_attempts = scatter_attempts
        self.cross = txn2pc.CrossShardTxns(self)

    def stamp(self, header: epb.ResponseHeader, revision: int | None = None) -> None:
        header.cluster_id = self.identity.cluster_id
        header.member_id = self.identity.member_id
        header.raft_term = self.identity.raft_term
        if revision is not None:
            header.revision = revision

    @staticmethod
    def check_size(request: Any) -> None:
        if request.ByteSize() > MAX_REQUEST_BYTES:
            raise EtcdError("request_too_large")

    def _route_for(self, key: bytes, range_end: bytes = b"") -> Callable[[], ShardRoute]:
        def route() -> ShardRoute:
            shards = self.cache.shards_for_range(key, range_end)
            if len(shards) != 1:
                raise EtcdError("no_leader", "the key's shard changed while the request was routed")
            return shards[0]

        return route

    def route_shard(self, shard_id: int) -> Callable[[], ShardRoute]:
        def route() -> ShardRoute:
            r = self.cache.shard(shard_id)
            if r is None:
                raise _Replan()
            return r

        return route

    # -- Range --------------------------------------------------------------------------
    def read_mode(self, req: epb.RangeRequest, staleness_ms: int | None) -> ReadMode:
        if req.revision > 0:
            return ReadMode(spb.READ_AT_REVISION, revision=req.revision)
        if req.serializable:
            return ReadMode(spb.READ_SERIALIZABLE)
        bound = self.default_staleness_ms if staleness_ms is None else staleness_ms
        if bound > 0:
            return ReadMode(spb.READ_BOUNDED_STALENESS, max_staleness_ms=bound)
        return ReadMode(spb.READ_LINEARIZABLE)

    async def range(self, req: epb.RangeRequest, deadline: float, staleness_ms: int | None = None) -> epb.RangeResponse:
        self.check_size(req)
        if not req.key:
            raise EtcdError("empty_key")
        mode = self.read_mode(req, staleness_ms)
        for _ in range(self._scatter_attempts):
            shards = self.cache.shards_for_range(req.key, req.range_end)
            try:
                if len(shards) == 1 and (not req.range_end or self._one_slot(req.key, req.range_end)):
                    a = await self.fwd.call("range", req, route=self._route_for(req.key, req.range_end), deadline=deadline, mode=mode)
                    out: epb.RangeResponse = a.response
                    rev = a.response.header.revision
                    self.stamp(out.header, self.read_revision(rev, max(rev, a.header.closed_ts)))
                    return out
                return await self._scatter_range(req, [s.shard_id for s in shards], mode, deadline)
            except _Replan:
                await self.cache.refresh()
        raise EtcdError("timeout", "the shard map kept changing during the range")

    def read_revision(self, answered: int, safe: int) -> int:
        """The header revision of a read: the cluster's current revision as far
        as the read can vouch for it (DESIGN.md, "Reads").

        `answered` is the revision the read's state is at (a shard's current
        revision; the common revision of a scattered read) and `safe` (>=
        answered) the highest revision whose state the read equally is: a
        shard has no write between its revision and its closed timestamp at
        read time, and no later write gets a revision at or below either, so
        a watch from any revision <= safe, + 1, misses none of its later
        writes. The answer is the largest revision this router has seen (the
        cluster's current revision as far as it knows: etcd's header
        revision), capped at `safe`, and never below `answered`; a router
        that has seen no revision at all answers `safe`. So a read on a
        shard never written shows the cluster's revision once the shard has
        closed it (else the shard's closed timestamp), never 0 once it has
        one."""
        known = self.fwd.last_revision
        h = max(answered, min(safe, known)) if known else safe
        if h > known:
            self.fwd.last_revision = h  # headers through this router do not go back for want of a write seen
        return h

    def _one_slot(self, key: bytes, range_end: bytes) -> bool:
        return slots.range_slot(key, range_end, self.cache.slot_count) is not None

    async def _scatter_range(self, req: epb.RangeRequest, shard_ids: list[int], mode: ReadMode, deadline: float) -> epb.RangeResponse:
        sub = epb.RangeRequest()
        sub.CopyFrom(req)
        sub.serializable = False
        drop_values_after = False
        order = merge.effective_order(req.sort_order, req.sort_target)
        if req.keys_only and order != merge.SORT_NONE and req.sort_target == merge.TARGET_VALUE:
            sub.keys_only = False  # the merge sorts by value
            drop_values_after = True
        answers = await asyncio.gather(
            *(self.fwd.call("range", sub, route=self.route_shard(sid), deadline=deadline, mode=mode) for sid in shard_ids)
        )
        answers = list(answers)
        # Per shard, the highest revision whose state its answer equally is
        # (its revision or its closed timestamp at read time; see read_revision).
        safe = [max(a.response.header.revision, a.header.closed_ts) for a in answers]
        if mode.consistency == spb.READ_AT_REVISION:
            revision = max(a.response.header.revision for a in answers)
        else:
            revision = max(a.response.header.revision for a in answers)
            again = [i for i, a in enumerate(answers) if a.response.header.revision < revision and a.header.closed_ts < revision]
            if again:
                at = epb.RangeRequest()
                at.CopyFrom(sub)
                at.revision = revision
                redo = await asyncio.gather(
                    *(
                        self.fwd.call(
                            "range",
                            at,
                            route=self.route_shard(shard_ids[i]),
                            deadline=deadline,
                            mode=ReadMode(spb.READ_AT_REVISION, revision=revision),
                        )
                        for i in again
                    )
                )
                for i, a in zip(again, redo, strict=True):
                    answers[i] = a
                    safe[i] = revision  # read at the revision: later writes of the shard may be above it
        if sorted(s.shard_id for s in self.cache.shards_for_range(req.key, req.range_end)) != sorted(shard_ids):
            raise _Replan()  # a shard split or merged meanwhile: its slots may be missed
        merged = merge.merge_ranges(
            [merge.ShardRange(a.response.kvs, a.response.more, a.response.count) for a in answers],
            limit=req.limit,
            sort_order=req.sort_order,
            sort_target=req.sort_target,
        )
        out = epb.RangeResponse(more=merged.more, count=merged.count)
        out.kvs.extend(merged.kvs)
        if drop_values_after:
            for kv in out.kvs:
                kv.value = b""
        self.stamp(out.header, self.read_revision(revision, max(revision, min(safe, default=revision))))
        return out

    # -- writes ------------------------------------------------------------------------
    async def put(self, req: epb.PutRequest, deadline: float) -> epb.PutResponse:
        self.check_size(req)
        if not req.key:
            raise EtcdError("empty_key")
        if req.lease:
            await self.leases.exists(req.lease, deadline)
        a = await self.fwd.call("put", req, route=self._route_for(req.key), deadline=deadline)
        out: epb.PutResponse = a.response
        self.stamp(out.header)
        return out

    async def delete_range(self, req: epb.DeleteRangeRequest, deadline: float) -> epb.DeleteRangeResponse:
        self.check_size(req)
        if not req.key:
            raise EtcdError("empty_key")
        shards = self.cache.shards_for_range(req.key, req.range_end)
        if len(shards) == 1 and (not req.range_end or self._one_slot(req.key, req.range_end)):
            a = await self.fwd.call("delete_range", req, route=self._route_for(req.key, req.range_end), deadline=deadline)
            out: epb.DeleteRangeResponse = a.response
            self.stamp(out.header)
            return out
        answers: list[Answer] = list(
            await asyncio.gather(
                *(self.fwd.call("delete_range", req, route=self.route_shard(s.shard_id), deadline=deadline) for s in shards)
            )
        )
        out = epb.DeleteRangeResponse(deleted=sum(a.response.deleted for a in answers))
        prev = sorted((kv for a in answers for kv in a.response.prev_kvs), key=lambda kv: kv.key)
        out.prev_kvs.extend(prev)
        self.stamp(out.header, max(a.response.header.revision for a in answers))
        return out

    async def txn(self, req: epb.TxnRequest, deadline: float) -> epb.TxnResponse:
        self.check_size(req)
        if self._txn_has_lease(req):
            for lease in self._txn_leases(req):
                await self.leases.exists(lease, deadline)

        if self._spans_shards(req):
            return await self.cross.run(req, deadline)
        home = self._txn_home(req)
        reads = {s.shard_id for r in txnreads.range_ops(req) for s in self.cache.shards_for_range(r.key, r.range_end)}
        if reads - {home().shard_id}:
            # Its ranges reach other shards (etcd's Mutex reads a prefix):
            # the txn runs on its home shard, its ranges are completed there.
            return await txnreads.TxnWithReads(self, self._send_txn).run(req, home, deadline)
        return await self._send_txn(req, home, deadline)

    def _spans_shards(self, req: epb.TxnRequest) -> bool:
        """Whether the txn needs two-phase commit: its compares and writes
        name several shards, or a range of one key (or one slot) lies
        outside the one shard they name (the home shard would refuse it:
        only ranges over many slots are completed from other shards)."""
        found: set[int] = set()
        for key, end in txnreads.write_keys(req):
            found.update(s.shard_id for s in self.cache.shards_for_range(key, end))
            if len(found) > 1:
                return True
        ranges = list(txnreads.range_ops(req))
        if not found and ranges:
            # a txn that only reads: its home is its first range's first shard (_txn_home)
            found.add(self.cache.shards_for_range(ranges[0].key, ranges[0].range_end)[0].shard_id)
        for r in ranges:
            if r.range_end and not self._one_slot(r.key, r.range_end):
                continue
            if self.cache.shards_for_range(r.key, r.range_end)[0].shard_id not in found:
                return True
        return False

    def _txn_home(self, req: epb.TxnRequest) -> Callable[[], ShardRoute]:
        """The shard a txn's compares and writes name (asked again on every
        attempt: the map may change; a txn they no longer fit in one shard
        is planned again); a txn that only reads: the shard of its first
        range; of no keys: any shard."""

        def route() -> ShardRoute:
            found: dict[int, ShardRoute] = {}
            for key, end in txnreads.write_keys(req):
                for s in self.cache.shards_for_range(key, end):
                    found[s.shard_id] = s
            if len(found) > 1:
                raise EtcdError("no_leader", "the txn's keys moved to several shards while it was routed; retry")
            if found:
                return next(iter(found.values()))
            first = next(txnreads.range_ops(req), None)
            if first is not None:
                return self.cache.shards_for_range(first.key, first.range_end)[0]
            return self.cache.shard_of_slot(0)

        return route

    async def _send_txn(self, req: epb.TxnRequest, route: Callable[[], ShardRoute], deadline: float) -> epb.TxnResponse:
        a = await self.fwd.call("txn", req, route=route, deadline=deadline)
        out: epb.TxnResponse = a.response
        self.stamp(out.header)
        for r in out.responses:
            inner = getattr(r, r.WhichOneof("response") or "response_range")
            self.stamp(inner.header)
        return out

    @staticmethod
    def _txn_leases(req: epb.TxnRequest) -> list[int]:
        out: list[int] = []
        for op in (*req.success, *req.failure):
            which = op.WhichOneof("request")
            if which == "request_put" and op.request_put.lease:
                out.append(op.request_put.lease)
            elif which == "request_txn":
                out.extend(KvRouter._txn_leases(op.request_txn))
        return out

    def _txn_has_lease(self, req: epb.TxnRequest) -> bool:
        return bool(self._txn_leases(req))

    async def compact(self, req: epb.CompactionRequest, deadline: float) -> epb.CompactionResponse:
        shards = self.cache.shards()
        answers = await asyncio.gather(
            *(self.fwd.call("compact", req, route=self.route_shard(s.shard_id), deadline=deadline) for s in shards),
            return_exceptions=True,
        )
        errors = [a for a in answers if isinstance(a, BaseException)]
        if errors:
            raise errors[0]
        out = epb.CompactionResponse()
        self.stamp(out.header, max((a.response.header.revision for a in answers if isinstance(a, Answer)), default=0))
        return out


class _Replan(Exception):
    """The shards a request was planned over changed: plan it again."""


def txn_keys(req: epb.TxnRequest) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, range_end) a txn compares or operates on, nested txns included."""
    for c in req.compare:
        yield c.key, c.range_end
    for op in (*req.success, *req.failure):
        which = op.WhichOneof("request")
        if which == "request_range":
            yield op.request_range.key, op.request_range.range_end
        elif which == "request_put":
            yield op.request_put.key, b""
        elif which == "request_delete_range":
            yield op.request_delete_range.key, op.request_delete_range.range_end
        elif which == "request_txn":
            yield from txn_keys(op.request_txn)


def deadline_of(context: grpc.aio.ServicerContext, default_s: float) -> float:
    left = context.time_remaining()
    timeout = default_s if left is None else min(default_s, max(0.0, left))
    return asyncio.get_running_loop().time() + timeout


def staleness_of(context: grpc.aio.ServicerContext) -> int | None:
    for key, value in context.invocation_metadata() or ():
        if key == STALENESS_METADATA:
            try:
                return max(0, int(value))
            except ValueError:
                raise EtcdError("invalid_request", f"{STALENESS_METADATA} must be an integer of milliseconds, got {value!r}") from None
    return None


class KvServicer(rpc_pb2_grpc.KVServicer):
    def __init__(self, kv: KvRouter, request_timeout_s: float) -> None:
        self._kv = kv
        self._timeout_s = request_timeout_s

    async def Range(self, request: epb.RangeRequest, context: grpc.aio.ServicerContext) -> epb.RangeResponse:  # noqa: N802
        try:
            return await self._kv.range(request, deadline_of(context, self._timeout_s), staleness_of(context))
        except EtcdError as err:
            await abort_with(context, err)

    async def Put(self, request: epb.PutRequest, context: grpc.aio.ServicerContext) -> epb.PutResponse:  # noqa: N802
        try:
            return await self._kv.put(request, deadline_of(context, self._timeout_s))
        except EtcdError as err:
            await abort_with(context, err)

    async def DeleteRange(self, request: epb.DeleteRangeRequest, context: grpc.aio.ServicerContext) -> epb.DeleteRangeResponse:  # noqa: N802
        try:
            return await self._kv.delete_range(request, deadline_of(context, self._timeout_s))
        except EtcdError as err:
            await abort_with(context, err)

    async def Txn(self, request: epb.TxnRequest, context: grpc.aio.ServicerContext) -> epb.TxnResponse:  # noqa: N802
        try:
            return await self._kv.txn(request, deadline_of(context, self._timeout_s))
        except EtcdError as err:
            await abort_with(context, err)

    async def Compact(self, request: epb.CompactionRequest, context: grpc.aio.ServicerContext) -> epb.CompactionResponse:  # noqa: N802
        try:
            return await self._kv.compact(request, deadline_of(context, self._timeout_s))
        except EtcdError as err:
            await abort_with(context, err)
