"""The Lock (``v3lockpb.Lock``) and Election (``v3electionpb.Election``)
gRPC services, served on the same endpoint as KV: thin servicers over the
recipes (router/recipes.py). Errors go through router/etcd_errors.py like
every other answer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import grpc.aio

from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.v3electionpb import v3election_pb2 as elpb
from flotillapb.etcd.v3electionpb import v3election_pb2_grpc
from flotillapb.etcd.v3lockpb import v3lock_pb2 as lkpb
from flotillapb.etcd.v3lockpb import v3lock_pb2_grpc
from router.etcd_errors import EtcdError, abort_with
from router.recipes import Held, Recipes


class LockServicer(v3lock_pb2_grpc.LockServicer):
    def __init__(self, recipes: Recipes) -> None:
        self._r = recipes

    async def Lock(self, request: lkpb.LockRequest, context: grpc.aio.ServicerContext) -> lkpb.LockResponse:  # noqa: N802
        try:
            held = await self._r.lock(request.name, request.lease)
        except EtcdError as err:
            await abort_with(context, err)
        out = lkpb.LockResponse(key=held.key)
        out.header.CopyFrom(held.header)
        return out

    async def Unlock(self, request: lkpb.UnlockRequest, context: grpc.aio.ServicerContext) -> lkpb.UnlockResponse:  # noqa: N802
        try:
            header = await self._r.unlock(request.key)
        except EtcdError as err:
            await abort_with(context, err)
        out = lkpb.UnlockResponse()
        out.header.CopyFrom(header)
        return out


def _held(leader: elpb.LeaderKey) -> Held:
    return Held(leader.name, leader.key, leader.rev, leader.lease, epb.ResponseHeader())


class ElectionServicer(v3election_pb2_grpc.ElectionServicer):
    def __init__(self, recipes: Recipes) -> None:
        self._r = recipes

    async def Campaign(self, request: elpb.CampaignRequest, context: grpc.aio.ServicerContext) -> elpb.CampaignResponse:  # noqa: N802
        try:
            held = await self._r.campaign(request.name, request.lease, request.value)
        except EtcdError as err:
            await abort_with(context, err)
        out = elpb.CampaignResponse(leader=elpb.LeaderKey(name=held.name, key=held.key, rev=held.rev, lease=held.lease))
        out.header.CopyFrom(held.header)
        return out

    async def Proclaim(self, request: elpb.ProclaimRequest, context: grpc.aio.ServicerContext) -> elpb.ProclaimResponse:  # noqa: N802
        try:
            if not request.HasField("leader"):
                raise EtcdError("election_missing_leader_key")
            header = await self._r.proclaim(_held(request.leader), request.value)
        except EtcdError as err:
            await abort_with(context, err)
        out = elpb.ProclaimResponse()
        out.header.CopyFrom(header)
        return out

    async def Resign(self, request: elpb.ResignRequest, context: grpc.aio.ServicerContext) -> elpb.ResignResponse:  # noqa: N802
        try:
            if not request.HasField("leader"):
                raise EtcdError("election_missing_leader_key")
            header = await self._r.resign(_held(request.leader))
        except EtcdError as err:
            await abort_with(context, err)
        out = elpb.ResignResponse()
        out.header.CopyFrom(header)
        return out

    async def Leader(self, request: elpb.LeaderRequest, context: grpc.aio.ServicerContext) -> elpb.LeaderResponse:  # noqa: N802
        try:
            header, kv = await self._r.leader(request.name)
        except EtcdError as err:
            await abort_with(context, err)
        out = elpb.LeaderResponse(kv=kv)
        out.header.CopyFrom(header)
        return out

    async def Observe(  # noqa: N802
        self, request: elpb.LeaderRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[elpb.LeaderResponse]:
        try:
            async for header, kv in self._r.observe(request.name):
                out = elpb.LeaderResponse(kv=kv)
                out.header.CopyFrom(header)
                yield out
        except EtcdError as err:
            await abort_with(context, err)
