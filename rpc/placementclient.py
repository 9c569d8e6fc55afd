"""A client of the placement servers (grpc.aio): calls go to the placement
leader. Store nodes, routers and `flotilla ctl` use it (a shared leaf:
DESIGN.md, "Dependencies").

It keeps the endpoints it was given (any placement server), tries the one it
last found leading first, follows the `placement-leader` trailing metadata a
follower answers with, and moves on to the next endpoint when one is down or
not ready. Errors other than "not here, not now" (UNAVAILABLE,
DEADLINE_EXCEEDED) are raised to the caller as they came; when no endpoint
answered, `PlacementUnavailable`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
import grpc.aio

from flotillapb import placement_pb2 as ppb
from flotillapb import placement_pb2_grpc
from rpc import tls
from rpc.channels import RECONNECT_OPTIONS

log = logging.getLogger(__name__)

LEADER_METADATA_KEY = "placement-leader"
"""The trailing metadata a placement follower answers with: the leader's address."""
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
"""Codes that mean "not here, not now": try the hinted leader or the next server."""


class PlacementUnavailable(Exception):
    """No placement server answered (or none led) within the attempts."""


def parse_endpoints(text: str) -> list[str]:
    """`host:port,host:port` -> ["host:port", ...] (ids, as `1=host:port`, are allowed and ignored)."""
    out = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        out.append(item.partition("=")[2] if "=" in item else item)
    return out


class PlacementClient:
    def __init__(self, endpoints: Sequence[str], *, timeout_s: float = 3.0, rounds: int = 3, backoff_s: float = 0.2) -> None:
        if not endpoints:
            raise ValueError("placement client needs at least one endpoint")
        self._endpoints = list(dict.fromkeys(endpoints))
        self._timeout_s = timeout_s
        self._rounds = rounds
        self._backoff_s = backoff_s
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._watch_turn = 0

    @property
    def endpoints(self) -> list[str]:
        return list(self._endpoints)

    def channel(self, address: str) -> grpc.aio.Channel:
        ch = self._channels.get(address)
        if ch is None:
            ch = self._channels[address] = tls.peer_aio_channel(address, RECONNECT_OPTIONS)
        return ch

    def stub(self, address: str) -> placement_pb2_grpc.PlacementStub:
        return placement_pb2_grpc.PlacementStub(self.channel(address))

    def _prefer(self, address: str) -> None:
        if address in self._endpoints:
            self._endpoints.remove(address)
        self._endpoints.insert(0, address)

    async def call(
        self, method: str, request: Any, *, timeout_s: float | None = None, service: Callable[[grpc.aio.Channel], Any] | None = None
    ) -> Any:
        """Call Placement.<method> (or <method> of another service of the
        placement servers: `service` makes its stub from a channel) on the
        leader; the response."""
        last: BaseException | None = None
        for rnd in range(self._rounds):
            tried: set[str] = set()
            while True:
                address = next((a for a in self._endpoints if a not in tried), None)
                if address is None:
                    break
                tried.add(address)
                try:
                    stub = self.stub(address) if service is None else service(self.channel(address))
                    resp = await getattr(stub, method)(request, timeout=timeout_s or self._timeout_s)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() not in RETRYABLE:
                        raise
                    last = exc
                    hint = dict(exc.trailing_metadata() or ()).get(LEADER_METADATA_KEY)
                    if isinstance(hint, str) and hint and hint not in tried:
                        self._prefer(hint)
                    elif address == self._endpoints[0] and len(self._endpoints) > 1:
                        self._endpoints.append(self._endpoints.pop(0))  # try it last next time
                    continue
                self._prefer(address)
                return resp
            if rnd + 1 < self._rounds:
                await asyncio.sleep(self._backoff_s * (rnd + 1))
        why = f"{last.code().name}: {last.details()}" if isinstance(last, grpc.aio.AioRpcError) else "no endpoint tried"
        raise PlacementUnavailable(f"no placement leader answered {method} ({why})")

    async def watch_map(self) -> AsyncIterator[ppb.WatchMapResponse]:
        """The map watch stream of one placement server (any serves it); the
        caller watches again on error."""
        address = self._endpoints[self._watch_turn % len(self._endpoints)]
        self._watch_turn += 1  # the next watch goes elsewhere
        call = self.stub(address).WatchMap(ppb.WatchMapRequest())
        async for resp in call:
            yield resp

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for ch in channels.values():
            await ch.close()
