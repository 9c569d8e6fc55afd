"""The map watch: every applied MapChange fans out to the WatchMap streams.

A subscriber that falls `limit` responses behind is dropped (its stream ends
with RESOURCE_EXHAUSTED and the router watches again): a slow watcher never
holds up the placement server.

The hub also keeps the last `history` changes (deltas), so that a watcher
that comes back holding map version V (its stream broke, it fell behind, it
moved to another placement server) gets only the changes after V instead
of the whole map (`subscribe(since=V)`). Map versions go up by one per
change on every placement server alike (they apply the same log), so the
history of one server serves a version learnt from another. A whole-map
change (a bootstrap, a snapshot installed) empties the history: the
changes before it cannot be replayed across it.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence

from flotillapb import placement_pb2 as ppb
from placement import convert
from placement.commands import MapChange
from placement.state import PlacementState


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
    def __init__(self, limit: int, history: int = 0) -> None:
        self._limit = limit
        self._subs: set[Subscriber] = set()
        self._history: collections.deque[ppb.WatchMapResponse] = collections.deque(maxlen=max(0, history))

    def __len__(self) -> int:
        return len(self._subs)

    def subscribe(self) -> Subscriber:
        sub = Subscriber(self._limit)
        self._subs.add(sub)
        return sub

    def since(self, map_version: int, current: int) -> list[ppb.WatchMapResponse] | None:
        """The changes after map_version up to current (the map version the
        caller's state is at), or None when the history does not hold all
        of them (the watcher needs the whole map). A watcher ahead of
        `current` (this server lags behind the one it watched) gets nothing
        now: the changes reach it as this server applies them."""
        if map_version <= 0:
            return None
        if map_version >= current:
            return []
        h = self._history
        if not h or h[-1].map_version != current or h[0].map_version > map_version + 1:
            return None
        return [r for r in h if r.map_version > map_version]

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subs.discard(sub)

    def publish_change(self, ch: MapChange, st: PlacementState) -> None:
        """An applied change, with the state at exactly its map version."""
        if ch.full:
            self.publish_full(convert.map_parts_to_pb(st))
        else:
            self.publish(convert.change_to_pb(ch, st))

    def publish(self, resp: ppb.WatchMapResponse) -> None:
        """One change (a delta) to every subscriber, and into the history."""
        h = self._history
        if h.maxlen:
            if h and h[-1].map_version + 1 != resp.map_version:
                h.clear()  # a gap: what came before cannot be replayed across it
            h.append(resp)
        self._send([resp])

    def publish_full(self, parts: Sequence[ppb.WatchMapResponse]) -> None:
        """A whole-map change (its parts) to every subscriber; the history
        starts again after it."""
        self._history.clear()
        self._send(parts)

    def _send(self, resps: Sequence[ppb.WatchMapResponse]) -> None:
        for sub in list(self._subs):
            if len(sub.items) + len(resps) > sub.limit:
                sub.overflow = True
                self._subs.discard(sub)
            else:
                sub.items.extend(resps)
            sub.event.set()
