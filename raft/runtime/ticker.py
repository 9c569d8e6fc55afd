"""GroupHost's ticker: one timer ticks every awake group (quiet ones are
skipped, ``quiescence.py``), pings every peer node once per tick whatever the
number of groups (node liveness), wakes the quiet groups of a peer node gone
silent, and re-issues ReadIndex requests left unanswered too long."""

from __future__ import annotations

from raft.core import Message, MessageType
from raft.runtime.group import HostState
from raft.runtime.quiescence import LIVENESS_GROUP

__all__ = ["Ticker"]


class Ticker(HostState):
    async def _ticker(self) -> None:
        interval = self.cfg.tick_interval_s
        next_at = self._clock.monotonic()
        while True:
            next_at += interval
            delay = next_at - self._clock.monotonic()
            if delay < -interval * 5:
                next_at = self._clock.monotonic()  # fell far behind: do not burst
                delay = 0.0
            await self._clock.sleep(max(0.0, delay))
            self.tick()

    def tick(self) -> None:
        """One tick of every awake group, plus node liveness (public for tests)."""
        self.stats.ticks += 1
        now = self._clock.monotonic()
        for nid in self._peers:
            self._transport.send(nid, LIVENESS_GROUP, Message(type=MessageType.HEARTBEAT, to=nid, from_=self.node_id))
        self._wake_groups_of_silent_peers(now)
        qt = self.cfg.quiesce_ticks
        for gid in list(self._awake):
            g = self._groups[gid]
            if qt:
                g.idle_ticks += 1
                if g.idle_ticks >= qt:
                    self._maybe_quiesce(g)
                    if g.quiet:
                        continue
            g.node.tick()
            self._dirty.add(gid)
            if g.read_inflight and self.stats.ticks - g.read_issued_tick > self.cfg.election_ticks:
                self._retry_reads(g)
        self._has_work.set()

    def _wake_groups_of_silent_peers(self, now: float) -> None:
        timeout = self.cfg.election_ticks * self.cfg.tick_interval_s
        silent = {p for p in self._peers if now - self._last_heard.setdefault(p, now) > timeout}
        if not silent or len(self._awake) == len(self._groups):
            return
        for g in self._groups.values():
            if g.quiet and g.node.leader_id in silent:
                self._wake(g)
