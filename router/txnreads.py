"""A Txn whose compares and writes stay in one shard while its ranges reach
other shards: etcd's Mutex (clientv3/concurrency, used by `etcdctl lock`
and every Go program that locks) creates its own key and reads the first
holder under the lock's prefix in one Txn; the prefix spans every shard.

Such a txn runs on its *home* shard (the one its compares and writes name)
as one Raft entry, as any single-shard txn: compares, the branch, and the
home shard's part of every range (a store serves a range over many slots
for the slots it owns). Each range of the branch that ran is then completed
from the other shards at one revision R and merged with the home part
(sort, limit, count, ``more`` over the union, as a scattered range):

- the branch wrote: R is the txn's revision. Every write of another shard
  acknowledged before the txn began has a lower revision (the router's HLC
  travels with the request and the leader stamps the txn above it), and no
  write there gets a revision <= R once it closed R (at-revision reads wait
  for that): the txn reads one consistent cut, as if it ran at R everywhere;
- the branch only read: the home shard's revision R0 may be old (an idle
  shard keeps its last write's revision), so R is max(R0, the router's HLC
  when the txn began). The home shard's answers hold at R if its compare
  keys did not change between R0 and R: they are read at both revisions
  (at-revision reads); if they changed, the txn runs again. The branch's
  ranges are then read at R on every shard, home included.

A txn whose compares or writes name several shards still needs two-phase
commit (DESIGN.md, "Transactions across shards"): refused as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Protocol

from flotillapb import store_pb2 as spb
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from router import merge
from router.etcd_errors import EtcdError
from router.cache import RoutingCache, ShardRoute
from router.forward import Forwarder, ReadMode

Route = Callable[[], ShardRoute]


class Router(Protocol):
    """What this module uses of router/kv.py's KvRouter."""

    fwd: Forwarder
    cache: RoutingCache

    def stamp(self, header: epb.ResponseHeader, revision: int | None = None) -> None: ...

    def route_shard(self, shard_id: int) -> Route: ...

RETRIES = 5
"""A read-only branch whose compare keys changed under it runs again at most this often."""


def _ops(req: epb.TxnRequest) -> Iterator[epb.RequestOp]:
    yield from req.success
    yield from req.failure


def write_keys(req: epb.TxnRequest) -> Iterator[tuple[bytes, bytes]]:
    """(key, range_end) of every compare and write, nested txns included."""
    for c in req.compare:
        yield c.key, c.range_end
    for op in _ops(req):
        which = op.WhichOneof("request")
        if which == "request_put":
            yield op.request_put.key, b""
        elif which == "request_delete_range":
            yield op.request_delete_range.key, op.request_delete_range.range_end
        elif which == "request_txn":
            yield from write_keys(op.request_txn)


def range_ops(req: epb.TxnRequest) -> Iterator[epb.RangeRequest]:
    for op in _ops(req):
        which = op.WhichOneof("request")
        if which == "request_range":
            yield op.request_range
        elif which == "request_txn":
            yield from range_ops(op.request_txn)


def for_merging(req: epb.TxnRequest) -> epb.TxnRequest:
    """The txn as sent: a keys-only range sorted by value must carry values
    for the merge (they are dropped again after it)."""
    out = epb.TxnRequest()
    out.CopyFrom(req)
    for r in range_ops(out):
        if r.keys_only and _by_value(r):
            r.keys_only = False
    return out


def _by_value(r: epb.RangeRequest) -> bool:
    return merge.effective_order(r.sort_order, r.sort_target) != merge.SORT_NONE and r.sort_target == merge.TARGET_VALUE


def _executed(req: epb.TxnRequest, resp: epb.TxnResponse) -> Iterator[tuple[epb.RequestOp, epb.ResponseOp]]:
    """The ops of the branch that ran, with their responses, nested branches included."""
    ops = req.success if resp.succeeded else req.failure
    for op, r in zip(ops, resp.responses, strict=True):
        yield op, r
        if op.WhichOneof("request") == "request_txn":
            yield from _executed(op.request_txn, r.response_txn)


def _executed_compares(req: epb.TxnRequest, resp: epb.TxnResponse) -> Iterator[epb.Compare]:
    yield from req.compare
    ops = req.success if resp.succeeded else req.failure
    for op, r in zip(ops, resp.responses, strict=True):
        if op.WhichOneof("request") == "request_txn":
            yield from _executed_compares(op.request_txn, r.response_txn)


def wrote(req: epb.TxnRequest, resp: epb.TxnResponse) -> bool:
    return any(op.WhichOneof("request") in ("request_put", "request_delete_range") for op, _ in _executed(req, resp))


class TxnWithReads:
    """Runs one such txn for a KvRouter (its forwarder, cache and stamp)."""

    def __init__(self, kv: Router, send_txn: Callable[[epb.TxnRequest, Route, float], Awaitable[epb.TxnResponse]]) -> None:
        self._kv = kv
        self._send_txn = send_txn

    async def run(self, req: epb.TxnRequest, route: Route, deadline: float) -> epb.TxnResponse:
        """`route` names the home shard (again on every attempt)."""
        kv = self._kv
        sent = for_merging(req)
        for _ in range(RETRIES):
            began = kv.fwd.hlc.now(kv.fwd.now_ms())
            resp = await self._send_txn(sent, route, deadline)
            home = route().shard_id
            if wrote(req, resp):
                await self._complete(req, resp, resp.header.revision, home, deadline, include_home=False)
                return self._finish(req, resp)
            r0 = resp.header.revision
            if r0 >= began:
                await self._complete(req, resp, r0, home, deadline, include_home=False)
                return self._finish(req, resp)
            if await self._unchanged(req, resp, home, r0, began, deadline):
                await self._complete(req, resp, began, home, deadline, include_home=True)
                resp.header.revision = began
                return self._finish(req, resp)
        raise EtcdError("timeout", "the txn's compare keys kept changing while its ranges were read on other shards")

    def _finish(self, req: epb.TxnRequest, resp: epb.TxnResponse) -> epb.TxnResponse:
        for op, r in _executed(req, resp):
            if op.WhichOneof("request") == "request_range" and op.request_range.keys_only and _by_value(op.request_range):
                for item in r.response_range.kvs:
                    item.value = b""
        return resp

    async def _at(self, req: epb.RangeRequest, shard_id: int, revision: int, deadline: float) -> epb.RangeResponse:
        sub = epb.RangeRequest()
        sub.CopyFrom(req)
        sub.serializable = False
        sub.revision = revision
        if sub.keys_only and _by_value(sub):
            sub.keys_only = False
        a = await self._kv.fwd.call(
            "range",
            sub,
            route=self._kv.route_shard(shard_id),
            deadline=deadline,
            mode=ReadMode(spb.READ_AT_REVISION, revision=revision),
        )
        out: epb.RangeResponse = a.response
        return out

    async def _complete(
        self, req: epb.TxnRequest, resp: epb.TxnResponse, revision: int, home: int, deadline: float, *, include_home: bool
    ) -> None:
        """Merge into each executed range's answer the other shards' parts at
        `revision` (the range's own revision when it names one); with
        include_home, the home part is read at that revision too."""
        jobs: list[tuple[epb.RangeRequest, epb.RangeResponse, list[int]]] = []
        for op, r in _executed(req, resp):
            if op.WhichOneof("request") != "request_range":
                continue
            rr = op.request_range
            shards = [s.shard_id for s in self._kv.cache.shards_for_range(rr.key, rr.range_end)]
            others = [s for s in shards if s != home or include_home]
            if include_home or any(s != home for s in shards):
                jobs.append((rr, r.response_range, others))

        async def one(rr: epb.RangeRequest, local: epb.RangeResponse, shard_ids: Sequence[int]) -> None:
            rev = rr.revision or revision
            parts = await asyncio.gather(*(self._at(rr, sid, rev, deadline) for sid in shard_ids))
            pieces = [merge.ShardRange(p.kvs, p.more, p.count) for p in parts]
            if not include_home:
                pieces.append(merge.ShardRange(local.kvs, local.more, local.count))
            merged = merge.merge_ranges(pieces, limit=rr.limit, sort_order=rr.sort_order, sort_target=rr.sort_target)
            del local.kvs[:]
            local.kvs.extend(merged.kvs)
            local.more = merged.more
            local.count = merged.count
            self._kv.stamp(local.header, revision)

        await asyncio.gather(*(one(rr, local, ids) for rr, local, ids in jobs))

    async def _unchanged(
        self, req: epb.TxnRequest, resp: epb.TxnResponse, home: int, r0: int, r1: int, deadline: float
    ) -> bool:
        """Every key the branch's compares read holds the same versions at r0 and r1 on the home shard."""
        compares = list(_executed_compares(req, resp))
        if not compares:
            return True
        reads = [epb.RangeRequest(key=c.key, range_end=c.range_end, keys_only=True) for c in compares]
        before, after = await asyncio.gather(
            asyncio.gather(*(self._at(r, home, r0, deadline) for r in reads)),
            asyncio.gather(*(self._at(r, home, r1, deadline) for r in reads)),
        )
        seen = [[(kv.key, kv.mod_revision) for kv in x.kvs] for x in before]
        now = [[(kv.key, kv.mod_revision) for kv in x.kvs] for x in after]
        return seen == now
