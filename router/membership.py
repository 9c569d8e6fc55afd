"""A placement-backed router registers with placement as a ROUTER node and
heartbeats, so placement's map lists every router that is up and MemberList
(router/cluster.py) answers with all of them: clients that sync their
endpoints (clientv3's AutoSyncInterval, `etcdctl --endpoints` discovery)
stay on routers. A router unheard for placement's --down-after is marked
down and no longer listed.

A router inside a store process (`flotilla server --store` serving clients)
is heard with the store's own heartbeats (StoreHeartbeatRequest.routers):
its own heartbeat goes every EMBEDDED_INTERVAL_S, only so that it registers
again if placement forgot it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import grpc
import grpc.aio

from flotillapb import placement_pb2 as ppb
from rpc.placementclient import PlacementClient, PlacementUnavailable

log = logging.getLogger(__name__)

EMBEDDED_INTERVAL_S = 10.0
REGISTER_RETRY_S = 1.0
"""Until registered, attempts go at least this often (placement may not be up yet)."""


class Registration:
    def __init__(
        self,
        client: PlacementClient,
        node_id: int,
        address: str,
        name: str,
        *,
        interval_s: float = 1.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._client = client
        self._sleep = sleep
        self.node_id = node_id
        self.address = address
        self.name = name
        self.interval_s = interval_s
        self.registered = asyncio.Event()

    async def run(self) -> None:
        registered = False
        while True:
            try:
                if not registered:
                    req = ppb.RegisterNodeRequest(
                        node_id=self.node_id, kind=ppb.ROUTER, address=self.address, labels=[ppb.Label(key="name", value=self.name)]
                    )
                    await self._client.call("RegisterNode", req)
                    registered = True
                    self.registered.set()
                    log.info("router node=%d registered with placement at %s", self.node_id, self.address)
                await self._client.call("StoreHeartbeat", ppb.StoreHeartbeatRequest(node_id=self.node_id))
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    registered = False  # placement forgot us (a new cluster): register again
                log.debug("router registration: %s %s", exc.code().name, exc.details())
            except PlacementUnavailable as exc:
                log.debug("router registration: %s", exc)
            await self._sleep(self.interval_s if registered else min(self.interval_s, REGISTER_RETRY_S))
