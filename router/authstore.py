"""The router's copy of placement's auth state, and the check of each request.

``AuthCache`` polls the placement leader (PlacementAuth.State: a ReadIndex
on the leader, so each answer is the state as of the moment the poll
started) every ``poll_interval_s`` and holds the latest as an
``AuthView`` (router/authperm.py) plus the simple tokens. The bounds:

- *Staleness.* A request is checked against a state at most
  ``max_staleness_s`` old (its poll started at most that long before the
  check). When the last good poll is older, the request waits for a new one
  (within its deadline; past it: "etcdserver: request timed out"). So a
  revoked permission, a deleted user, an AuthEnable is enforced by every
  router within ``max_staleness_s`` (default 2 s), even a router cut off
  from placement: it then refuses to answer rather than allow.
- *Refusals are never stale.* Before refusing (permission denied, user
  name empty, an unknown token), a router whose state is older than the
  request polls once more (polls are shared: one in flight) and checks
  again, so a grant or a new token is seen at once by every router.
- A router that relays an auth write polls before answering it, so its
  own client sees the change on the next call.

``AuthGuard.check(context, needs)`` is the one check every servicer calls
(router/auth.py): it finds the user of the call (the ``token`` gRPC
metadata, or ``authorization`` from the HTTP gateway: a simple token or a
JWT; else, with --client-cert-auth, the client certificate's common name,
as etcd) and raises EtcdError with etcd's row if the view refuses.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import grpc
import grpc.aio

from flotillapb import placementauth_pb2 as apb
from flotillapb import placementauth_pb2_grpc
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from router.authperm import AuthView, Need, Perm, UserInfo
from router.authtoken import JwtTokens, TokenProvider
from router.etcd_errors import EtcdError
from rpc.placementclient import PlacementClient, PlacementUnavailable

log = logging.getLogger(__name__)

TOKEN_KEYS = ("token", "authorization")
"""etcd's rpctypes.TokenFieldNameGRPC and TokenFieldNameSwagger (what the HTTP gateway passes)."""


class AuthCache:
    def __init__(
        self,
        client: PlacementClient,
        *,
        poll_interval_s: float = 0.5,
        max_staleness_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self.poll_interval_s = poll_interval_s
        self.max_staleness_s = max_staleness_s
        self._clock = clock
        self.view = AuthView()
        self.tokens: dict[str, tuple[str, int]] = {}
        """simple token -> (user, expiry in unix ms)"""
        self.version = 0
        self.token_seq = 0
        self.fresh_as_of = -math.inf
        """Monotonic time the latest applied poll started: the view is the state as of then (or later)."""
        self._asked = False
        """A request asked for the view since the last poll (else the poll loop waits for one)."""
        self._wanted = asyncio.Event()
        self._inflight: asyncio.Task[bool] | None = None
        self._inflight_started = -math.inf
        self.polls = 0

    # -- polling ------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.poll_interval_s)  # sleep-ok: the poll interval
            if not self._asked:
                # Nobody asked for the view since the last poll: poll again
                # only once someone does (an idle router costs placement no
                # ReadIndex; the first request after idling waits for a poll).
                self._wanted.clear()
                await self._wanted.wait()
            self._asked = False

    async def refresh(self, since: float | None = None) -> bool:
        """Until the view is at least as new as `since` (monotonic; None: a
        poll started now). Shares a poll in flight that started late enough.
        False if the poll failed."""
        since = self._clock() if since is None else since
        for _ in range(2):
            if self.fresh_as_of >= since:
                return True
            task = self._inflight
            if task is None or task.done():
                self._inflight_started = self._clock()
                task = self._inflight = asyncio.ensure_future(self._poll(self._inflight_started))
            started = self._inflight_started
            ok = await asyncio.shield(task)
            if started >= since:
                return ok
        return self.fresh_as_of >= since

    async def _poll(self, started: float) -> bool:
        req = apb.AuthStateRequest(known_version=self.version, known_token_seq=self.token_seq)
        try:
            resp = await self._client.call("State", req, timeout_s=max(0.5, self.max_staleness_s), service=placementauth_pb2_grpc.PlacementAuthStub)
        except (PlacementUnavailable, grpc.aio.AioRpcError) as exc:
            log.debug("auth state poll failed: %s", exc)
            return False
        self.polls += 1
        self._apply(resp)
        self.fresh_as_of = max(self.fresh_as_of, started)
        return True

    def _apply(self, resp: apb.AuthStateResponse) -> None:
        if resp.full:
            users = {u.name: UserInfo(u.name, u.password, tuple(u.roles), u.no_password) for u in resp.users}
            roles = {r.name.decode(): tuple(Perm(int(p.permType), p.key, p.range_end) for p in r.keyPermission) for r in resp.roles}
            self.view = AuthView(resp.enabled, resp.revision, users, roles)
            self.tokens = {}
        elif resp.enabled != self.view.enabled or resp.revision != self.view.revision:  # cannot happen without a version change
            self.view = AuthView(resp.enabled, resp.revision, self.view.users, self.view.roles)
        for t in resp.tokens:
            self.tokens[t.token] = (t.user, t.expires_ms)
        self.version, self.token_seq = resp.version, resp.token_seq

    # -- reading ------------------------------------------------------------------------
    def fresh(self) -> bool:
        return self._clock() - self.fresh_as_of <= self.max_staleness_s

    def fresh_for_request(self) -> bool:
        """fresh(), asked on a request's behalf without awaiting current()
        (router/auth.py auth_off): like current(), it keeps the poll loop
        polling while requests come (else, with auth off, the loop would
        stop and the view go stale every few seconds under load)."""
        self._asked = True
        if not self._wanted.is_set():
            self._wanted.set()
        return self._clock() - self.fresh_as_of <= self.max_staleness_s

    async def current(self, deadline: float) -> AuthView:
        """The view, no older than max_staleness_s; waits for a poll if it is (until deadline, a loop time)."""
        self._asked = True
        self._wanted.set()
        if self.fresh():
            return self.view
        loop = asyncio.get_running_loop()
        while loop.time() < deadline:
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    if await self.refresh(self._clock() - self.max_staleness_s / 2):
                        return self.view
            except TimeoutError:
                break
            await asyncio.sleep(min(0.1, max(0.0, deadline - loop.time())))  # sleep-ok: bounded retry of a failed poll
        raise EtcdError("timeout", "this router could not read the auth state from placement within the deadline")

    def token_user(self, token: str) -> str | None:
        got = self.tokens.get(token)
        if got is None:
            return None
        user, expires_ms = got
        if expires_ms <= time.time() * 1000:
            return None
        return user


def metadata_token(context: Any) -> str:
    md = context.invocation_metadata() or ()
    for k, v in md:
        if k in TOKEN_KEYS:
            return v if isinstance(v, str) else v.decode()
    return ""


def common_name(context: Any) -> str:
    """The verified client certificate's common name ("" if none; the HTTP gateway has none, as etcd ignores it there)."""
    auth_context = getattr(context, "auth_context", None)
    if auth_context is None:
        return ""
    names = auth_context().get("x509_common_name") or ()
    return names[0].decode() if names else ""


class AuthGuard:
    def __init__(self, cache: AuthCache, tokens: TokenProvider, *, client_cert_auth: bool, default_timeout_s: float = 7.0) -> None:
        self.cache = cache
        self.tokens = tokens
        self.client_cert_auth = client_cert_auth
        self.default_timeout_s = default_timeout_s
        self.refusals = 0

    def deadline(self, context: Any) -> float:
        left = context.time_remaining()
        return asyncio.get_running_loop().time() + (self.default_timeout_s if left is None else max(0.0, left))

    async def user(self, context: Any, view: AuthView) -> str | None:
        """The user of the call: its token's, else (with --client-cert-auth) its certificate's
        common name, else None. An invalid token raises EtcdError (invalid token, old revision)."""
        token = metadata_token(context)
        if token:
            if isinstance(self.tokens, JwtTokens):
                info = self.tokens.verify(token)
                if info is None:
                    raise EtcdError("invalid_auth_token")
                if info.revision < view.revision:
                    raise EtcdError("auth_old_revision")
                return info.user
            user = self.cache.token_user(token)
            if user is None:
                await self.cache.refresh()  # issued at another router a moment ago?
                user = self.cache.token_user(token)
            if user is None:
                raise EtcdError("invalid_auth_token")
            return user
        if self.client_cert_auth:
            return common_name(context) or None
        return None

    async def identity(self, context: Any) -> tuple[AuthView, str | None]:
        """The fresh view and the call's user (None with auth off or no credentials)."""
        view = await self.cache.current(self.deadline(context))
        if not view.enabled:
            return view, None
        return view, await self.user(context, view)

    async def check(self, context: Any, needs: Iterable[Need] | None = None, *, admin: bool = False) -> str | None:
        """Raise EtcdError unless the call may do `needs` (None: only be
        authenticated) or, with admin, holds the root role. The user (None
        with auth off)."""
        arrival = self.cache._clock()
        wanted = None if needs is None else list(needs)
        for attempt in range(2):
            view = await self.cache.current(self.deadline(context))
            if not view.enabled:
                return None
            user = await self.user(context, view)
            if admin:
                why = view.admin_refusal(user)
            elif wanted is None:
                why = None if user else "user_empty"
            else:
                why = view.refusal(user, wanted)
            if why is None:
                return user
            if attempt == 0 and self.cache.fresh_as_of < arrival:
                await self.cache.refresh(arrival)  # refuse only on a state at least as new as the request
                continue
            self.refusals += 1
            raise EtcdError(why)
        raise AssertionError("unreachable")


async def lease_keys(link_call: Callable[..., Any], lease_id: int, timeout_s: float) -> list[bytes]:
    """The keys attached to a lease (placement's LeaseTimeToLive with keys); [] if it does not exist."""
    try:
        r = await link_call("LeaseTimeToLive", epb.LeaseTimeToLiveRequest(ID=lease_id, keys=True), timeout_s=timeout_s)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return []
        raise
    return list(r.keys)
