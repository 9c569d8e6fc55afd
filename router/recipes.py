"""etcd's lock and election recipes, run by the router for the Lock and
Election services (etcd runs its client library's concurrency.Mutex and
concurrency.Election inside the server the same way).

The keys and their meaning are etcd's, so a Go program using clientv3's
concurrency package against the KV API and a client of these services see
the same locks and elections:

- a holder's key is ``name + "/" + lease id in hex``, put with the lease;
  its create revision orders the waiters (first created holds the lock or
  leads the election);
- a waiter waits for every key of the name created before its own to be
  deleted (released, resigned, or its lease ended), watching the last such
  key each time ("before": by create revision, then by key, so that even a
  tie of revisions between shards leaves one holder);
- a holder whose lease ended lost its key: Lock answers "mutex: session is
  expired", Proclaim "election: not leader".

One difference: the Go client reads the first holder in the same Txn that
creates its key. Here the holder's key and the other holders' keys live on
different shards (each key hashes to its own slot), so the create is a
one-key Txn and the holders are read by a linearizable range right after
it. That answers the same question: every key created before ours has a
lower create revision and is in that range unless it is already deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.mvccpb import kv_pb2 as mvccpb
from router.etcd_errors import EtcdError

DEFAULT_SESSION_TTL_S = 60
"""etcd's concurrency session default: a Lock or Campaign with lease 0 gets
a lease of this TTL that nobody keeps alive."""


class KV(Protocol):
    """What the recipes use of the router's KV layer (router/kv.py)."""

    async def range(self, req: epb.RangeRequest, deadline: float) -> epb.RangeResponse: ...

    async def txn(self, req: epb.TxnRequest, deadline: float) -> epb.TxnResponse: ...

    async def delete_range(self, req: epb.DeleteRangeRequest, deadline: float) -> epb.DeleteRangeResponse: ...


Watch = Callable[[epb.WatchCreateRequest], AsyncIterator[epb.WatchResponse]]
"""Open a watch (router/watch.py's WatchSession) and yield its responses
after the created one; closing the iterator cancels it."""

Grant = Callable[[int, float], Awaitable[int]]
"""Grant a lease of a TTL (seconds) by a deadline; answer its id."""


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that makes [prefix, end) every key starting with prefix."""
    b = bytearray(prefix)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\0"


def holder_key(name: bytes, lease: int) -> bytes:
    return name + b"/" + b"%x" % lease


@dataclass(frozen=True, slots=True)
class Held:
    """A lock hold or an election leadership."""

    name: bytes
    key: bytes
    rev: int  # the key's create revision
    lease: int
    header: epb.ResponseHeader


class Recipes:
    def __init__(self, kv: KV, watch: Watch, grant: Grant | None, *, timeout_s: float) -> None:
        self._kv = kv
        self._watch = watch
        self._grant = grant
        self._timeout_s = timeout_s

    def _deadline(self) -> float:
        """Each KV step gets the request timeout; waiting has none (the
        client's own deadline cancels it)."""
        return asyncio.get_running_loop().time() + self._timeout_s

    async def _lease(self, lease: int) -> int:
        if lease:
            return lease
        if self._grant is None:
            raise EtcdError("lease_unavailable")
        return await self._grant(DEFAULT_SESSION_TTL_S, self._deadline())

    # -- the shared steps ----------------------------------------------------------------
    async def _create(self, key: bytes, value: bytes, lease: int) -> tuple[epb.TxnResponse, int, mvccpb.KeyValue | None]:
        """Put key with the lease unless it exists; answer the txn, the key's
        create revision, and the existing kv (None when we created it)."""
        txn = epb.TxnRequest(
            compare=[epb.Compare(key=key, target=epb.Compare.CREATE, result=epb.Compare.EQUAL, create_revision=0)],
            success=[epb.RequestOp(request_put=epb.PutRequest(key=key, value=value, lease=lease))],
            failure=[epb.RequestOp(request_range=epb.RangeRequest(key=key))],
        )
        resp = await self._kv.txn(txn, self._deadline())
        if resp.succeeded:
            return resp, resp.header.revision, None
        kvs = resp.responses[0].response_range.kvs
        if not kvs:  # deleted between the compare and the read: cannot happen in one txn
            raise EtcdError("invalid_request", f"lock key {key!r} vanished inside its own txn")
        return resp, kvs[0].create_revision, kvs[0]

    async def _first(self, prefix: bytes) -> epb.RangeResponse:
        """The first created key under prefix (ties: the lowest key)."""
        req = epb.RangeRequest(
            key=prefix,
            range_end=prefix_end(prefix),
            sort_target=epb.RangeRequest.CREATE,
            sort_order=epb.RangeRequest.ASCEND,
            limit=1,
        )
        return await self._kv.range(req, self._deadline())

    async def _wait_deleted(self, key: bytes, from_revision: int) -> None:
        """Until key is deleted (an event at or after from_revision)."""
        stream = self._watch(epb.WatchCreateRequest(key=key, start_revision=from_revision))
        async with contextlib.aclosing(stream):
            async for resp in stream:
                if resp.canceled:
                    if resp.compact_revision:
                        raise EtcdError("compacted")
                    raise EtcdError("no_leader", f"the watch on {key!r} was canceled: {resp.cancel_reason}")
                if any(ev.type == mvccpb.Event.DELETE for ev in resp.events):
                    return
        raise EtcdError("no_leader", f"the watch on {key!r} ended")

    async def _wait_predecessors(self, prefix: bytes, my_key: bytes, my_rev: int) -> None:
        """Until no key under prefix created before mine exists. "Before" is
        (create revision, key) order: revisions are unique across shards
        (shard/hlc.py's lanes) except in clusters of more than 16 stores,
        and a tie broken by key still gives every waiter one predecessor."""
        while True:
            req = epb.RangeRequest(
                key=prefix, range_end=prefix_end(prefix), keys_only=True, max_create_revision=my_rev
            )
            resp = await self._kv.range(req, self._deadline())
            before = [kv for kv in resp.kvs if (kv.create_revision, kv.key) < (my_rev, my_key)]
            if not before:
                return
            last = max(before, key=lambda kv: (kv.create_revision, kv.key))
            await self._wait_deleted(last.key, resp.header.revision)

    async def _delete_quietly(self, key: bytes) -> None:
        with contextlib.suppress(EtcdError):
            await self._kv.delete_range(epb.DeleteRangeRequest(key=key), self._deadline())

    # -- Lock --------------------------------------------------------------------------
    async def lock(self, name: bytes, lease: int) -> Held:
        lease = await self._lease(lease)
        prefix = name + b"/"
        key = holder_key(name, lease)
        _, my_rev, _ = await self._create(key, b"", lease)
        try:
            await self._wait_predecessors(prefix, key, my_rev)
            # The lease may have ended while we waited: the key went with it.
            got = await self._kv.range(epb.RangeRequest(key=key), self._deadline())
        except BaseException:
            # Cancelled (the client went away) or failed: give the place up.
            await asyncio.shield(self._delete_quietly(key))
            raise
        if not got.kvs or got.kvs[0].create_revision != my_rev:
            raise EtcdError("mutex_session_expired")
        return Held(name, key, my_rev, lease, got.header)

    async def unlock(self, key: bytes) -> epb.ResponseHeader:
        resp = await self._kv.delete_range(epb.DeleteRangeRequest(key=key), self._deadline())
        return resp.header

    # -- Election ----------------------------------------------------------------------
    async def campaign(self, name: bytes, lease: int, value: bytes) -> Held:
        lease = await self._lease(lease)
        prefix = name + b"/"
        key = holder_key(name, lease)
        resp, my_rev, existing = await self._create(key, value, lease)
        header = resp.header
        held = Held(name, key, my_rev, lease, header)
        try:
            if existing is not None and existing.value != value:
                header = await self.proclaim(held, value)
            await self._wait_predecessors(prefix, key, my_rev)
        except BaseException:
            await asyncio.shield(self._resign_quietly(held))
            raise
        return Held(name, key, my_rev, lease, header)

    async def proclaim(self, held: Held, value: bytes) -> epb.ResponseHeader:
        txn = epb.TxnRequest(
            compare=[epb.Compare(key=held.key, target=epb.Compare.CREATE, result=epb.Compare.EQUAL, create_revision=held.rev)],
            success=[epb.RequestOp(request_put=epb.PutRequest(key=held.key, value=value, lease=held.lease))],
        )
        resp = await self._kv.txn(txn, self._deadline())
        if not resp.succeeded:
            raise EtcdError("election_not_leader")
        return resp.header

    async def resign(self, held: Held) -> epb.ResponseHeader:
        """Delete the leader's key if it is still this leadership's (no error otherwise, as etcd)."""
        txn = epb.TxnRequest(
            compare=[epb.Compare(key=held.key, target=epb.Compare.CREATE, result=epb.Compare.EQUAL, create_revision=held.rev)],
            success=[epb.RequestOp(request_delete_range=epb.DeleteRangeRequest(key=held.key))],
        )
        resp = await self._kv.txn(txn, self._deadline())
        return resp.header

    async def _resign_quietly(self, held: Held) -> None:
        with contextlib.suppress(EtcdError):
            await self.resign(held)

    async def leader(self, name: bytes) -> tuple[epb.ResponseHeader, mvccpb.KeyValue]:
        resp = await self._first(name + b"/")
        if not resp.kvs:
            raise EtcdError("election_no_leader")
        return resp.header, resp.kvs[0]

    async def observe(self, name: bytes) -> AsyncIterator[tuple[epb.ResponseHeader, mvccpb.KeyValue]]:
        """Each leader's proclamations in order: the current leader's value,
        then each new value it proclaims, then the next leader's, ..."""
        prefix = name + b"/"
        while True:
            resp = await self._first(prefix)
            if resp.kvs:
                header, kv = resp.header, resp.kvs[0]
            else:
                header, kv = await self._first_put(prefix, resp.header.revision)
            yield header, kv
            stream = self._watch(epb.WatchCreateRequest(key=kv.key, start_revision=header.revision + 1))
            async with contextlib.aclosing(stream):
                async for wr in stream:
                    if wr.canceled:
                        raise EtcdError("compacted" if wr.compact_revision else "no_leader", wr.cancel_reason)
                    deleted = False
                    for ev in wr.events:
                        if ev.type == mvccpb.Event.DELETE:
                            deleted = True
                            break
                        yield wr.header, ev.kv
                    if deleted:
                        break

    async def _first_put(self, prefix: bytes, revision: int) -> tuple[epb.ResponseHeader, mvccpb.KeyValue]:
        """No leader yet: wait for the first put under prefix after revision."""
        stream = self._watch(epb.WatchCreateRequest(key=prefix, range_end=prefix_end(prefix), start_revision=revision))
        async with contextlib.aclosing(stream):
            async for wr in stream:
                if wr.canceled:
                    raise EtcdError("compacted" if wr.compact_revision else "no_leader", wr.cancel_reason)
                for ev in wr.events:
                    if ev.type == mvccpb.Event.PUT:
                        header = epb.ResponseHeader()
                        header.CopyFrom(wr.header)
                        header.revision = ev.kv.mod_revision
                        return header, ev.kv
        raise EtcdError("no_leader", f"the watch on {prefix!r} ended")
