"""router/grpcstats.py: grpc_server_handled_total's counts on a real
grpc.aio server, by type, service, method and grpc-go's code name, whether
the counter wraps the handlers at registration (add_servicer(...,
handled=...), no interceptor) or runs as a server interceptor (each
method's wrapped handler made once and kept)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest

from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc as eg
from router.grpc_handlers import add_servicer
from router.grpcstats import HandledCounter


class KV(eg.KVServicer):
    async def Range(self, request: epb.RangeRequest, context: grpc.aio.ServicerContext) -> epb.RangeResponse:  # noqa: N802
        if not request.key:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key is not provided")
        return epb.RangeResponse(count=1)

    async def Put(self, request: epb.PutRequest, context: grpc.aio.ServicerContext) -> epb.PutResponse:  # noqa: N802
        if request.key == b"set-code":
            context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
            context.set_details("set, not raised")
            return epb.PutResponse()
        if request.key == b"boom":
            raise RuntimeError("a bug")
        return epb.PutResponse()


class Lease(eg.LeaseServicer):
    async def LeaseKeepAlive(  # noqa: N802
        self, request_iterator: AsyncIterator[epb.LeaseKeepAliveRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[epb.LeaseKeepAliveResponse]:
        async for req in request_iterator:
            yield epb.LeaseKeepAliveResponse(ID=req.ID, TTL=5)


async def _serve(how: str) -> tuple[grpc.aio.Server, grpc.aio.Channel, HandledCounter]:
    counter = HandledCounter()
    server = grpc.aio.server(interceptors=[counter] if how in ("interceptor", "both") else None)
    handled = counter if how in ("registration", "both") else None
    add_servicer(server, eg.add_KVServicer_to_server, KV(), handled=handled)
    add_servicer(server, eg.add_LeaseServicer_to_server, Lease(), handled=handled)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, grpc.aio.insecure_channel(f"127.0.0.1:{port}"), counter


@pytest.mark.parametrize("how", ["registration", "interceptor", "both"])
async def test_calls_are_counted_once_by_method_and_code(how: str) -> None:
    server, channel, counter = await _serve(how)
    try:
        kv, lease = eg.KVStub(channel), eg.LeaseStub(channel)
        for _ in range(3):
            await kv.Put(epb.PutRequest(key=b"k", value=b"v"), timeout=10)
        await kv.Range(epb.RangeRequest(key=b"k"), timeout=10)
        for key, code in ((b"", grpc.StatusCode.INVALID_ARGUMENT),):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await kv.Range(epb.RangeRequest(key=key), timeout=10)
            assert err.value.code() == code
        for key, code in ((b"set-code", grpc.StatusCode.FAILED_PRECONDITION), (b"boom", grpc.StatusCode.UNKNOWN)):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await kv.Put(epb.PutRequest(key=key), timeout=10)
            assert err.value.code() == code
        with pytest.raises(grpc.aio.AioRpcError) as err:  # a generated default: UNIMPLEMENTED
            await kv.Compact(epb.CompactionRequest(revision=1), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED

        async def keepalives() -> AsyncIterator[epb.LeaseKeepAliveRequest]:
            for i in (1, 2):
                yield epb.LeaseKeepAliveRequest(ID=i)

        got = [r.ID async for r in lease.LeaseKeepAlive(keepalives(), timeout=10)]
        assert got == [1, 2]
    finally:
        await channel.close()
        await server.stop(0)
    kv_labels = ("unary", "etcdserverpb.KV")
    assert dict(counter.handled) == {
        (*kv_labels, "Put", "OK"): 3,
        (*kv_labels, "Range", "OK"): 1,
        (*kv_labels, "Range", "InvalidArgument"): 1,
        (*kv_labels, "Put", "FailedPrecondition"): 1,
        (*kv_labels, "Put", "Unknown"): 1,
        (*kv_labels, "Compact", "Unimplemented"): 1,
        ("bidi_stream", "etcdserverpb.Lease", "LeaseKeepAlive", "OK"): 1,
    }
