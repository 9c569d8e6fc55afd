"""The Store and StoreAdmin servicers (proto/flotillapb/store.proto): decode ->
call the StoreNode -> encode. Routing and KV errors travel in the answer's
header as a typed StoreError; `_answer` is the one place that maps them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc.aio

from flotillapb import store_pb2 as spb
from flotillapb import store_pb2_grpc
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from shard import convert
from shard.errors import ServerBusy, StoreError
from shard.node import StoreNode
from shard.quota import AlarmType

log = logging.getLogger(__name__)

T = TypeVar("T")


class StoreService(store_pb2_grpc.StoreServicer):
    def __init__(self, node: StoreNode) -> None:
        self._node = node

    def _header(self, shard_id: int, exc: StoreError | None = None) -> spb.ShardResponseHeader:
        h = spb.ShardResponseHeader()
        self._fill_header(h, shard_id, exc)
        return h

    def _fill_header(self, h: spb.ShardResponseHeader, shard_id: int, exc: StoreError | None = None) -> None:
        node = self._node
        h.node_id, h.hlc, h.closed_ts = node.node_id, node.hlc.last, node.closed_ts(shard_id)
        if exc is not None:
            h.error.CopyFrom(convert.store_error(exc, compact_revision=node.compact_revision(shard_id)))

    async def _answer(self, shard_id: int, call: Callable[[], Awaitable[T]]) -> tuple[spb.ShardResponseHeader, T | None]:
        try:
            result = await call()
        except StoreError as exc:
            return self._header(shard_id, exc), None
        return self._header(shard_id), result

    async def Range(self, request: spb.ShardRangeRequest, context: grpc.aio.ServicerContext) -> spb.ShardRangeResponse:  # noqa: N802
        sid = request.header.shard_id
        header, resp = await self._answer(
            sid,
            lambda: self._node.range(
                convert.context_from_pb(request.header),
                convert.range_from_pb(request.request),
                convert.consistency_from_pb(request.consistency),
                request.max_staleness_ms,
            ),
        )
        out = spb.ShardRangeResponse(header=header)
        if resp is not None:
            out.response.CopyFrom(convert.range_response_to_pb(resp))
        return out

    async def Put(self, request: spb.ShardPutRequest, context: grpc.aio.ServicerContext) -> spb.ShardPutResponse:  # noqa: N802
        # The hot path: the answer is written in place (no header or response message copied into it).
        sid = request.header.shard_id
        out = spb.ShardPutResponse()
        try:
            resp = await self._node.write(convert.context_from_pb(request.header), convert.put_from_pb(request.request))
        except StoreError as exc:
            self._fill_header(out.header, sid, exc)
            return out
        self._fill_header(out.header, sid)
        convert.put_response_into(out.response, resp)  # type: ignore[arg-type]
        return out

    async def DeleteRange(  # noqa: N802
        self, request: spb.ShardDeleteRangeRequest, context: grpc.aio.ServicerContext
    ) -> spb.ShardDeleteRangeResponse:
        sid = request.header.shard_id
        header, resp = await self._answer(
            sid,
            lambda: self._node.write(convert.context_from_pb(request.header), convert.delete_range_from_pb(request.request)),
        )
        out = spb.ShardDeleteRangeResponse(header=header)
        if resp is not None:
            out.response.CopyFrom(convert.delete_range_response_to_pb(resp))  # type: ignore[arg-type]
        return out

    async def Txn(self, request: spb.ShardTxnRequest, context: grpc.aio.ServicerContext) -> spb.ShardTxnResponse:  # noqa: N802
        sid = request.header.shard_id
        header, resp = await self._answer(
            sid, lambda: self._node.write(convert.context_from_pb(request.header), convert.txn_from_pb(request.request))
        )
        out = spb.ShardTxnResponse(header=header)
        if resp is not None:
            out.response.CopyFrom(convert.txn_response_to_pb(resp))  # type: ignore[arg-type]
        return out

    async def TxnPart(self, request: spb.ShardTxnPartRequest, context: grpc.aio.ServicerContext) -> spb.ShardTxnPartResponse:  # noqa: N802
        sid = request.header.shard_id

        async def call() -> object:
            return await self._node.write(convert.context_from_pb(request.header), convert.txn_part_from_pb(request))

        header, resp = await self._answer(sid, call)
        out = convert.txn_part_response_to_pb(resp) if resp is not None else spb.ShardTxnPartResponse()  # type: ignore[arg-type]
        out.header.CopyFrom(header)
        return out

    async def Compact(self, request: spb.ShardCompactRequest, context: grpc.aio.ServicerContext) -> spb.ShardCompactResponse:  # noqa: N802
        sid = request.header.shard_id
        header, resp = await self._answer(
            sid,
            lambda: self._node.write(convert.context_from_pb(request.header), convert.compaction_from_pb(request.request)),
        )
        out = spb.ShardCompactResponse(header=header)
        if resp is not None:
            out.response.CopyFrom(convert.compaction_response_to_pb(resp))  # type: ignore[arg-type]
        return out

    async def Watch(  # noqa: N802
        self, request: spb.ShardWatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[spb.ShardWatchResponse]:
        sid = request.header.shard_id
        header, stream = await self._answer(
            sid, lambda: self._node.watch(convert.context_from_pb(request.header), convert.watch_spec_from_pb(request))
        )
        if stream is None:
            yield spb.ShardWatchResponse(header=header)
            return
        async for b in stream:
            h = spb.ShardResponseHeader(node_id=self._node.node_id, hlc=self._node.hlc.last, closed_ts=b.closed_ts)
            if b.error is not None:
                h.error.CopyFrom(convert.store_error(b.error))
            yield spb.ShardWatchResponse(
                header=h,
                events=convert.events_to_pb(b.events),
                progress_revision=b.progress_revision,
                compact_revision=b.compact_revision,
            )

    async def Forward(  # noqa: N802
        self, request_iterator: AsyncIterator[spb.ForwardRequestBatch], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[spb.ForwardResponseBatch]:
        """Each request of each batch runs concurrently; answers are sent in
        batches of whatever finished since the last one.

        Per request: one task (the request awaits its Raft round) that notes
        its answer itself (a done callback notes only failures and the
        stream's end), and one copy of its answer, made into the batch that
        goes out; no queue and no task group. The writer sleeps on one
        future that the first answer after a write wakes. A handler that
        fails other than with a StoreError (a bug) ends the stream with it."""
        loop = asyncio.get_running_loop()
        handlers = {
            "range": self.Range,
            "put": self.Put,
            "delete_range": self.DeleteRange,
            "txn": self.Txn,
            "compact": self.Compact,
            "txn_part": self.TxnPart,
        }
        answers: list[tuple[int, str | None, object]] = []  # (id, kind, answer) finished, not sent yet
        running: set[asyncio.Task[None]] = set()
        failed: list[BaseException] = []
        reading = True
        wake: asyncio.Future[None] | None = None

        def notify() -> None:
            if wake is not None and not wake.done():
                wake.set_result(None)

        async def one(rid: int, which: str, request: object) -> None:
            answer = await handlers[which](request, context)  # type: ignore[operator]
            # Noted in the request's own step, not in its done callback (a
            # turn of the loop later): the writer is woken before whatever
            # the Raft round that answered it sends next (readyloop.py).
            answers.append((rid, which, answer))
            notify()

        def finished(task: asyncio.Task[None]) -> None:
            running.discard(task)
            if task.cancelled():
                return
            exc = task.exception()
            if exc is not None:
                failed.append(exc)
                notify()
            elif not reading and not running:
                notify()  # the last answer is out or on its way: the writer may end

        async def read_all() -> None:
            nonlocal reading
            try:
                async for batch in request_iterator:
                    for fr in batch.requests:
                        which = fr.WhichOneof("request")
                        if which is None:
                            answers.append((fr.id, None, None))
                            notify()
                            continue
                        task = loop.create_task(one(fr.id, which, getattr(fr, which)))
                        running.add(task)
                        task.add_done_callback(finished)
            finally:
                reading = False
                notify()

        reader = loop.create_task(read_all())
        try:
            while True:
                if failed:
                    raise failed[0]
                if answers:
                    out = spb.ForwardResponseBatch()
                    for rid, which, answer in answers:
                        r = out.responses.add(id=rid)
                        if which is not None:
                            getattr(r, which).CopyFrom(answer)
                    answers.clear()
                    yield out
                    continue
                if not reading and not running:
                    break
                wake = loop.create_future()
                try:
                    await wake
                finally:
                    wake = None
            await reader  # its error, if the request stream broke
        finally:
            reader.cancel()
            for task in list(running):
                task.cancel()


class StoreAdminService(store_pb2_grpc.StoreAdminServicer):
    def __init__(self, node: StoreNode) -> None:
        self._node = node

    async def SetPeers(self, request: spb.SetPeersRequest, context: grpc.aio.ServicerContext) -> spb.SetPeersResponse:  # noqa: N802
        for peer in request.peers:
            self._node.set_peer(peer.node_id, peer.address)
        return spb.SetPeersResponse()

    async def Status(self, request: spb.StoreStatusRequest, context: grpc.aio.ServicerContext) -> spb.StoreStatusResponse:  # noqa: N802
        node = self._node
        ids = [s for s in (request.shard_ids or node.shard_ids()) if s in node.shard_ids()]
        addresses = {n: node.address_of(n) for info in map(node.shard_info, ids) for n in (*info.voters, *info.learners)}
        return spb.StoreStatusResponse(
            node_id=node.node_id,
            hlc=node.hlc.last,
            shards=[convert.shard_status_to_pb(node.shard_info(s), addresses) for s in ids],
        )

    async def DeleteLeaseKeys(  # noqa: N802
        self, request: spb.DeleteLeaseKeysRequest, context: grpc.aio.ServicerContext
    ) -> spb.DeleteLeaseKeysResponse:
        node = self._node
        sid = request.shard_id
        h = spb.ShardResponseHeader(node_id=node.node_id, hlc=node.hlc.last, closed_ts=node.closed_ts(sid))
        try:
            deleted = await node.delete_lease_keys(sid, request.lease_id, [bytes(k) for k in request.keys])
        except StoreError as exc:
            h.error.CopyFrom(convert.store_error(exc))
            return spb.DeleteLeaseKeysResponse(header=h)
        return spb.DeleteLeaseKeysResponse(header=h, deleted=deleted)

    async def SplitShard(self, request: spb.SplitShardRequest, context: grpc.aio.ServicerContext) -> spb.SplitShardResponse:  # noqa: N802
        node = self._node
        sid = request.shard_id
        timeout_s = request.timeout_ms / 1000 if request.timeout_ms else None
        try:
            left, right = await node.split(sid, request.new_shard_id, request.split_slot, timeout_s=timeout_s)
        except StoreError as exc:
            h = spb.ShardResponseHeader(node_id=node.node_id, hlc=node.hlc.last, closed_ts=node.closed_ts(sid))
            h.error.CopyFrom(convert.store_error(exc))
            return spb.SplitShardResponse(header=h)
        except TimeoutError:
            h = spb.ShardResponseHeader(node_id=node.node_id, hlc=node.hlc.last)
            h.error.CopyFrom(convert.store_error(ServerBusy("the split applied, but the new shard is not hosted here yet", 100)))
            return spb.SplitShardResponse(header=h)
        addresses = {n: node.address_of(n) for info in (left, right) for n in (*info.voters, *info.learners)}
        return spb.SplitShardResponse(
            header=spb.ShardResponseHeader(node_id=node.node_id, hlc=node.hlc.last, closed_ts=node.closed_ts(sid)),
            left=convert.descriptor_to_pb(left, addresses),
            right=convert.descriptor_to_pb(right, addresses),
        )

    async def Alarm(self, request: spb.StoreAlarmRequest, context: grpc.aio.ServicerContext) -> spb.StoreAlarmResponse:  # noqa: N802
        """GET / ACTIVATE / DEACTIVATE one of this node's alarms (shard/quota.py)."""
        q = self._node.quota
        try:
            alarm = AlarmType(request.alarm)
        except ValueError:  # an alarm type newer than this node: it has none of it, and arms none
            return spb.StoreAlarmResponse(node_id=self._node.node_id, used_bytes=q.used_bytes, quota_bytes=q.quota_bytes)
        changed: tuple[AlarmType, ...] = ()
        if request.action == epb.AlarmRequest.ACTIVATE and q.activate(alarm):
            changed = (alarm,)
        elif request.action == epb.AlarmRequest.DEACTIVATE:
            before = q.active(alarm)
            if q.deactivate(alarm):
                changed = before
                log.info("node=%d alarms disarmed: %s", self._node.node_id, ", ".join(a.name for a in before))
        if changed:
            self._node.save_alarms()
        return spb.StoreAlarmResponse(
            node_id=self._node.node_id,
            alarms=[int(a) for a in q.active(alarm if request.action == epb.AlarmRequest.GET else AlarmType.NONE)],
            changed=[int(a) for a in changed],
            used_bytes=q.used_bytes,
            quota_bytes=q.quota_bytes,
        )

    async def Defragment(  # noqa: N802
        self, request: spb.StoreDefragmentRequest, context: grpc.aio.ServicerContext
    ) -> spb.StoreDefragmentResponse:
        before, after = await self._node.defragment()
        return spb.StoreDefragmentResponse(node_id=self._node.node_id, used_bytes_before=before, used_bytes_after=after)

    async def HashKV(self, request: spb.ShardHashKVRequest, context: grpc.aio.ServicerContext) -> spb.ShardHashKVResponse:  # noqa: N802
        node = self._node
        sid = request.shard_id
        h = spb.ShardResponseHeader(node_id=node.node_id, hlc=node.hlc.last, closed_ts=node.closed_ts(sid))
        try:
            hash_, compact, rev, versions = await node.hash_kv(sid, request.revision)
        except StoreError as exc:
            h.error.CopyFrom(convert.store_error(exc, compact_revision=node.compact_revision(sid)))
            return spb.ShardHashKVResponse(header=h)
        return spb.ShardHashKVResponse(header=h, hash=hash_, compact_revision=compact, hash_revision=rev, versions=versions)
