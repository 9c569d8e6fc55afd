"""GroupHost's ready loop: one round gathers the Ready of every group with
work, sends what may leave now, persists every group's Ready with ONE log
store write and ONE sync (group commit), sends what waited for the sync,
applies committed entries through each group's StateMachine (effects and
applied index in one more write), answers proposers and readers, then
advances every group:

    rounds:  ready(all dirty groups) -> send messages -> persist+sync (one)
             -> send messages_after_persist -> apply (one write) -> advance

A round that syncs nothing (the leader's commit round: the new commit index,
the entries to apply) has no sync for its messages to overlap with: it sends
them after it answered its proposers and let them run, so a client's reply
or a Forward batch leaves before the commit index goes to the followers
(issue #18).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from raft.core import Entry, EntryKind, Message, MessageType, RaftInvariantError, Ready, decode_conf_change
from raft.runtime import envelope
from raft.runtime.group import Group, HostState
from raft.runtime.snapshots import in_conf, remove_spooled, restore_snapshot, streams
from raft.runtime.statemachine import release_staged
from raft.storage.logstore import LogBatchLike, is_bootstrap_snapshot

__all__ = ["ReadyLoop"]

log = logging.getLogger(__name__)

INLINE_SYNC_MAX_ENTRIES = 4
"""A round that must sync but sent nothing before it (a follower's append,
a vote) and holds at most this many entries syncs on the loop thread: the
fsync is all it waits for, and the executor's two thread hand-offs (wake
the thread, then the loop) cost 0.2-0.4 ms on a busy 2-core host, on the
follower's acknowledgement, which every write waits for (issue #18: the
single-client put's p50 fell about a fifth, local and forwarded alike).
The leader's appends still sync on the executor (their messages to the
followers are written meanwhile), and so does any larger round: under
load the loop has other work to do during the fsync (bench put --clients
256 kept its throughput). Only while syncs are fast (INLINE_SYNC_MAX_S)."""

INLINE_SYNC_MAX_S = 0.002
"""...and only while the last synced write took at most this long (its
round's persist step, hand-offs included): on a disk whose fsync takes
milliseconds, an inline sync would stop the loop (messages, client
requests, every other group) for that long, so syncs go back to the
executor until one is fast again."""


class ReadyLoop(HostState):
    async def _ready_loop(self) -> None:
        while True:
            await self._has_work.wait()
            self._has_work.clear()
            async with self._round_lock:
                await self.process_ready()

    async def process_ready(self) -> None:
        """One round of the ready loop (public for tests)."""
        dirty, self._dirty = self._dirty, set()
        batch: list[tuple[Group, Ready]] = []
        for gid in dirty:
            g = self._groups.get(gid)
            if g is not None and g.proposals:
                self._flush_proposals(g)
            if g is not None and g.node.has_ready():
                batch.append((g, g.node.ready()))
        if not batch:
            return
        self.stats.rounds += 1
        # A round with no sync has nothing for its messages to overlap
        # with: they leave once its proposers are answered (below).
        syncs = any(rd.must_sync for _, rd in batch)
        for g, rd in batch:
            if syncs:
                self._send_all(g, rd.messages)
            if rd.entries:
                g.idle_ticks = 0
                self.stats.entries_persisted += len(rd.entries)
        lb = self._store.stage([(g.group_id, rd) for g, rd in batch])
        if lb.must_sync:
            self.stats.syncs += 1
        if self.crash_hook is not None:
            self.crash_hook("before_persist")
        started = self._clock.monotonic()
        synced = lb.must_sync
        sent_first = syncs and any(rd.messages for _, rd in batch)
        small = sum(len(rd.entries) for _, rd in batch) <= INLINE_SYNC_MAX_ENTRIES
        await self._write(lb, inline_sync=not sent_first and small and self._last_sync_s <= INLINE_SYNC_MAX_S)
        if synced:
            self._last_sync_s = self._clock.monotonic() - started
            self.stats.sync_durations.observe(self._last_sync_s)
        if self.crash_hook is not None:
            self.crash_hook("after_persist")
        for g, rd in batch:
            self._send_all(g, rd.messages_after_persist)
        if self.crash_hook is not None:
            self.crash_hook("before_apply")
        apply_lb = self._store.batch()
        results: list[tuple[int, object]] = []
        spooled: list[str] = []
        for g, rd in batch:
            if rd.snapshot is not None and is_bootstrap_snapshot(rd.snapshot):
                # A new member sent the group's bootstrap snapshot: the empty
                # state (this replica's, being new) at the bootstrap index.
                g.sm.on_applied_index(rd.snapshot.metadata.index, apply_lb.wb)
            elif rd.snapshot is not None:
                if self.crash_hook is not None:
                    self.crash_hook("before_snapshot_apply")
                restore_snapshot(g.sm, rd.snapshot.data, rd.snapshot.metadata.index, apply_lb.wb, spooled)
                self.stats.snapshots_restored += 1
            if rd.committed_entries:
                self._apply(g, rd.committed_entries, apply_lb.wb, results)
        started = self._clock.monotonic()
        wrote = not (apply_lb.wb.is_empty() and not apply_lb.group_ids)
        await self._write(apply_lb, sync=bool(spooled))
        if wrote:
            self.stats.apply_durations.observe(self._clock.monotonic() - started)
        for g, rd in batch:
            if rd.committed_entries or rd.snapshot is not None:
                release_staged(g.sm)
        if self.crash_hook is not None and any(rd.snapshot is not None for _, rd in batch):
            self.crash_hook("after_snapshot_apply")
        remove_spooled(spooled)
        if self.crash_hook is not None:
            self.crash_hook("after_apply")
        for seq, result in results:
            fut = self._pending.get(seq)
            if fut is not None and not fut.done():
                if isinstance(result, BaseException):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)
        if not syncs:
            if results and any(rd.messages for _, rd in batch):
                # Let the answered proposers run first: their answers go out
                # (a client's reply, a Forward stream's batch) before this
                # round's messages (the commit index to followers) take the
                # loop, and reach a follower that forwarded the write before
                # the commit does (issue #18: 0.2-1 ms of a put's latency).
                await asyncio.sleep(0)
            for g, rd in batch:
                self._send_all(g, rd.messages)
        for g, rd in batch:
            g.node.advance(rd)
            for rs in rd.read_states:
                waiters = g.read_inflight.pop(rs.request_ctx, None)
                for w in waiters or ():
                    if not w.done():
                        w.set_result(rs.index)
            if g.read_waiters and not g.read_inflight:
                self._issue_read_index(g)
            if rd.soft_state is not None:
                self._on_soft_state(g, rd)
            self._release_apply_waiters(g)
            if g.node.has_ready():
                self._dirty.add(g.group_id)
                self._has_work.set()
        for g, rd in batch:
            if rd.committed_entries:
                await self._maybe_snapshot(g)

    async def _write(self, lb: LogBatchLike, *, sync: bool | None = None, inline_sync: bool = False) -> None:
        """Write one of a round's batches: nothing at all when nothing was
        staged (a round of messages only, or with nothing to apply); inline
        when it needs no sync, since an unsynced RocksDB write holds the GIL
        anyway (rocks.py's table) and the executor round trip costs more
        than the write (the thread must win the GIL back, then wake the loop:
        0.2-2 ms per hop on a loaded 2-core host, on every commit round).
        A sync goes to the executor, so the loop runs during the fsync,
        unless inline_sync: see INLINE_SYNC_MAX_ENTRIES."""
        if lb.wb.is_empty() and not lb.group_ids:
            lb.discard()
            return
        do_sync = lb.must_sync if sync is None else sync
        if not do_sync or inline_sync:
            try:
                self._store.commit(lb, sync=do_sync)
                return
            except RaftInvariantError:
                # Another write (e.g. create_group's) is still on the
                # executor: an inline write would overtake it. Queue behind
                # it (write() re-checks the batch and raises any other error).
                pass
        await self._store.write(lb, sync=sync)

    def _apply(self, g: Group, entries: tuple[Entry, ...], wb: Any, results: list[tuple[int, object]]) -> None:
        run: list[Entry] = []
        run_seqs: list[int] = []

        def flush() -> None:
            if not run:
                return
            out = g.sm.apply(run, wb)
            for s, res in zip(run_seqs, out):
                if s:
                    results.append((s, res))
            run.clear()
            run_seqs.clear()

        for e in entries:
            if e.kind == EntryKind.CONF_CHANGE:
                flush()
                cc = decode_conf_change(e.data)
                cs = g.node.apply_conf_change(cc)
                on_conf_change = getattr(g.sm, "on_conf_change", None)
                if on_conf_change is not None:  # optional: e.g. a shard's epoch counts conf changes
                    on_conf_change(e.index, wb)
                log.info("group=%d node=%d applied conf change %s %d -> %s", g.group_id, self.node_id, cc.type.name, cc.node_id, cs)
                if cc.context:
                    node_id, seq, _ = envelope.unwrap(cc.context)
                    if node_id == self.node_id:
                        results.append((seq, cs))
            elif e.data:
                node_id, seq, payload = envelope.unwrap(e.data)
                run.append(Entry(e.term, e.index, e.kind, payload))  # not dataclasses.replace: 5x the cost, per applied entry
                run_seqs.append(seq if node_id == self.node_id else 0)
        flush()
        g.sm.on_applied_index(entries[-1].index, wb)
        self.stats.entries_applied += len(entries)

    def _send_all(self, g: Group, msgs: tuple[Message, ...]) -> None:
        for m in msgs:
            if m.type == MessageType.SNAP and streams(g.sm):
                sent = self._send_streamed_snapshot(g, m)
            elif m.type == MessageType.SNAP and not in_conf(m):
                sent = self._send_fresh_snapshot(g, m)
            else:
                sent = self._transport.send(m.to, g.group_id, m)
            if sent:
                self.stats.messages_sent += 1
            else:
                self.stats.messages_dropped += 1
                if m.type == MessageType.SNAP:
                    # Not sent (peer unknown, or its snapshots in flight at the
                    # maximum): say so, or the leader waits for that follower's
                    # snapshot forever; it probes again and resends later.
                    g.node.report_snapshot(m.to, False)
                    self._mark(g.group_id)

    def _on_soft_state(self, g: Group, rd: Ready) -> None:
        node = g.node
        ss = rd.soft_state
        assert ss is not None
        log.info("group=%d node=%d role=%s leader=%d term=%d", g.group_id, self.node_id, ss.role.name, ss.leader_id, node.term)
        if self.on_activity is not None:
            self.on_activity(g.group_id)
        if ss.leader_id and ss.leader_id != g.last_leader:
            g.last_leader = ss.leader_id
            self.stats.leader_changes += 1
        if g.read_inflight and node.leader_id:
            # A ReadIndex request may be lost across a leader change, or was
            # dropped while the group had no leader (a new group's reads wait
            # for its first election: readindex.py): retry. A new leader
            # holds it until it has committed an entry of its term (§6.4).
            self._retry_reads(g)
