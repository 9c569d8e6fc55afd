"""Registration's pace (router/membership.py): until placement answers its
RegisterNode it tries again every REGISTER_RETRY_S, whatever its heartbeat
interval (a store's router heartbeats every 10 s: waiting that long for a
first registration held a playground's readiness back 8 s); once
registered it heartbeats every interval_s, and registers again when
placement says it does not know it."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import grpc.aio
import pytest

from router.membership import EMBEDDED_INTERVAL_S, REGISTER_RETRY_S, Registration
from rpc.placementclient import PlacementUnavailable


class ScriptedPlacement:
    """Answers each call with the next scripted outcome (an exception is raised)."""

    def __init__(self, outcomes: list[object]) -> None:
        self.outcomes = outcomes
        self.calls: list[str] = []

    async def call(self, method: str, req: Any, **kw: Any) -> Any:
        self.calls.append(method)
        out = self.outcomes.pop(0) if self.outcomes else None
        if isinstance(out, BaseException):
            raise out
        return out


class NotFound(grpc.aio.AioRpcError):
    def __init__(self) -> None:
        super().__init__(grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), grpc.aio.Metadata(), details="node unknown")


async def test_registration_retries_fast_then_heartbeats_at_its_interval() -> None:
    placement = ScriptedPlacement([PlacementUnavailable("no leader yet"), None, None, None, NotFound(), None, None])
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)
        if len(slept) == 5:
            raise asyncio.CancelledError

    reg = Registration(placement, 1001, "127.0.0.1:2379", "store1", interval_s=EMBEDDED_INTERVAL_S, sleep=sleep)  # type: ignore[arg-type]
    with pytest.raises(asyncio.CancelledError):
        await reg.run()
    assert placement.calls == [
        "RegisterNode",  # refused: placement not up
        "RegisterNode", "StoreHeartbeat",
        "StoreHeartbeat",
        "StoreHeartbeat",  # NOT_FOUND: placement forgot it
        "RegisterNode", "StoreHeartbeat",
    ]
    assert slept == [REGISTER_RETRY_S, EMBEDDED_INTERVAL_S, EMBEDDED_INTERVAL_S, REGISTER_RETRY_S, EMBEDDED_INTERVAL_S]
    assert reg.registered.is_set()
