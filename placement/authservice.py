"""The PlacementAuth gRPC service (placementauth.proto): decode, call, encode.

Routers relay a client's etcdserverpb.Auth calls here (``Call``: writes go
through placement's Raft log as AuthChange commands, reads are answered by
the leader after a ReadIndex, as etcd answers them through Raft) and poll
the state they check requests against (``State``). Only the leader answers;
refusals become etcd's statuses through placement/service.py's abort_with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio

from flotillapb import placementauth_pb2 as apb
from flotillapb import placementauth_pb2_grpc
from flotillapb.etcd.authpb import auth_pb2
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from placement.authbook import AuthBook, Perm
from placement.commands import AuthChange, AuthOp, RejectCode, Rejected
from placement.errors import RejectedError
from placement.server import PlacementServer
from placement.service import _EXPECTED, abort_with

REQUESTS: dict[str, type[Any]] = {
    "AuthEnable": epb.AuthEnableRequest,
    "AuthDisable": epb.AuthDisableRequest,
    "AuthStatus": epb.AuthStatusRequest,
    "Authenticate": epb.AuthenticateRequest,
    "UserAdd": epb.AuthUserAddRequest,
    "UserGet": epb.AuthUserGetRequest,
    "UserList": epb.AuthUserListRequest,
    "UserDelete": epb.AuthUserDeleteRequest,
    "UserChangePassword": epb.AuthUserChangePasswordRequest,
    "UserGrantRole": epb.AuthUserGrantRoleRequest,
    "UserRevokeRole": epb.AuthUserRevokeRoleRequest,
    "RoleAdd": epb.AuthRoleAddRequest,
    "RoleGet": epb.AuthRoleGetRequest,
    "RoleList": epb.AuthRoleListRequest,
    "RoleDelete": epb.AuthRoleDeleteRequest,
    "RoleGrantPermission": epb.AuthRoleGrantPermissionRequest,
    "RoleRevokePermission": epb.AuthRoleRevokePermissionRequest,
}
"""etcdserverpb.Auth's methods and their request types."""


def change_of(method: str, req: Any, call: apb.AuthCall) -> AuthChange | Rejected:
    """The AuthChange a write method proposes."""
    a = call.actor
    if method == "AuthEnable":
        return AuthChange(AuthOp.ENABLE, a)
    if method == "AuthDisable":
        return AuthChange(AuthOp.DISABLE, a)
    if method == "UserAdd":
        return AuthChange(AuthOp.USER_ADD, a, name=req.name, password=call.password_hash, no_password=req.options.no_password)
    if method == "UserDelete":
        return AuthChange(AuthOp.USER_DELETE, a, name=req.name)
    if method == "UserChangePassword":
        return AuthChange(AuthOp.USER_CHANGE_PASSWORD, a, name=req.name, password=call.password_hash)
    if method == "UserGrantRole":
        return AuthChange(AuthOp.USER_GRANT_ROLE, a, name=req.user, role=req.role)
    if method == "UserRevokeRole":
        return AuthChange(AuthOp.USER_REVOKE_ROLE, a, name=req.name, role=req.role)
    if method == "RoleAdd":
        return AuthChange(AuthOp.ROLE_ADD, a, name=req.name)
    if method == "RoleDelete":
        return AuthChange(AuthOp.ROLE_DELETE, a, name=req.role)
    if method == "RoleGrantPermission":
        if not req.HasField("perm"):
            return Rejected(RejectCode.PERMISSION_NOT_GIVEN, "no permission given")
        p = req.perm
        return AuthChange(AuthOp.ROLE_GRANT_PERMISSION, a, name=req.name, perm_type=int(p.permType), key=p.key, range_end=p.range_end)
    if method == "RoleRevokePermission":
        return AuthChange(AuthOp.ROLE_REVOKE_PERMISSION, a, name=req.role, key=req.key, range_end=req.range_end)
    if method == "Authenticate":
        return AuthChange(
            AuthOp.ISSUE_TOKEN, a, name=req.name, token=call.token, expires_ms=call.expires_ms, now_ms=call.now_ms,
            checked_revision=call.checked_revision,
        )
    raise KeyError(method)


def _perm_pb(p: Perm) -> auth_pb2.Permission:
    return auth_pb2.Permission(permType=p.perm_type, key=p.key, range_end=p.range_end)  # type: ignore[arg-type]


QUERIES: dict[str, Callable[[AuthBook, str, Any], Any]] = {
    "AuthStatus": lambda b, a, r: epb.AuthStatusResponse(enabled=b.enabled, authRevision=b.revision),
    "UserGet": lambda b, a, r: _or(b.user_get(a, r.name), lambda roles: epb.AuthUserGetResponse(roles=roles)),
    "UserList": lambda b, a, r: _or(b.user_list(a), lambda users: epb.AuthUserListResponse(users=users)),
    "RoleGet": lambda b, a, r: _or(b.role_get(a, r.role), lambda perms: epb.AuthRoleGetResponse(perm=[_perm_pb(p) for p in perms])),
    "RoleList": lambda b, a, r: _or(b.role_list(a), lambda roles: epb.AuthRoleListResponse(roles=roles)),
}
"""Reads, answered from the leader's state after a ReadIndex: the response, or a Rejected."""

RESPONSES: dict[str, Callable[[object], Any]] = {
    "AuthEnable": lambda _: epb.AuthEnableResponse(),
    "AuthDisable": lambda _: epb.AuthDisableResponse(),
    "Authenticate": lambda token: epb.AuthenticateResponse(token=str(token)),
    "UserAdd": lambda _: epb.AuthUserAddResponse(),
    "UserDelete": lambda _: epb.AuthUserDeleteResponse(),
    "UserChangePassword": lambda _: epb.AuthUserChangePasswordResponse(),
    "UserGrantRole": lambda _: epb.AuthUserGrantRoleResponse(),
    "UserRevokeRole": lambda _: epb.AuthUserRevokeRoleResponse(),
    "RoleAdd": lambda _: epb.AuthRoleAddResponse(),
    "RoleDelete": lambda _: epb.AuthRoleDeleteResponse(),
    "RoleGrantPermission": lambda _: epb.AuthRoleGrantPermissionResponse(),
    "RoleRevokePermission": lambda _: epb.AuthRoleRevokePermissionResponse(),
}
"""Writes: the response of an applied AuthChange's result."""


def _or(out: Any, make: Callable[[Any], Any]) -> Any:
    return out if isinstance(out, Rejected) else make(out)


def state_response(book: AuthBook, known_version: int, known_token_seq: int) -> apb.AuthStateResponse:
    full = known_version != book.version or known_token_seq > book.token_seq or known_version == 0
    resp = apb.AuthStateResponse(version=book.version, revision=book.revision, enabled=book.enabled, full=full, token_seq=book.token_seq)
    if full:
        for u in book.users.values():
            resp.users.append(apb.AuthUser(name=u.name, password=u.password, roles=u.roles, no_password=u.no_password))
        for r in book.roles.values():
            resp.roles.append(auth_pb2.Role(name=r.name.encode(), keyPermission=[_perm_pb(p) for p in r.perms]))
    for t in sorted(book.tokens.values(), key=lambda t: t.seq):
        if full or t.seq > known_token_seq:
            resp.tokens.append(apb.AuthToken(token=t.token, user=t.user, expires_ms=t.expires_ms, seq=t.seq))
    return resp


class AuthService(placementauth_pb2_grpc.PlacementAuthServicer):
    def __init__(self, server: PlacementServer) -> None:
        self.s = server

    async def Call(self, request: apb.AuthCall, context: grpc.aio.ServicerContext) -> apb.AuthReply:  # type: ignore[type-arg]  # noqa: N802
        req_type = REQUESTS.get(request.method)
        if req_type is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"placement: no Auth method {request.method!r}")
        assert req_type is not None
        req = req_type.FromString(request.request)
        g = self.s.group
        try:
            g.require_leader()
            query = QUERIES.get(request.method)
            if query is not None:
                await g.read_barrier()
                resp = query(g.state.auth, request.actor, req)
                if isinstance(resp, Rejected):
                    raise RejectedError(resp)
            else:
                cmd = change_of(request.method, req, request)
                if isinstance(cmd, Rejected):
                    raise RejectedError(cmd)
                resp = RESPONSES[request.method](await g.propose_ok(cmd))
        except _EXPECTED as exc:
            await abort_with(context, exc)
        return apb.AuthReply(response=resp.SerializeToString())

    async def State(self, request: apb.AuthStateRequest, context: grpc.aio.ServicerContext) -> apb.AuthStateResponse:  # type: ignore[type-arg]  # noqa: N802
        g = self.s.group
        try:
            g.require_leader()
            await g.read_barrier()
        except _EXPECTED as exc:
            await abort_with(context, exc)
        return state_response(g.state.auth, request.known_version, request.known_token_seq)
