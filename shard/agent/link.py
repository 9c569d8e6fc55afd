"""The agent's link to placement: the client (rpc/placementclient.py, which
finds the placement leader), the node's LeaseRegistry over it
(shard/leasekeys.py; placement's LeaseAttach), and one-line descriptions of
failed calls for logs."""

from __future__ import annotations

from collections.abc import Sequence

import grpc.aio

from flotillapb import placement_pb2 as ppb
from rpc.placementclient import PlacementClient, PlacementUnavailable
from shard.leasekeys import LeaseChange, LeaseRegistryUnavailable

__all__ = ["PlacementClient", "PlacementLeases", "PlacementUnavailable", "short"]


class PlacementLeases:
    """The node's LeaseRegistry over placement's LeaseAttach."""

    def __init__(self, client: PlacementClient) -> None:
        self._client = client

    async def attach(self, changes: Sequence[LeaseChange]) -> tuple[int, ...]:
        req = ppb.LeaseAttachRequest(changes=[ppb.LeaseKeyChange(lease_id=lid, key=key, detach=det) for lid, key, det in changes])
        try:
            resp = await self._client.call("LeaseAttach", req)
        except (PlacementUnavailable, grpc.aio.AioRpcError) as exc:
            raise LeaseRegistryUnavailable(str(exc).splitlines()[0]) from None
        return tuple(resp.lease_not_found)


def short(exc: BaseException) -> str:
    """One line about a failed call, for logs."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
