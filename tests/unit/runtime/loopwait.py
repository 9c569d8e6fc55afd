"""settle(): let the event loop run what one virtual tick started, without
sleeping: a few loop turns for the ready loop's and the transport's tasks,
waiting (on the condition, with a deadline) for every log-store write in
flight, since the sync runs on the store's thread."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from raft.storage.rocks import RocksLogStore

TURNS = 8


async def settle(stores: Iterable[RocksLogStore], *, turns: int = TURNS, timeout_s: float = 10.0) -> None:
    stores = list(stores)
    async with asyncio.timeout(timeout_s):
        for _ in range(turns):
            await asyncio.sleep(0)  # sleep-ok: one loop turn (yield), not a wait for time
            for s in stores:
                await s.wait_idle()
