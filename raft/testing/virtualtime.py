"""Virtual time for asyncio: an event loop whose clock jumps to the next
timer whenever nothing is ready to run (trio's MockClock with autojump), and
a runtime ``Clock`` that reads it.

Everything that sleeps or times out on the loop (the host's ticker,
``asyncio.timeout``, transport backoff) then runs in virtual time: a
simulated minute takes as long as the work in it, and a run is determined by
its inputs. Real file descriptors are still polled (without blocking), so
``call_soon_threadsafe`` keeps working.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any, Coroutine, TypeVar

__all__ = ["LoopClock", "VirtualTimeLoop", "run_virtual"]

T = TypeVar("T")


class _VirtualSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready  # type: ignore[no-any-return]
        if timeout is None:
            raise RuntimeError("virtual time: nothing is scheduled and nothing can wake the loop (deadlock)")
        self._loop._now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self, start_s: float = 0.0) -> None:
        self._now = start_s
        super().__init__(_VirtualSelector(self))

    def time(self) -> float:
        return self._now


class LoopClock:
    """The runtime Clock over the running loop's (virtual) time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, wall_start_ms: int = 1_700_000_000_000) -> None:
        self._loop = loop
        self._wall0 = wall_start_ms

    def monotonic(self) -> float:
        return self._loop.time()

    def wall_ms(self) -> int:
        return self._wall0 + int(self._loop.time() * 1000)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    """Run coro to completion on a fresh VirtualTimeLoop."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
