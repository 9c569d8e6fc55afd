"""GroupHost's linearizable reads (ReadIndex, thesis §6.4): concurrent
readers of a group share one request; requests lost across a leader change
are re-issued; readers then wait until this replica has applied the index."""

from __future__ import annotations

import asyncio
import struct

from raft.runtime.group import Group, HostState

__all__ = ["ReadIndex"]

_READ_CTX = struct.Struct(">BQQ")


class ReadIndex(HostState):
    async def read_index(self, group_id: int, *, timeout_s: float = 5.0) -> int:
        """Linearizable read barrier (§6.4): returns an index such that this
        replica has applied it and no write committed before the call is
        missing. Concurrent callers share one ReadIndex round trip."""
        g = self._group(group_id)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        g.read_waiters.append(fut)
        # A new group waiting for its first election (registry.create_group:
        # its candidate's turn, or that node to speak) is not woken: that
        # would start its own election timer, and a Range over 1,000 new
        # shards woke every waiting replica into campaigning at once, an
        # election storm of minutes. The request stays with the core (which
        # drops it for want of a leader) and is issued again once the group
        # learns its leader (readyloop._on_soft_state).
        awaiting_first_leader = not g.quiet_leader and g.node.leader_id == 0
        if g.quiet and not awaiting_first_leader:
            # Awake only for this read: quiet again at the first tick after
            # it is answered (not quiesce_ticks later), so a Range over 1,000
            # idle shards costs each one heartbeat round, not four.
            self._wake(g)
            g.idle_ticks = self.cfg.quiesce_ticks
        if not g.read_inflight:
            self._issue_read_index(g)
        async with asyncio.timeout(timeout_s):
            index = await fut
            await self.wait_applied(group_id, index)
        return index

    def _issue_read_index(self, g: Group) -> None:
        waiters, g.read_waiters = g.read_waiters, []
        if not waiters:
            return
        ctx = _READ_CTX.pack(0x52, self.node_id, self._next_seq())
        g.read_inflight[ctx] = waiters
        g.read_issued_tick = self.stats.ticks
        g.node.read_index(ctx)
        self._mark(g.group_id)

    async def wait_applied(self, group_id: int, index: int) -> None:
        g = self._group(group_id)
        if g.node.applied >= index:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        g.apply_waiters.append((index, fut))
        await fut

    def _retry_reads(self, g: Group) -> None:
        """Re-issue outstanding ReadIndex requests under a new context (the
        old request or its answer may be lost; a late answer is ignored)."""
        for waiters in g.read_inflight.values():
            g.read_waiters.extend(w for w in waiters if not w.done())
        g.read_inflight.clear()
        self._issue_read_index(g)

    def _release_apply_waiters(self, g: Group) -> None:
        if not g.apply_waiters:
            return
        applied = g.node.applied
        keep = []
        for index, fut in g.apply_waiters:
            if index <= applied:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((index, fut))
        g.apply_waiters = keep
