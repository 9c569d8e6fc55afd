"""The etcd Cluster service: MemberList lists the routers (DESIGN.md, "What
etcd clients see"), so clients that sync their endpoints stay on routers.
Membership changes are not etcd's business here: they answer UNIMPLEMENTED."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc
import grpc.aio

from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc
from router.etcd_errors import EtcdError, abort_with


@dataclass(frozen=True, slots=True)
class RouterMember:
    member_id: int
    name: str
    client_urls: tuple[str, ...]
    peer_urls: tuple[str, ...] = ()

    def to_pb(self) -> epb.Member:
        return epb.Member(ID=self.member_id, name=self.name, peerURLs=list(self.peer_urls), clientURLs=list(self.client_urls))


class ClusterServicer(rpc_pb2_grpc.ClusterServicer):
    def __init__(self, members: Callable[[], list[RouterMember]], stamp: Callable[[epb.ResponseHeader], None]) -> None:
        self._members = members
        self._stamp = stamp

    async def MemberList(self, request: epb.MemberListRequest, context: grpc.aio.ServicerContext) -> epb.MemberListResponse:  # noqa: N802
        resp = epb.MemberListResponse(members=[m.to_pb() for m in self._members()])
        self._stamp(resp.header)
        return resp

    async def _refuse(self, context: grpc.aio.ServicerContext) -> None:
        await abort_with(context, EtcdError("unimplemented", "routers are members by running; there is no etcd membership to change"))

    async def MemberAdd(self, request: epb.MemberAddRequest, context: grpc.aio.ServicerContext) -> epb.MemberAddResponse:  # noqa: N802
        await self._refuse(context)
        raise AssertionError

    async def MemberRemove(self, request: epb.MemberRemoveRequest, context: grpc.aio.ServicerContext) -> epb.MemberRemoveResponse:  # noqa: N802
        await self._refuse(context)
        raise AssertionError

    async def MemberUpdate(self, request: epb.MemberUpdateRequest, context: grpc.aio.ServicerContext) -> epb.MemberUpdateResponse:  # noqa: N802
        await self._refuse(context)
        raise AssertionError

    async def MemberPromote(self, request: epb.MemberPromoteRequest, context: grpc.aio.ServicerContext) -> epb.MemberPromoteResponse:  # noqa: N802
        await self._refuse(context)
        raise AssertionError
