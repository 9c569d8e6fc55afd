"""The etcd Lease service: leases live in the placement group, so the router
forwards the five Lease RPCs to the placement leader. Without placement (the
static map mode) every Lease RPC answers UNAVAILABLE, saying leases need
placement.

``PlacementLink`` is the router's way to the placement leader over a list of
placement servers: unary calls go through the shared
PlacementClient (rpc/placementclient.py: it follows the `placement-leader` hint a follower answers
with, and moves on past servers that are down); a keep-alive stream is opened
at the server believed to lead and, when that server answers "not leader" or
goes away, opened again at the hinted leader (or the next server) and the
pending request sent again. Answers other than "not here, not now" (e.g.
etcd's "requested lease not found") are relayed as placement sent them: they
already carry etcd's codes and texts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import grpc.aio

from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc
from rpc.placementclient import LEADER_METADATA_KEY, RETRYABLE, PlacementClient, PlacementUnavailable
from router.etcd_errors import EtcdError, abort_with
from router.kv import LeaseChecker

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
FIRST_READ_WAIT_S = 0.05
"""How long a LeaseRevoke waits for keep-alive streams opened before it to
read their first request (PlacementLink.after_keep_alives)."""


class PlacementLink:
    def __init__(self, endpoints: Sequence[str], *, attempt_timeout_s: float = 3.0, rounds: int = 3, backoff_s: float = 0.2) -> None:
        self.client = PlacementClient(endpoints, timeout_s=attempt_timeout_s, rounds=rounds, backoff_s=backoff_s)
        self._rounds = rounds
        self._backoff_s = backoff_s
        self._leader = ""  # the last server that answered a keep-alive, or a hint
        self._renewing: dict[int, int] = {}  # lease id -> keep-alives received, not yet answered
        self._idle: dict[int, asyncio.Event] = {}  # lease id -> set when none is left
        self._unread = 0  # keep-alive streams open here whose first request is not read yet
        self._read_one = asyncio.Event()  # set whenever one of those reads it (or ends)

    async def call(self, method: str, request: Any, *, timeout_s: float, service: Any = None) -> Any:
        """Placement.<method> (or <method> of `service`, a stub class of the
        placement servers) on the leader. Raises EtcdError when no leader
        answered in time, grpc.aio.AioRpcError for placement's own answers."""
        try:
            async with asyncio.timeout(max(0.001, timeout_s)):
                attempt_s = min(3.0, max(0.001, timeout_s))
                if service is None:
                    return await self.client.call(method, request, timeout_s=attempt_s)
                return await self.client.call(method, request, timeout_s=attempt_s, service=service)
        except PlacementUnavailable as exc:
            raise EtcdError("no_leader", str(exc)) from None
        except TimeoutError:
            raise EtcdError("timeout", f"placement did not answer {method} in time") from None

    def _order(self, tried: set[str]) -> str | None:
        for a in (self._leader, *self.client.endpoints):
            if a and a not in tried:
                return a
        return None

    def _received(self, lease_id: int) -> None:
        self._renewing[lease_id] = self._renewing.get(lease_id, 0) + 1

    def _answered(self, lease_id: int) -> None:
        n = self._renewing.get(lease_id, 0) - 1
        if n > 0:
            self._renewing[lease_id] = n
        else:
            self._renewing.pop(lease_id, None)
            waiter = self._idle.pop(lease_id, None)
            if waiter is not None:
                waiter.set()

    async def after_keep_alives(self, lease_id: int, timeout_s: float) -> None:
        """Until every keep-alive of lease_id this router received before
        now has been answered by placement: a LeaseRevoke sent after a
        keep-alive must not overtake it (etcd's leader answers them in the
        order it received them)."""
        if self._unread:
            # A keep-alive stream opened before this call may carry a
            # keep-alive of this lease not read yet (the client wrote it,
            # then sent the revoke on another stream of its connection):
            # give those streams a moment to read their first request.
            try:
                async with asyncio.timeout(min(FIRST_READ_WAIT_S, max(0.0, timeout_s))):
                    while self._unread:
                        self._read_one.clear()
                        await self._read_one.wait()
            except TimeoutError:
                pass
        if not self._renewing.get(lease_id):
            return
        idle = self._idle.setdefault(lease_id, asyncio.Event())
        try:
            async with asyncio.timeout(max(0.0, timeout_s)):
                await idle.wait()
        except TimeoutError:
            raise EtcdError("timeout", f"a keep-alive of lease {lease_id:x} sent before this call is still unanswered") from None

    async def keep_alive(self, requests: AsyncIterator[epb.LeaseKeepAliveRequest]) -> AsyncIterator[epb.LeaseKeepAliveResponse]:
        """Relay a client's keep-alive stream to the placement leader. The
        client's requests are read as they arrive (and counted per lease,
        for after_keep_alives), then sent one at a time."""
        call: Any = None
        call_address = ""
        received: asyncio.Queue[epb.LeaseKeepAliveRequest | None] = asyncio.Queue()

        self._unread += 1
        first = True

        def first_read() -> None:
            nonlocal first
            if first:
                first = False
                self._unread -= 1
                self._read_one.set()

        async def read() -> None:
            try:
                async for r in requests:
                    self._received(r.ID)
                    first_read()
                    received.put_nowait(r)
            finally:
                first_read()
                received.put_nowait(None)

        reader = asyncio.create_task(read(), name="lease-keepalive-reader")
        req: epb.LeaseKeepAliveRequest | None = None
        try:
            while (req := await received.get()) is not None:
                resp = None
                for rnd in range(self._rounds):
                    tried: set[str] = set()
                    while resp is None:
                        if call is None:
                            address = self._order(tried)
                            if address is None:
                                break
                            tried.add(address)
                            call = self.client.stub(address).LeaseKeepAlive()
                            call_address = address
                        try:
                            await call.write(req)
                            got = await call.read()
                        except grpc.aio.AioRpcError as exc:
                            if exc.code() not in RETRYABLE:
                                raise
                            hint = dict(exc.trailing_metadata() or ()).get(LEADER_METADATA_KEY)
                            if isinstance(hint, str) and hint and hint not in tried:
                                self._leader = hint
                            elif self._leader == call_address:
                                self._leader = ""
                            call.cancel()
                            call = None
                            continue
                        if got is grpc.aio.EOF:  # the server ended the stream: open another
                            call = None
                            continue
                        self._leader = call_address
                        resp = got
                    if resp is not None:
                        break
                    if rnd + 1 < self._rounds:
                        await asyncio.sleep(self._backoff_s * (rnd + 1))
                if resp is None:
                    raise EtcdError("no_leader", "no placement server led to renew the lease")
                self._answered(req.ID)
                req = None
                yield resp
        finally:
            reader.cancel()
            first_read()
            if req is not None:
                self._answered(req.ID)
            while not received.empty():
                left = received.get_nowait()
                if left is not None:
                    self._answered(left.ID)
            if call is not None:
                call.cancel()

    async def close(self) -> None:
        await self.client.close()


class PlacementLeases(LeaseChecker):
    def __init__(self, link: PlacementLink) -> None:
        self._link = link

    async def exists(self, lease_id: int, deadline: float) -> bool:
        left = deadline - asyncio.get_running_loop().time()
        try:
            r = await self._link.call("LeaseTimeToLive", epb.LeaseTimeToLiveRequest(ID=lease_id), timeout_s=left)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise EtcdError("lease_not_found") from None
            raise EtcdError("timeout", f"placement did not answer: {exc.code().name}") from None
        if r.TTL == -1:
            raise EtcdError("lease_not_found")
        return True


class LeaseServicer(rpc_pb2_grpc.LeaseServicer):
    def __init__(self, link: PlacementLink | None, stamp: Any) -> None:
        self._link = link
        self._stamp = stamp

    async def _unary(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if self._link is None:
            await abort_with(context, EtcdError("lease_unavailable"))
        assert self._link is not None
        try:
            resp = await self._link.call(method, request, timeout_s=context.time_remaining() or DEFAULT_TIMEOUT_S)
        except EtcdError as err:
            await abort_with(context, err)
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")
        self._stamp(resp.header)
        return resp

    async def LeaseGrant(self, request: epb.LeaseGrantRequest, context: grpc.aio.ServicerContext) -> epb.LeaseGrantResponse:  # noqa: N802
        return await self._unary("LeaseGrant", request, context)  # type: ignore[no-any-return]

    async def LeaseRevoke(self, request: epb.LeaseRevokeRequest, context: grpc.aio.ServicerContext) -> epb.LeaseRevokeResponse:  # noqa: N802
        if self._link is not None:
            try:
                await self._link.after_keep_alives(request.ID, context.time_remaining() or DEFAULT_TIMEOUT_S)
            except EtcdError as err:
                await abort_with(context, err)
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
        if self._link is None:
            await abort_with(context, EtcdError("lease_unavailable"))
        assert self._link is not None
        try:
            async for resp in self._link.keep_alive(request_iterator):
                self._stamp(resp.header)
                yield resp
        except EtcdError as err:
            await abort_with(context, err)
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")
