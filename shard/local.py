"""The store node's Store servicer called in-process, for the router that
runs inside a store process (`flotilla server --store --router`).

A request for a shard this node serves is a direct call into the servicer
with the message the router built: no gRPC hop, no serialization, no
Forward-stream batching. The answer is the same message a remote node sends,
so the router's retry loop (router/forward.py) treats both alike.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from shard.service import StoreService


class LocalStore:
    def __init__(self, service: StoreService, node_id: int) -> None:
        self.node_id = node_id
        self._handlers: dict[str, Callable[[Any, Any], Awaitable[Any]]] = {
            "range": service.Range,
            "put": service.Put,
            "delete_range": service.DeleteRange,
            "txn": service.Txn,
            "compact": service.Compact,
            "txn_part": service.TxnPart,
        }

    async def call(self, kind: str, request: Any) -> Any:
        return await self._handlers[kind](request, None)
