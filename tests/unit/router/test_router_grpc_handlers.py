"""router/grpc_handlers.py: servicers registered through add_servicer answer a
request they cannot decode with grpc-go's INTERNAL "grpc: error unmarshalling
request: ..." (not grpcio's UNKNOWN "Unexpected DecodeError"), for unary and
streaming methods, async and sync behaviors; decodable requests are served
as before."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest

from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc as eg
from router.grpc_handlers import (
    UNMARSHAL_PREFIX,
    Undecodable,
    add_servicer,
    checked_deserializer,
    checked_handler,
    method_table,
)

BAD = (b"\x0a\xff\xff\xff\xff\xff", b"\x0a\x10ab", b"\xff" * 64)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _nested_txn(depth: int) -> bytes:
    body = b""
    for _ in range(depth):
        op = b"\x22" + _varint(len(body)) + body
        body = b"\x12" + _varint(len(op)) + op
    return body


class KV(eg.KVServicer):
    async def Range(self, request: epb.RangeRequest, context: grpc.aio.ServicerContext) -> epb.RangeResponse:  # noqa: N802
        return epb.RangeResponse(count=len(request.key))

    async def Txn(self, request: epb.TxnRequest, context: grpc.aio.ServicerContext) -> epb.TxnResponse:  # noqa: N802
        return epb.TxnResponse(succeeded=True)


class Watch(eg.WatchServicer):
    """Reads its request stream in another task, as router/watch.py does."""

    def __init__(self) -> None:
        self.finished = asyncio.Event()

    async def Watch(  # noqa: N802
        self, request_iterator: AsyncIterator[epb.WatchRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[epb.WatchResponse]:
        out: asyncio.Queue[epb.WatchResponse | None] = asyncio.Queue()

        async def read() -> None:
            try:
                async for req in request_iterator:
                    out.put_nowait(epb.WatchResponse(watch_id=req.create_request.start_revision, created=True))
            finally:
                out.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (resp := await out.get()) is not None:
                yield resp
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            self.finished.set()


class Lease(eg.LeaseServicer):
    """Reads its request stream in the handler's task."""

    async def LeaseKeepAlive(  # noqa: N802
        self, request_iterator: AsyncIterator[epb.LeaseKeepAliveRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[epb.LeaseKeepAliveResponse]:
        async for req in request_iterator:
            yield epb.LeaseKeepAliveResponse(ID=req.ID, TTL=5)


class Maintenance(eg.MaintenanceServicer):
    async def Snapshot(  # noqa: N802
        self, request: epb.SnapshotRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[epb.SnapshotResponse]:
        yield epb.SnapshotResponse(blob=b"chunk")

    # Status: a coroutine handler; Alarm: left as the generated (sync) UNIMPLEMENTED default.
    async def Status(self, request: epb.StatusRequest, context: grpc.aio.ServicerContext) -> epb.StatusResponse:  # noqa: N802
        return epb.StatusResponse(version="3.5.0")


class Env:
    def __init__(self, server: grpc.aio.Server, channel: grpc.aio.Channel, watch: Watch) -> None:
        self.server = server
        self.channel = channel
        self.watch = watch

    def raw_unary(self, method: str) -> grpc.aio.UnaryUnaryMultiCallable:
        return self.channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)

    def raw_unary_stream(self, method: str) -> grpc.aio.UnaryStreamMultiCallable:
        return self.channel.unary_stream(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)

    def raw_stream(self, method: str) -> grpc.aio.StreamStreamMultiCallable:
        return self.channel.stream_stream(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)


async def _env() -> Env:
    server = grpc.aio.server()
    watch = Watch()
    add_servicer(server, eg.add_KVServicer_to_server, KV())
    add_servicer(server, eg.add_WatchServicer_to_server, watch)
    add_servicer(server, eg.add_LeaseServicer_to_server, Lease())
    add_servicer(server, eg.add_MaintenanceServicer_to_server, Maintenance())
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return Env(server, grpc.aio.insecure_channel(f"127.0.0.1:{port}"), watch)


async def _close(env: Env) -> None:
    await env.channel.close()
    await env.server.stop(0)


def _is_unmarshal_error(exc: grpc.aio.AioRpcError) -> None:
    assert exc.code() == grpc.StatusCode.INTERNAL, (exc.code(), exc.details())
    assert (exc.details() or "").startswith(UNMARSHAL_PREFIX + ": "), exc.details()


def test_checked_deserializer_returns_a_sentinel_for_undecodable_bytes() -> None:
    des = checked_deserializer(epb.RangeRequest.FromString)
    for body in BAD:
        got = des(body)
        assert isinstance(got, Undecodable), body
    assert isinstance(checked_deserializer(epb.TxnRequest.FromString)(_nested_txn(10_000)), Undecodable)
    assert des(epb.RangeRequest(key=b"k").SerializeToString()) == epb.RangeRequest(key=b"k")
    # Only decode errors become the sentinel.
    with pytest.raises(ZeroDivisionError):
        checked_deserializer(lambda b: 1 // 0)(b"")


def test_method_table_takes_every_generated_method_and_keeps_its_shape() -> None:
    for add, servicer, service in (
        (eg.add_KVServicer_to_server, KV(), "etcdserverpb.KV"),
        (eg.add_WatchServicer_to_server, Watch(), "etcdserverpb.Watch"),
        (eg.add_LeaseServicer_to_server, Lease(), "etcdserverpb.Lease"),
        (eg.add_ClusterServicer_to_server, eg.ClusterServicer(), "etcdserverpb.Cluster"),
        (eg.add_MaintenanceServicer_to_server, Maintenance(), "etcdserverpb.Maintenance"),
    ):
        [(name, table)] = method_table(add, servicer)
        assert name == service
        assert table
        for method, handler in table.items():
            checked = checked_handler(handler)
            assert (checked.request_streaming, checked.response_streaming) == (
                handler.request_streaming,
                handler.response_streaming,
            ), method
            assert checked.response_serializer is handler.response_serializer
    assert set(method_table(eg.add_KVServicer_to_server, KV())[0][1]) == {"Range", "Put", "DeleteRange", "Txn", "Compact"}
    assert set(method_table(eg.add_LeaseServicer_to_server, Lease())[0][1]) == {
        "LeaseGrant",
        "LeaseRevoke",
        "LeaseKeepAlive",
        "LeaseTimeToLive",
        "LeaseLeases",
    }


async def test_unary_methods_answer_internal_unmarshalling_request() -> None:
    env = await _env()
    try:
        for body in BAD:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await env.raw_unary("/etcdserverpb.KV/Range")(body, timeout=5)
            _is_unmarshal_error(info.value)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await env.raw_unary("/etcdserverpb.KV/Txn")(_nested_txn(10_000), timeout=5)
        _is_unmarshal_error(info.value)
        # A coroutine handler, and a generated sync UNIMPLEMENTED default: decoding comes first, as in grpc-go.
        for method in ("/etcdserverpb.Maintenance/Status", "/etcdserverpb.Maintenance/Alarm"):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await env.raw_unary(method)(BAD[0], timeout=5)
            _is_unmarshal_error(info.value)
        # Decodable requests are served as before.
        kv = eg.KVStub(env.channel)
        assert (await kv.Range(epb.RangeRequest(key=b"abc"), timeout=5)).count == 3
        assert (await kv.Txn(epb.TxnRequest(), timeout=5)).succeeded
        maint = eg.MaintenanceStub(env.channel)
        assert (await maint.Status(epb.StatusRequest(), timeout=5)).version == "3.5.0"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await maint.Alarm(epb.AlarmRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await kv.Put(epb.PutRequest(key=b"k"), timeout=5)  # the generated default, untouched
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await _close(env)


async def test_unary_stream_method_answers_internal_unmarshalling_request() -> None:
    env = await _env()
    try:
        call = env.raw_unary_stream("/etcdserverpb.Maintenance/Snapshot")(b"\xff" * 8, timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in call:
                pass
        _is_unmarshal_error(info.value)
        got = [r.blob async for r in eg.MaintenanceStub(env.channel).Snapshot(epb.SnapshotRequest(), timeout=5)]
        assert got == [b"chunk"]
    finally:
        await _close(env)


async def test_stream_read_in_another_task_is_aborted_at_the_bad_message() -> None:
    env = await _env()
    try:
        call = env.raw_stream("/etcdserverpb.Watch/Watch")(timeout=5)
        good = epb.WatchRequest(create_request=epb.WatchCreateRequest(key=b"k", start_revision=7))
        await call.write(good.SerializeToString())
        first = epb.WatchResponse.FromString(await call.read())
        assert first.created and first.watch_id == 7
        await call.write(b"\x0a\x10ab")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            while await call.read() is not grpc.aio.EOF:
                pass
        _is_unmarshal_error(info.value)
        await asyncio.wait_for(env.watch.finished.wait(), 5)  # the handler ended too
        # A well-formed stream still works.
        stream = eg.WatchStub(env.channel).Watch(timeout=5)
        await stream.write(good)
        assert (await stream.read()).created
        await stream.done_writing()
        assert await stream.read() is grpc.aio.EOF
    finally:
        await _close(env)


async def test_stream_read_in_the_handler_task_is_aborted_at_the_bad_message() -> None:
    env = await _env()
    try:
        call = env.raw_stream("/etcdserverpb.Lease/LeaseKeepAlive")(timeout=5)
        await call.write(epb.LeaseKeepAliveRequest(ID=42).SerializeToString())
        assert epb.LeaseKeepAliveResponse.FromString(await call.read()).ID == 42
        await call.write(b"\xff" * 64)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            while await call.read() is not grpc.aio.EOF:
                pass
        _is_unmarshal_error(info.value)
        # A well-formed stream still works.
        stream = eg.LeaseStub(env.channel).LeaseKeepAlive(timeout=5)
        await stream.write(epb.LeaseKeepAliveRequest(ID=7))
        assert (await stream.read()).ID == 7
        await stream.done_writing()
        assert await stream.read() is grpc.aio.EOF
    finally:
        await _close(env)
