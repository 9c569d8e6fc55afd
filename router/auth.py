"""etcd's Auth service, and the permission check in front of every other
etcd service the router serves.

``AuthServicer`` answers etcdserverpb.Auth: users and roles live in the
placement group (placement/authbook.py), so every call but Authenticate is
relayed to the placement leader (PlacementAuth.Call) with the user the
router authenticated for it (placement checks the root role where etcd
does, when the write applies). Passwords are hashed here with bcrypt
(etcd's cost, --bcrypt-cost, default 10) and never leave the router in
clear. Authenticate checks the password against the router's fresh copy of
the state, then issues a simple token through placement's log (every router
knows it) or signs a JWT. Without placement (the static map mode) every
Auth call answers UNAVAILABLE, saying auth needs placement.

``guard(servicers, ...)`` wraps the KV, Watch, Lease, Lock, Election,
Maintenance and Cluster servicers: each call is checked (router/authstore.py
AuthGuard) before the wrapped servicer sees it, with the needs etcd checks
(router/authperm.py):

- KV: Range READ, Put WRITE (+READ with prev_kv), DeleteRange WRITE (+READ
  with prev_kv), Txn every compare and both branches; a put with a lease
  also needs WRITE on every key the lease holds (etcd's checkLeasePuts);
  Compact: an authenticated user.
- Watch: a create on a range the user may not READ is answered as etcd
  answers it (created and canceled, watch id -1, the refusal as reason).
- Lease: Grant and KeepAlive: an authenticated user; Revoke: WRITE on every
  key attached; TimeToLive with keys: READ on them; Leases: the root role or
  READ on every key of every lease.
- Lock: WRITE on the holder key and READ on the lock's prefix; Unlock:
  WRITE on the key. Election: Campaign WRITE on the holder key and READ on
  the prefix, Proclaim and Resign READ and WRITE on the leader key, Leader
  and Observe READ on the prefix.
- Maintenance: Status and Alarm GET an authenticated user; the others the
  root role. Cluster: member changes the root role; MemberList anyone.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import bcrypt
import grpc
import grpc.aio

from flotillapb import placementauth_pb2 as apb
from flotillapb import placementauth_pb2_grpc
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc
from flotillapb.etcd.v3electionpb import v3election_pb2 as elpb
from flotillapb.etcd.v3electionpb import v3election_pb2_grpc
from flotillapb.etcd.v3lockpb import v3lock_pb2 as lkpb
from flotillapb.etcd.v3lockpb import v3lock_pb2_grpc
from router import authperm as perm
from router.authperm import READ, WRITE, Need
from router.authstore import AuthGuard, lease_keys
from router.authtoken import JwtTokens, SimpleTokens, TokenProvider
from router.etcd_errors import ROWS, EtcdError, abort_with

log = logging.getLogger(__name__)

DEFAULT_BCRYPT_COST = 10  # etcd's --bcrypt-cost
AUTHENTICATE_ATTEMPTS = 3

LinkCall = Callable[..., Awaitable[Any]]
"""PlacementLink.call: (method, request, *, timeout_s, service=None) -> response."""


async def _relay_error(context: grpc.aio.ServicerContext, exc: grpc.aio.AioRpcError) -> None:
    await context.abort(exc.code(), exc.details() or "")


class AuthServicer(rpc_pb2_grpc.AuthServicer):
    def __init__(
        self,
        guard: AuthGuard | None,
        link_call: LinkCall | None,
        stamp: Callable[[epb.ResponseHeader], None],
        *,
        bcrypt_cost: int = DEFAULT_BCRYPT_COST,
        timeout_s: float = 7.0,
    ) -> None:
        self._guard = guard
        self._call = link_call
        self._stamp = stamp
        self._cost = bcrypt_cost
        self._timeout_s = timeout_s

    def _left(self, context: grpc.aio.ServicerContext) -> float:
        left = context.time_remaining()
        return self._timeout_s if left is None else max(0.001, left)

    async def _place(self, call: apb.AuthCall, context: grpc.aio.ServicerContext) -> bytes:
        assert self._call is not None
        reply: apb.AuthReply = await self._call("Call", call, timeout_s=self._left(context), service=placementauth_pb2_grpc.PlacementAuthStub)
        return reply.response

    async def _relay(
        self, method: str, request: Any, context: grpc.aio.ServicerContext, response_type: type[Any], *,
        password: str | None = None, prehashed: str = "",
    ) -> Any:
        """Relay one Auth call to the placement leader with the caller's user;
        a password is hashed here (or taken as the client hashed it: etcd
        3.5's hashedPassword, base64 of a bcrypt hash)."""
        if self._guard is None or self._call is None:
            await abort_with(context, EtcdError("auth_unavailable"))
        assert self._guard is not None
        try:
            _, actor = await self._guard.identity(context)
            call = apb.AuthCall(method=method, actor=actor or "", request=request.SerializeToString())
            if prehashed:
                try:
                    call.password_hash = base64.b64decode(prehashed, validate=True)
                except ValueError:
                    raise EtcdError("invalid_request", "hashedPassword is not base64") from None
            elif password is not None:
                call.password_hash = await hash_password(password, self._cost)
            raw = await self._place(call, context)
            if method not in _READS:
                await self._guard.cache.refresh()  # this router sees its own change at once
        except EtcdError as err:
            await abort_with(context, err)
        except grpc.aio.AioRpcError as exc:
            await _relay_error(context, exc)
        resp = response_type.FromString(raw)
        self._stamp(resp.header)
        return resp

    async def AuthEnable(self, request: epb.AuthEnableRequest, context: grpc.aio.ServicerContext) -> epb.AuthEnableResponse:  # noqa: N802
        return await self._relay("AuthEnable", request, context, epb.AuthEnableResponse)  # type: ignore[no-any-return]

    async def AuthDisable(self, request: epb.AuthDisableRequest, context: grpc.aio.ServicerContext) -> epb.AuthDisableResponse:  # noqa: N802
        return await self._relay("AuthDisable", request, context, epb.AuthDisableResponse)  # type: ignore[no-any-return]

    async def AuthStatus(self, request: epb.AuthStatusRequest, context: grpc.aio.ServicerContext) -> epb.AuthStatusResponse:  # noqa: N802
        return await self._relay("AuthStatus", request, context, epb.AuthStatusResponse)  # type: ignore[no-any-return]

    async def UserAdd(self, request: epb.AuthUserAddRequest, context: grpc.aio.ServicerContext) -> epb.AuthUserAddResponse:  # noqa: N802
        req = epb.AuthUserAddRequest(name=request.name, options=request.options)  # no password in placement's log
        if request.options.no_password:
            return await self._relay("UserAdd", req, context, epb.AuthUserAddResponse)  # type: ignore[no-any-return]
        if not request.password and request.hashedPassword:
            return await self._relay("UserAdd", req, context, epb.AuthUserAddResponse, prehashed=request.hashedPassword)  # type: ignore[no-any-return]
        return await self._relay("UserAdd", req, context, epb.AuthUserAddResponse, password=request.password)  # type: ignore[no-any-return]

    async def UserGet(self, request: epb.AuthUserGetRequest, context: grpc.aio.ServicerContext) -> epb.AuthUserGetResponse:  # noqa: N802
        return await self._relay("UserGet", request, context, epb.AuthUserGetResponse)  # type: ignore[no-any-return]

    async def UserList(self, request: epb.AuthUserListRequest, context: grpc.aio.ServicerContext) -> epb.AuthUserListResponse:  # noqa: N802
        return await self._relay("UserList", request, context, epb.AuthUserListResponse)  # type: ignore[no-any-return]

    async def UserDelete(self, request: epb.AuthUserDeleteRequest, context: grpc.aio.ServicerContext) -> epb.AuthUserDeleteResponse:  # noqa: N802
        return await self._relay("UserDelete", request, context, epb.AuthUserDeleteResponse)  # type: ignore[no-any-return]

    async def UserChangePassword(  # noqa: N802
        self, request: epb.AuthUserChangePasswordRequest, context: grpc.aio.ServicerContext
    ) -> epb.AuthUserChangePasswordResponse:
        req = epb.AuthUserChangePasswordRequest(name=request.name)
        if not request.password and request.hashedPassword:
            return await self._relay(  # type: ignore[no-any-return]
                "UserChangePassword", req, context, epb.AuthUserChangePasswordResponse, prehashed=request.hashedPassword
            )
        return await self._relay("UserChangePassword", req, context, epb.AuthUserChangePasswordResponse, password=request.password)  # type: ignore[no-any-return]

    async def UserGrantRole(self, request: epb.AuthUserGrantRoleRequest, context: grpc.aio.ServicerContext) -> epb.AuthUserGrantRoleResponse:  # noqa: N802
        return await self._relay("UserGrantRole", request, context, epb.AuthUserGrantRoleResponse)  # type: ignore[no-any-return]

    async def UserRevokeRole(self, request: epb.AuthUserRevokeRoleRequest, context: grpc.aio.ServicerContext) -> epb.AuthUserRevokeRoleResponse:  # noqa: N802
        return await self._relay("UserRevokeRole", request, context, epb.AuthUserRevokeRoleResponse)  # type: ignore[no-any-return]

    async def RoleAdd(self, request: epb.AuthRoleAddRequest, context: grpc.aio.ServicerContext) -> epb.AuthRoleAddResponse:  # noqa: N802
        return await self._relay("RoleAdd", request, context, epb.AuthRoleAddResponse)  # type: ignore[no-any-return]

    async def RoleGet(self, request: epb.AuthRoleGetRequest, context: grpc.aio.ServicerContext) -> epb.AuthRoleGetResponse:  # noqa: N802
        return await self._relay("RoleGet", request, context, epb.AuthRoleGetResponse)  # type: ignore[no-any-return]

    async def RoleList(self, request: epb.AuthRoleListRequest, context: grpc.aio.ServicerContext) -> epb.AuthRoleListResponse:  # noqa: N802
        return await self._relay("RoleList", request, context, epb.AuthRoleListResponse)  # type: ignore[no-any-return]

    async def RoleDelete(self, request: epb.AuthRoleDeleteRequest, context: grpc.aio.ServicerContext) -> epb.AuthRoleDeleteResponse:  # noqa: N802
        return await self._relay("RoleDelete", request, context, epb.AuthRoleDeleteResponse)  # type: ignore[no-any-return]

    async def RoleGrantPermission(  # noqa: N802
        self, request: epb.AuthRoleGrantPermissionRequest, context: grpc.aio.ServicerContext
    ) -> epb.AuthRoleGrantPermissionResponse:
        return await self._relay("RoleGrantPermission", request, context, epb.AuthRoleGrantPermissionResponse)  # type: ignore[no-any-return]

    async def RoleRevokePermission(  # noqa: N802
        self, request: epb.AuthRoleRevokePermissionRequest, context: grpc.aio.ServicerContext
    ) -> epb.AuthRoleRevokePermissionResponse:
        return await self._relay("RoleRevokePermission", request, context, epb.AuthRoleRevokePermissionResponse)  # type: ignore[no-any-return]

    async def Authenticate(self, request: epb.AuthenticateRequest, context: grpc.aio.ServicerContext) -> epb.AuthenticateResponse:  # noqa: N802
        if self._guard is None or self._call is None:
            await abort_with(context, EtcdError("auth_unavailable"))
        assert self._guard is not None
        cache, tokens = self._guard.cache, self._guard.tokens
        try:
            for _ in range(AUTHENTICATE_ATTEMPTS):
                await cache.refresh()  # the password is checked against the state as of now
                view = cache.view
                if not view.enabled:
                    raise EtcdError("auth_not_enabled")
                u = view.users.get(request.name)
                if u is None or u.no_password or not u.password:
                    raise EtcdError("auth_failed")
                if not await check_password(request.password, u.password):
                    raise EtcdError("auth_failed")
                if isinstance(tokens, JwtTokens):
                    if tokens.verify_only:
                        raise EtcdError("auth_failed", "this router's --auth-token jwt has no priv-key: it cannot issue tokens")
                    token = tokens.sign(request.name, view.revision)
                    break
                assert isinstance(tokens, SimpleTokens)
                now_ms = int(time.time() * 1000)
                call = apb.AuthCall(
                    method="Authenticate", request=epb.AuthenticateRequest(name=request.name).SerializeToString(),
                    token=tokens.new_token(), expires_ms=tokens.expires_ms(now_ms), now_ms=now_ms, checked_revision=view.revision,
                )
                try:
                    token = epb.AuthenticateResponse.FromString(await self._place(call, context)).token
                except grpc.aio.AioRpcError as exc:
                    if exc.details() == ROWS["auth_old_revision"][1]:
                        continue  # users changed since the check: check again (etcd's loop)
                    raise
                cache.tokens[token] = (request.name, call.expires_ms)
                break
            else:
                raise EtcdError("timeout", "the auth state kept changing while the password was checked")
        except EtcdError as err:
            await abort_with(context, err)
        except grpc.aio.AioRpcError as exc:
            await _relay_error(context, exc)
        resp = epb.AuthenticateResponse(token=token)
        self._stamp(resp.header)
        return resp


_READS = frozenset({"AuthStatus", "UserGet", "UserList", "RoleGet", "RoleList"})


async def hash_password(password: str, cost: int) -> bytes:
    """bcrypt, salted, at the given cost: off the event loop (bcrypt releases the GIL)."""
    return await asyncio.to_thread(bcrypt.hashpw, password.encode(), bcrypt.gensalt(rounds=cost))


async def check_password(password: str, hashed: bytes) -> bool:
    try:
        return await asyncio.to_thread(bcrypt.checkpw, password.encode(), hashed)
    except ValueError:  # not a bcrypt hash
        return False


# ------------------------------------------------------------------------------ the guard


def auth_off(guard: AuthGuard) -> bool:
    """Auth is disabled in a view fresh enough to check a request against:
    the request is allowed with nothing to look at, so a guard tests this
    first and, with auth off, costs no more than this test (no needs listed,
    no deadline worked out, no coroutine of the check). A stale view goes the
    whole way (AuthGuard.check waits for a fresh one)."""
    return not guard.cache.view.enabled and guard.cache.fresh_for_request()


class _Guarded:
    def __init__(self, inner: Any, guard: AuthGuard) -> None:
        self._inner = inner
        self._g = guard

    async def _check(self, context: grpc.aio.ServicerContext, needs: list[Need] | None = None, *, admin: bool = False) -> str | None:
        if auth_off(self._g):
            return None
        try:
            return await self._g.check(context, needs, admin=admin)
        except EtcdError as err:
            await abort_with(context, err)
        raise AssertionError("unreachable")


class GuardedKv(_Guarded, rpc_pb2_grpc.KVServicer):
    def __init__(self, inner: Any, guard: AuthGuard, link_call: LinkCall | None) -> None:
        super().__init__(inner, guard)
        self._call = link_call

    async def _lease_needs(self, leases: list[int], user: str | None, context: grpc.aio.ServicerContext) -> None:
        """etcd's checkLeasePuts: a non-root user may attach a lease only if it may write every key the lease holds."""
        if not leases or user is None or self._call is None or self._g.cache.view.is_root(user):
            return
        needs = []
        try:
            for lease in leases:
                for k in await lease_keys(self._call, lease, self._g.default_timeout_s):
                    needs.append(Need(WRITE, k))
        except EtcdError as err:
            await abort_with(context, err)
        except grpc.aio.AioRpcError as exc:
            await _relay_error(context, exc)
        if needs:
            await self._check(context, needs)

    async def Range(self, request: epb.RangeRequest, context: grpc.aio.ServicerContext) -> epb.RangeResponse:  # noqa: N802
        if not auth_off(self._g):
            await self._check(context, perm.needs_of_range(request))
        return await self._inner.Range(request, context)  # type: ignore[no-any-return]

    async def Put(self, request: epb.PutRequest, context: grpc.aio.ServicerContext) -> epb.PutResponse:  # noqa: N802
        if not auth_off(self._g):  # auth off: a flag to test, nothing to check
            user = await self._check(context, perm.needs_of_put(request))
            if request.lease:
                await self._lease_needs([request.lease], user, context)
        return await self._inner.Put(request, context)  # type: ignore[no-any-return]

    async def DeleteRange(self, request: epb.DeleteRangeRequest, context: grpc.aio.ServicerContext) -> epb.DeleteRangeResponse:  # noqa: N802
        if not auth_off(self._g):
            await self._check(context, perm.needs_of_delete(request))
        return await self._inner.DeleteRange(request, context)  # type: ignore[no-any-return]

    async def Txn(self, request: epb.TxnRequest, context: grpc.aio.ServicerContext) -> epb.TxnResponse:  # noqa: N802
        if not auth_off(self._g):
            user = await self._check(context, perm.needs_of_txn(request))
            leases = sorted(set(perm.txn_leases(request)))
            if leases:
                await self._lease_needs(leases, user, context)
        return await self._inner.Txn(request, context)  # type: ignore[no-any-return]

    async def Compact(self, request: epb.CompactionRequest, context: grpc.aio.ServicerContext) -> epb.CompactionResponse:  # noqa: N802
        await self._check(context)
        return await self._inner.Compact(request, context)  # type: ignore[no-any-return]


def watch_permit(guard: AuthGuard) -> Callable[[Any], Callable[[epb.WatchCreateRequest], Awaitable[str]]]:
    """For WatchServicer.permit: per stream, a check of each create request
    that answers etcd's cancel reason ("" when allowed)."""

    def for_stream(context: Any) -> Callable[[epb.WatchCreateRequest], Awaitable[str]]:
        async def permit(create: epb.WatchCreateRequest) -> str:
            if auth_off(guard):
                return ""
            try:
                await guard.check(context, perm.needs_of_watch(create))
            except EtcdError as err:
                return err.message
            return ""

        return permit

    return for_stream


class GuardedLease(_Guarded, rpc_pb2_grpc.LeaseServicer):
    def __init__(self, inner: Any, guard: AuthGuard, link_call: LinkCall | None) -> None:
        super().__init__(inner, guard)
        self._call = link_call

    async def _keys_needs(self, context: grpc.aio.ServicerContext, lease_ids: list[int], perm_type: int) -> None:
        user = await self._check(context)
        if user is None or self._call is None or self._g.cache.view.is_root(user):
            return
        try:
            needs = [Need(perm_type, k) for lid in lease_ids for k in await lease_keys(self._call, lid, self._g.default_timeout_s)]
        except EtcdError as err:
            await abort_with(context, err)
        except grpc.aio.AioRpcError as exc:
            await _relay_error(context, exc)
        if needs:
            await self._check(context, needs)

    async def LeaseGrant(self, request: epb.LeaseGrantRequest, context: grpc.aio.ServicerContext) -> epb.LeaseGrantResponse:  # noqa: N802
        await self._check(context)
        return await self._inner.LeaseGrant(request, context)  # type: ignore[no-any-return]

    async def LeaseRevoke(self, request: epb.LeaseRevokeRequest, context: grpc.aio.ServicerContext) -> epb.LeaseRevokeResponse:  # noqa: N802
        await self._keys_needs(context, [request.ID], WRITE)
        return await self._inner.LeaseRevoke(request, context)  # type: ignore[no-any-return]

    async def LeaseTimeToLive(self, request: epb.LeaseTimeToLiveRequest, context: grpc.aio.ServicerContext) -> epb.LeaseTimeToLiveResponse:  # noqa: N802
        if request.keys:
            await self._keys_needs(context, [request.ID], READ)
        else:
            await self._check(context)
        return await self._inner.LeaseTimeToLive(request, context)  # type: ignore[no-any-return]

    async def LeaseLeases(self, request: epb.LeaseLeasesRequest, context: grpc.aio.ServicerContext) -> epb.LeaseLeasesResponse:  # noqa: N802
        resp = await self._inner.LeaseLeases(request, context)
        await self._keys_needs(context, [ls.ID for ls in resp.leases], READ)
        return resp  # type: ignore[no-any-return]

    async def LeaseKeepAlive(  # noqa: N802
        self, request_iterator: AsyncIterator[epb.LeaseKeepAliveRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[epb.LeaseKeepAliveResponse]:
        await self._check(context)
        async for resp in self._inner.LeaseKeepAlive(request_iterator, context):
            yield resp


class GuardedLock(_Guarded, v3lock_pb2_grpc.LockServicer):
    async def Lock(self, request: lkpb.LockRequest, context: grpc.aio.ServicerContext) -> lkpb.LockResponse:  # noqa: N802
        prefix = request.name + b"/"
        holder = prefix + b"%x" % request.lease
        await self._check(context, [Need(WRITE, holder), Need(READ, holder), Need(READ, prefix, perm.prefix_end(prefix))])
        return await self._inner.Lock(request, context)  # type: ignore[no-any-return]

    async def Unlock(self, request: lkpb.UnlockRequest, context: grpc.aio.ServicerContext) -> lkpb.UnlockResponse:  # noqa: N802
        await self._check(context, [Need(WRITE, request.key)])
        return await self._inner.Unlock(request, context)  # type: ignore[no-any-return]


class GuardedElection(_Guarded, v3election_pb2_grpc.ElectionServicer):
    async def Campaign(self, request: elpb.CampaignRequest, context: grpc.aio.ServicerContext) -> elpb.CampaignResponse:  # noqa: N802
        prefix = request.name + b"/"
        holder = prefix + b"%x" % request.lease
        await self._check(context, [Need(WRITE, holder), Need(READ, holder), Need(READ, prefix, perm.prefix_end(prefix))])
        return await self._inner.Campaign(request, context)  # type: ignore[no-any-return]

    async def Proclaim(self, request: elpb.ProclaimRequest, context: grpc.aio.ServicerContext) -> elpb.ProclaimResponse:  # noqa: N802
        key = request.leader.key
        await self._check(context, [Need(READ, key), Need(WRITE, key)])
        return await self._inner.Proclaim(request, context)  # type: ignore[no-any-return]

    async def Resign(self, request: elpb.ResignRequest, context: grpc.aio.ServicerContext) -> elpb.ResignResponse:  # noqa: N802
        key = request.leader.key
        await self._check(context, [Need(READ, key), Need(WRITE, key)])
        return await self._inner.Resign(request, context)  # type: ignore[no-any-return]

    async def Leader(self, request: elpb.LeaderRequest, context: grpc.aio.ServicerContext) -> elpb.LeaderResponse:  # noqa: N802
        prefix = request.name + b"/"
        await self._check(context, [Need(READ, prefix, perm.prefix_end(prefix))])
        return await self._inner.Leader(request, context)  # type: ignore[no-any-return]

    async def Observe(  # noqa: N802
        self, request: elpb.LeaderRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[elpb.LeaderResponse]:
        prefix = request.name + b"/"
        await self._check(context, [Need(READ, prefix, perm.prefix_end(prefix))])
        async for resp in self._inner.Observe(request, context):
            yield resp


class GuardedMaintenance(_Guarded, rpc_pb2_grpc.MaintenanceServicer):
    async def Status(self, request: epb.StatusRequest, context: grpc.aio.ServicerContext) -> epb.StatusResponse:  # noqa: N802
        await self._check(context)
        return await self._inner.Status(request, context)  # type: ignore[no-any-return]

    async def Alarm(self, request: epb.AlarmRequest, context: grpc.aio.ServicerContext) -> epb.AlarmResponse:  # noqa: N802
        if request.action == epb.AlarmRequest.GET:
            await self._check(context)
        else:
            await self._check(context, admin=True)
        return await self._inner.Alarm(request, context)  # type: ignore[no-any-return]

    async def Defragment(self, request: epb.DefragmentRequest, context: grpc.aio.ServicerContext) -> epb.DefragmentResponse:  # noqa: N802
        await self._check(context, admin=True)
        return await self._inner.Defragment(request, context)  # type: ignore[no-any-return]

    async def Hash(self, request: epb.HashRequest, context: grpc.aio.ServicerContext) -> epb.HashResponse:  # noqa: N802
        await self._check(context, admin=True)
        return await self._inner.Hash(request, context)  # type: ignore[no-any-return]

    async def HashKV(self, request: epb.HashKVRequest, context: grpc.aio.ServicerContext) -> epb.HashKVResponse:  # noqa: N802
        await self._check(context, admin=True)
        return await self._inner.HashKV(request, context)  # type: ignore[no-any-return]

    async def Snapshot(self, request: epb.SnapshotRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[epb.SnapshotResponse]:  # noqa: N802
        await self._check(context, admin=True)
        async for resp in self._inner.Snapshot(request, context):
            yield resp

    async def MoveLeader(self, request: epb.MoveLeaderRequest, context: grpc.aio.ServicerContext) -> epb.MoveLeaderResponse:  # noqa: N802
        await self._check(context, admin=True)
        return await self._inner.MoveLeader(request, context)  # type: ignore[no-any-return]

    async def Downgrade(self, request: epb.DowngradeRequest, context: grpc.aio.ServicerContext) -> epb.DowngradeResponse:  # noqa: N802
        await self._check(context, admin=True)
        return await self._inner.Downgrade(request, context)  # type: ignore[no-any-return]


class GuardedCluster(_Guarded, rpc_pb2_grpc.ClusterServicer):
    async def MemberList(self, request: epb.MemberListRequest, context: grpc.aio.ServicerContext) -> epb.MemberListResponse:  # noqa: N802
        return await self._inner.MemberList(request, context)  # type: ignore[no-any-return]

    async def MemberAdd(self, request: epb.MemberAddRequest, context: grpc.aio.ServicerContext) -> epb.MemberAddResponse:  # noqa: N802
        await self._check(context, admin=True)
        return await self._inner.MemberAdd(request, context)  # type: ignore[no-any-return]

    async def MemberRemove(self, request: epb.MemberRemoveRequest, context: grpc.aio.ServicerContext) -> epb.MemberRemoveResponse:  # noqa: N802
        await self._check(context, admin=True)
        return await self._inner.MemberRemove(request, context)  # type: ignore[no-any-return]

    async def MemberUpdate(self, request: epb.MemberUpdateRequest, context: grpc.aio.ServicerContext) -> epb.MemberUpdateResponse:  # noqa: N802
        await self._check(context, admin=True)
        return await self._inner.MemberUpdate(request, context)  # type: ignore[no-any-return]

    async def MemberPromote(self, request: epb.MemberPromoteRequest, context: grpc.aio.ServicerContext) -> epb.MemberPromoteResponse:  # noqa: N802
        await self._check(context, admin=True)
        return await self._inner.MemberPromote(request, context)  # type: ignore[no-any-return]


def guard(servicers: dict[str, Any], auth: AuthGuard, link_call: LinkCall | None) -> dict[str, Any]:
    """The etcd servicers by full name, each checked by `auth` before it runs (Watch: through its permit hook)."""
    out = dict(servicers)
    out["etcdserverpb.KV"] = GuardedKv(servicers["etcdserverpb.KV"], auth, link_call)
    out["etcdserverpb.Lease"] = GuardedLease(servicers["etcdserverpb.Lease"], auth, link_call)
    out["etcdserverpb.Cluster"] = GuardedCluster(servicers["etcdserverpb.Cluster"], auth)
    out["etcdserverpb.Maintenance"] = GuardedMaintenance(servicers["etcdserverpb.Maintenance"], auth)
    out["v3lockpb.Lock"] = GuardedLock(servicers["v3lockpb.Lock"], auth)
    out["v3electionpb.Election"] = GuardedElection(servicers["v3electionpb.Election"], auth)
    servicers["etcdserverpb.Watch"].permit = watch_permit(auth)
    return out
