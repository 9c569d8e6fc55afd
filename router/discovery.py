"""The Discovery service (proto/flotillapb/discovery.proto) on the router's
client port: the placement servers the router follows, so a tool given a
router's etcd endpoint (`flotilla ctl --endpoints 127.0.0.1:2379`) finds
placement. Read-only; it answers from what the router already knows."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc.aio

from flotillapb import discovery_pb2 as dpb
from flotillapb import discovery_pb2_grpc


class DiscoveryServicer(discovery_pb2_grpc.DiscoveryServicer):
    def __init__(self, endpoints: Callable[[], Sequence[str]], node_id: int) -> None:
        self._endpoints = endpoints
        self._node_id = node_id

    async def Placement(  # noqa: N802 - gRPC method name
        self, request: dpb.PlacementEndpointsRequest, context: grpc.aio.ServicerContext
    ) -> dpb.PlacementEndpointsResponse:
        return dpb.PlacementEndpointsResponse(endpoints=list(self._endpoints()), role="router", node_id=self._node_id)
