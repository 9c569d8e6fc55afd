"""The map watch: every applied MapChange fans out to the WatchMap streams.

A subscriber that falls `limit` changes behind is dropped (its stream ends
with RESOURCE_EXHAUSTED and the router watches again from a full map):
a slow watcher never holds up the placement server.
"""

from __future__ import annotations

import asyncio
import collections

from flotillapb import placement_pb2 as ppb


class Subscriber:
    __slots__ = ("items", "event", "overflow", "limit")

    def __init__(self, limit: int) -> None:
        self.items: collections.deque[ppb.WatchMapResponse] = collections.deque()
        self.event = asyncio.Event()
        self.overflow = False
        self.limit = limit

    async def get(self) -> ppb.WatchMapResponse | None:
        """The next change, or None when this subscriber fell too far behind."""
        while not self.items and not self.overflow:
            self.event.clear()
            await self.event.wait()
        return None if self.overflow else self.items.popleft()


class MapWatchHub:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._subs: set[Subscriber] = set()

    def __len__(self) -> int:
        return len(self._subs)

    def subscribe(self) -> Subscriber:
        sub = Subscriber(self._limit)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subs.discard(sub)

    def publish(self, resp: ppb.WatchMapResponse) -> None:
        for sub in list(self._subs):
            if len(sub.items) >= sub.limit:
                sub.overflow = True
                self._subs.discard(sub)
            else:
                sub.items.append(resp)
            sub.event.set()
