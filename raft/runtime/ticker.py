"""GroupHost's ticker: one timer ticks every awake group (quiet ones are
skipped, ``quiescence.py``), keeps node liveness for the quiet groups, and
re-issues ReadIndex requests left unanswered too long.

Node liveness costs work per peer node, never per group, and nothing at all
between nodes with no quiet group in common: a node pings each member of a
quiet group it leads every ``liveness_ticks`` unless it sent that node
something else meanwhile (the store's side channel, ``send_node_message``,
or its answer to that node's ping), and the member answers. A peer silent for an election timeout wakes the
quiet groups that depend on it (``_watched``): at a follower, the groups it
leads; at a leader, the groups it is a member of. A stalled loop (a late
tick) judges no silence until a liveness round passed on time.

While every group is quiet the ticker does not tick: it sleeps until a group
wakes or the next liveness round is due (a few wakeups a second, whatever
the number of groups)."""

from __future__ import annotations

import asyncio

from raft.core import Message, MessageType
from raft.runtime.group import HostState
from raft.runtime.quiescence import LIVENESS_GROUP

__all__ = ["Ticker"]

SILENCE_ELECTIONS = 2
"""A peer is silent after this many election timeouts without a word. Waking
a quiet group whose leader lives costs it a campaign and the leader a
heartbeat round, so with 1,000 groups a false alarm on a loaded host is
costly (a storm of pre-votes): the margin is wide, and a killed process is
noticed sooner anyway (the transport's refused connection: on_peer_down)."""


CANDIDATE_PATIENCE_ELECTIONS = 10
"""How many election timeouts a new group's replica waits for its candidate's node to speak before it campaigns itself."""
CAMPAIGNS_PER_TICK = 10
"""New groups whose candidate this node is start at most this many elections a
tick (100 a second): each elects, then heartbeats every tick until it goes
quiet, and a loop that falls a second behind loses its leaderships again."""
CAMPAIGNS_IN_FLIGHT = 20
"""...and at most this many are under way (started, no leader known yet): the
pace follows how fast elections complete. On a loaded host an election takes
a second or more (each vote waits for a sync), and 100 new ones a second on
each node swamped the loops until check-quorum stepped the new leaders down."""
CAMPAIGN_SLOT_ELECTIONS = 2
"""A campaign counts as under way for at most this many election timeouts (one
that cannot win, its peers down, does not hold up the others)."""


class Ticker(HostState):
    async def _ticker(self) -> None:
        interval = self.cfg.tick_interval_s
        next_at = self._clock.monotonic()
        while True:
            if not self._awake and not self._campaigns:
                await self._sleep_quiet(interval * max(1, self.cfg.liveness_ticks))
                next_at = self._clock.monotonic()
            else:
                next_at += interval
                delay = next_at - self._clock.monotonic()
                if delay < -interval * 5:
                    next_at = self._clock.monotonic()  # fell far behind: do not burst
                    delay = 0.0
                    self._judge_silence_after = next_at + interval * max(1, self.cfg.liveness_ticks)
                await self._clock.sleep(max(0.0, delay))
            # A tick that comes late means this loop was stalled: messages
            # from peers may be waiting unread, so their silence proves
            # nothing until a liveness round has passed on time.
            late = self._clock.monotonic() - next_at
            if late > interval:
                self._judge_silence_after = self._clock.monotonic() + interval * max(1, self.cfg.liveness_ticks)
            self.tick()

    async def _sleep_quiet(self, seconds: float) -> None:
        """Sleep while no group is awake: until one wakes, or seconds passed."""
        self._ticker_wakeup.clear()
        if self._awake or self._campaigns:
            return
        sleep = asyncio.ensure_future(self._clock.sleep(seconds))
        woken = asyncio.ensure_future(self._ticker_wakeup.wait())
        try:
            await asyncio.wait((sleep, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleep.cancel()
            woken.cancel()

    def tick(self) -> None:
        """One tick of every awake group, plus node liveness (public for tests)."""
        self.stats.ticks += 1
        now = self._clock.monotonic()
        self._liveness(now)
        self._start_campaigns()
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
            self.stats.group_ticks += 1
            self._dirty.add(gid)
            if g.read_inflight and self.stats.ticks - g.read_issued_tick > self.cfg.election_ticks:
                self._retry_reads(g)
        if self._dirty:
            self._has_work.set()

    def _start_campaigns(self) -> None:
        """New groups' candidates waiting for their turn: at most
        CAMPAIGNS_PER_TICK start a campaign now, and only while fewer than
        CAMPAIGNS_IN_FLIGHT are under way (registry.create_group)."""
        ticks = self.stats.ticks
        slot_ticks = CAMPAIGN_SLOT_ELECTIONS * self.cfg.election_ticks
        for gid, started in list(self._campaigning.items()):
            g = self._groups.get(gid)
            if g is None or g.node.leader_id or ticks - started > slot_ticks:
                del self._campaigning[gid]
        n = 0
        while self._campaigns and n < CAMPAIGNS_PER_TICK and len(self._campaigning) < CAMPAIGNS_IN_FLIGHT:
            gid = self._campaigns.popleft()
            g = self._groups.get(gid)
            if g is None or not g.quiet:
                continue  # removed, or woken (and so campaigning or led) meanwhile
            n += 1
            self._wake(g)
            self._active(gid)
            g.node.campaign()
            self._dirty.add(gid)
            self._campaigning[gid] = ticks

    def _liveness(self, now: float) -> None:
        if not self._watched:
            return
        period = self.cfg.tick_interval_s * max(1, self.cfg.liveness_ticks)
        for nid in self._ping_to:
            if now - self._last_sent.get(nid, -period) >= period * 0.9:
                self._last_sent[nid] = now
                self.stats.pings_sent += 1
                self._transport.send(nid, LIVENESS_GROUP, Message(type=MessageType.HEARTBEAT, to=nid, from_=self.node_id))
        if now < self._judge_silence_after:
            return
        election_s = self.cfg.election_ticks * self.cfg.tick_interval_s
        timeout = SILENCE_ELECTIONS * election_s
        silent = {p for p in self._watched if now - self._last_heard.setdefault(p, now) > timeout}
        if not silent:
            return
        # A new group's replica waiting for its candidate (no leader yet)
        # gives the candidate's node longer: that node may be starting its
        # campaigns a few a tick (CAMPAIGNS_PER_TICK), and waking every
        # waiting replica at once is the storm the waiting avoids.
        long_silent = {p for p in silent if now - self._last_heard[p] > CANDIDATE_PATIENCE_ELECTIONS * election_s}
        for g in list(self._groups.values()):
            if not g.quiet:
                continue
            waiting = not g.quiet_leader and g.node.leader_id == 0
            if (long_silent if waiting else silent).intersection(g.quiet_peers):
                self._wake(g)
