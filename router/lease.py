"""The etcd Lease service: leases live in the placement group, so the router
forwards the five Lease RPCs to it. Without placement (the static map mode)
every Lease RPC answers UNAVAILABLE, saying leases need placement."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio

from flotillapb import placement_pb2_grpc
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc
from router.etcd_errors import EtcdError, abort_with
from router.kv import LeaseChecker

log = logging.getLogger(__name__)


class PlacementLeases(LeaseChecker):
    def __init__(self, stub: Callable[[], placement_pb2_grpc.PlacementStub]) -> None:
        self._stub = stub

    async def exists(self, lease_id: int, deadline: float) -> bool:
        left = max(0.001, deadline - asyncio.get_running_loop().time())
        try:
            r = await self._stub().LeaseTimeToLive(epb.LeaseTimeToLiveRequest(ID=lease_id), timeout=left)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise EtcdError("lease_not_found") from None
            raise EtcdError("timeout", f"placement did not answer: {exc.code().name}") from None
        if r.TTL == -1:
            raise EtcdError("lease_not_found")
        return True


class LeaseServicer(rpc_pb2_grpc.LeaseServicer):
    def __init__(self, stub: Callable[[], placement_pb2_grpc.PlacementStub] | None, stamp: Any) -> None:
        self._stub = stub
        self._stamp = stamp

    async def _unary(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if self._stub is None:
            await abort_with(context, EtcdError("lease_unavailable"))
        try:
            resp = await getattr(self._stub(), method)(request, timeout=context.time_remaining() or 10)
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")
        self._stamp(resp.header)
        return resp

    async def LeaseGrant(self, request: epb.LeaseGrantRequest, context: grpc.aio.ServicerContext) -> epb.LeaseGrantResponse:  # noqa: N802
        return await self._unary("LeaseGrant", request, context)  # type: ignore[no-any-return]

    async def LeaseRevoke(self, request: epb.LeaseRevokeRequest, context: grpc.aio.ServicerContext) -> epb.LeaseRevokeResponse:  # noqa: N802
        return await self._unary("LeaseRevoke", request, context)  # type: ignore[no-any-return]

    async def LeaseTimeToLive(  # noqa: N802
        self, request: epb.LeaseTimeToLiveRequest, context: grpc.aio.ServicerContext
    ) -> epb.LeaseTimeToLiveResponse:
        return await self._unary("LeaseTimeToLive", request, context)  # type: ignore[no-any-return]

    async def LeaseLeases(self, request: epb.LeaseLeasesRequest, context: grpc.aio.ServicerContext) -> epb.LeaseLeasesResponse:  # noqa: N802
        return await self._unary("LeaseLeases", request, context)  # type: ignore[no-any-return]

    async def LeaseKeepAlive(  # noqa: N802
        self, request_iterator: AsyncIterator[epb.LeaseKeepAliveRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[epb.LeaseKeepAliveResponse]:
        if self._stub is None:
            await abort_with(context, EtcdError("lease_unavailable"))
        assert self._stub is not None
        try:
            async for resp in self._stub().LeaseKeepAlive(request_iterator):
                self._stamp(resp.header)
                yield resp
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")
