"""Clocks: the one place the runtime reads time.

The Raft core never reads a clock (it counts ticks). The runtime's ticker
turns time into ticks through a `Clock`; tests use `FakeClock` and advance it
instead of sleeping (trio's MockClock, Twisted's task.Clock).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a monotonic scale (for deadlines and intervals)."""
        ...

    def wall_ms(self) -> int:
        """Milliseconds since the Unix epoch (for HLC stamps, leases)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock:
    """Virtual time. `sleep` returns only when `advance` moves time past its deadline."""

    def __init__(self, start_s: float = 0.0, wall_start_ms: int = 1_700_000_000_000) -> None:
        self._now = start_s
        self._wall0 = wall_start_ms
        self._start = start_s
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self._now

    def wall_ms(self) -> int:
        return self._wall0 + int((self._now - self._start) * 1000)

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + max(0.0, seconds), next(self._seq), fut))
        await fut

    def advance(self, seconds: float) -> None:
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    @property
    def sleepers(self) -> int:
        return sum(1 for _, _, f in self._sleepers if not f.done())
