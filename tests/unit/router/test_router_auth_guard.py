"""router/auth.py's guard of the KV service with auth off and on: with auth
off in a fresh view a request goes straight to the KV servicer (auth_off,
no check); a stale view is never taken as "off" (the check waits for a
fresh one); with auth on a request is still checked and refused. The
guard's state is a real AuthCache whose view is set as a poll would set it;
its clock is a test clock, and its placement is one that cannot be reached."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest

from flotillapb import placementauth_pb2 as apb
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from router.auth import GuardedKv, auth_off
from router.authperm import AuthView, UserInfo
from router.authstore import AuthCache, AuthGuard
from router.authtoken import provider
from rpc.placementclient import PlacementUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Aborted(Exception):
    pass


class Placement:
    """A placement that answers every State poll with auth off (the network seam: no gRPC here), counting them."""

    def __init__(self) -> None:
        self.calls = 0

    async def call(self, method: str, request: Any, **kwargs: Any) -> apb.AuthStateResponse:
        self.calls += 1
        return apb.AuthStateResponse(version=1, revision=1, enabled=False, full=True)


class Unreachable:
    """A placement that cannot be reached: every poll fails, and is counted."""

    def __init__(self) -> None:
        self.calls = 0

    async def call(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        raise PlacementUnavailable("no placement in this test")


class Context:
    """The servicer context the guard reads: metadata, deadline, abort."""

    def __init__(self, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self._metadata = metadata
        self.aborted: tuple[Any, str] | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def time_remaining(self) -> float:
        return 0.2

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    async def abort(self, code: Any, details: str) -> None:
        self.aborted = (code, details)
        raise Aborted(details)


class KV:
    def __init__(self) -> None:
        self.puts: list[bytes] = []

    async def Put(self, request: epb.PutRequest, context: Any) -> epb.PutResponse:  # noqa: N802
        self.puts.append(request.key)
        return epb.PutResponse()


def _guard(enabled: bool) -> tuple[AuthGuard, Clock, KV, GuardedKv]:
    clock = Clock()
    cache = AuthCache(Unreachable(), clock=clock, max_staleness_s=2.0)  # type: ignore[arg-type]
    users = {"alice": UserInfo("alice", b"", (), True)}
    cache.view = AuthView(enabled, 1, users, {})
    cache.fresh_as_of = clock.now
    guard = AuthGuard(cache, provider("simple", 300), client_cert_auth=False, default_timeout_s=0.2)
    kv = KV()
    return guard, clock, kv, GuardedKv(kv, guard, None)


async def test_auth_off_in_a_fresh_view_passes_the_request_straight_through() -> None:
    guard, clock, kv, guarded = _guard(enabled=False)
    assert auth_off(guard)
    await guarded.Put(epb.PutRequest(key=b"k", value=b"v"), Context())
    assert kv.puts == [b"k"]
    clock.now += 2.5  # no poll for longer than max_staleness_s: not known to be off any more
    assert not auth_off(guard)


async def test_a_stale_view_is_not_taken_as_auth_off() -> None:
    guard, clock, kv, guarded = _guard(enabled=False)
    clock.now += 2.5
    ctx = Context()
    with pytest.raises(Aborted):  # the check waits for a fresh view until the deadline (0.2 s): placement is unreachable
        await guarded.Put(epb.PutRequest(key=b"k", value=b"v"), ctx)
    assert kv.puts == []
    assert guard.cache._client.calls >= 1  # type: ignore[attr-defined]
    assert ctx.aborted is not None and ctx.aborted[1] == "etcdserver: request timed out", ctx.aborted


async def test_auth_on_still_refuses_a_request_without_a_user() -> None:
    guard, clock, kv, guarded = _guard(enabled=True)
    assert not auth_off(guard)
    ctx = Context()
    with pytest.raises(Aborted):
        await guarded.Put(epb.PutRequest(key=b"k", value=b"v"), ctx)
    assert kv.puts == []
    assert ctx.aborted is not None and ctx.aborted[0] == grpc.StatusCode.INVALID_ARGUMENT, ctx.aborted
    assert "user name is empty" in ctx.aborted[1]


async def test_requests_with_auth_off_keep_the_auth_state_polled() -> None:
    """auth_off asks for the view as current() does: while requests come, the
    poll loop (which idles when nobody asks) keeps polling, so the view does
    not go stale every max_staleness_s under load."""
    placement = Placement()
    cache = AuthCache(placement, poll_interval_s=0.01, max_staleness_s=2.0)  # type: ignore[arg-type]
    guard = AuthGuard(cache, provider("simple", 300), client_cert_auth=False)
    loop_task = asyncio.create_task(cache.run())
    try:
        deadline = time.monotonic() + 10
        while cache.polls < 1:
            assert time.monotonic() < deadline, "the first poll never came"
            await asyncio.sleep(0.005)  # sleep-ok: pacing the requests of this test
        first = cache.polls
        while cache.polls < first + 5:
            assert time.monotonic() < deadline, f"polls stopped at {cache.polls} while requests asked"
            assert auth_off(guard)
            await asyncio.sleep(0.005)  # sleep-ok: pacing the requests of this test
    finally:
        loop_task.cancel()
        await asyncio.gather(loop_task, return_exceptions=True)
