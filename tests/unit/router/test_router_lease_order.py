"""router/lease.py: a LeaseRevoke does not overtake a keep-alive of the same
lease that the router received first. The placement side is a fake whose
keep-alive stream answers only when the test lets it (a stream still being
opened, a slow leader): the revoke must wait for that answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from router.lease import PlacementLink


class FakeCall:
    def __init__(self, log: list[str], answer: asyncio.Event) -> None:
        self._log, self._answer = log, answer
        self._last: epb.LeaseKeepAliveRequest | None = None

    async def write(self, req: epb.LeaseKeepAliveRequest) -> None:
        self._log.append(f"keepalive {req.ID}")
        self._last = req

    async def read(self) -> epb.LeaseKeepAliveResponse:
        await self._answer.wait()
        assert self._last is not None
        return epb.LeaseKeepAliveResponse(ID=self._last.ID, TTL=60)

    def cancel(self) -> None:
        pass


class FakeClient:
    def __init__(self) -> None:
        self.log: list[str] = []
        self.answer = asyncio.Event()
        self.endpoints = ["placement-1"]

    def stub(self, address: str) -> Any:
        client = self

        class Stub:
            def LeaseKeepAlive(self) -> FakeCall:  # noqa: N802
                return FakeCall(client.log, client.answer)

        return Stub()

    async def call(self, method: str, request: Any, *, timeout_s: float | None = None) -> Any:
        self.log.append(f"{method} {request.ID}")
        return epb.LeaseRevokeResponse()


async def test_a_revoke_waits_for_the_keep_alive_received_before_it() -> None:
    link = PlacementLink(["placement-1"])
    fake = FakeClient()
    link.client = fake  # type: ignore[assignment]
    requests: asyncio.Queue[epb.LeaseKeepAliveRequest] = asyncio.Queue()

    async def feed() -> AsyncIterator[epb.LeaseKeepAliveRequest]:
        while True:
            yield await requests.get()

    answers: list[epb.LeaseKeepAliveResponse] = []

    async def relay() -> None:
        async for resp in link.keep_alive(feed()):
            answers.append(resp)

    relaying = asyncio.create_task(relay())
    requests.put_nowait(epb.LeaseKeepAliveRequest(ID=7))
    while fake.log != ["keepalive 7"]:
        await asyncio.sleep(0)  # sleep-ok: one loop turn at a time until the fake saw the write

    async def revoke() -> None:
        await link.after_keep_alives(7, timeout_s=5)
        await link.call("LeaseRevoke", epb.LeaseRevokeRequest(ID=7), timeout_s=5)

    revoking = asyncio.create_task(revoke())
    for _ in range(20):
        await asyncio.sleep(0)  # sleep-ok: give the revoke every chance to (wrongly) go first
    assert fake.log == ["keepalive 7"] and not revoking.done()
    await link.after_keep_alives(8, timeout_s=1)  # another lease: nothing to wait for
    fake.answer.set()
    await asyncio.wait_for(revoking, 5)
    assert fake.log == ["keepalive 7", "LeaseRevoke 7"]
    assert answers and answers[0].TTL == 60
    relaying.cancel()
