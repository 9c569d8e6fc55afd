"""Closed timestamps: the leader's promise that no later write in its shard
gets a revision at or below a timestamp.

A write carries ``closed_ts = stamp - 1`` (piggybacked): the apply rule
(shard/hlc.py) makes any later write's revision greater than a closed
timestamp applied before it, so a replica serves reads at any revision <=
max(revision, closed_ts).

Idle shards cost no Raft entries (issue #20): one loop per node runs
*rounds* of the side channel (shard/sidets.py: one message per peer node
for all the idle shards led here, the per-node-pair "closed up to T as of
index I" of CockroachDB's side transport; DESIGN.md, "Revisions and time",
has why a new leader never writes at or below a T a replica used). A
replica's closed timestamp for reads and watch progress is ``closed_ts()``:
the replicated one, or the side channel's once this replica applied the
index it was published at, unless it holds a txn lock or is frozen. Only a
shard led here that is not idle (a member lags or is down, a lock) or whose
members stopped acknowledging still gets a ``ClosedTs`` entry after
``closed_ts_interval_s`` without a proposal (the old way). Before a conf
change the leader logs one too (a new member's stamps then stay above
everything closed before it joined). Work per round is per node pair and per
shard that changed (``on_activity``), not per shard hosted.

The same loop looks for txn locks (shard/txn2pc.py) older than
``txn_recovery_s`` on shards led here, and hands each to the node's lock
resolver: a lock left by a coordinator that died is resolved even if no
request ever meets it (its shard's closed timestamp, and so watch progress,
would stay behind until one did). The shards it looks at are those led here
with a lock applied (``locked``, followed through the applies), not every
shard.
"""

from __future__ import annotations

import asyncio
import logging
import os

from raft.core import Message, MessageType, ProposalDropped
from raft.runtime.host import GroupNotFound
from raft.storage.logstore import FatalStorageError
from shard import hlc, sidets
from shard.codec import encode_command
from shard.node.alarms import SpaceAlarms
from shard.node.state import NodeState
from shard.quota import AlarmType
from shard.txn2pc import TxnLock
from shard.types import ClosedTs, Command

log = logging.getLogger(__name__)

HLC_FLOOR_KEY = b"\x07hlc-floor"
"""A node-level record (0x07: beside space.py's alarms): a timestamp the
node's HLC is at or above after a restart. Side-channel timestamps are
acknowledged only below it."""
FLOOR_AHEAD_MS = 2000
"""How far above an acknowledged timestamp the stored floor is put, so that
it is written about every other second, not every round. A new floor is
written in a worker thread (a synced write on the event loop stalled every
request of the node for the length of an fsync) once a timestamp comes
within half of this of the stored one; a round or an acknowledgement at a
timestamp above the stored floor waits for the next one."""
SLOW_ROUNDS = 5
"""While nobody here or at a peer reads or watches and every shard led here is
idle, a side-channel round runs every SLOW_ROUNDS closed_ts_interval_s (1 s by
default): an idle cluster exchanges a message per node pair a second, and a
closed timestamp lags 1-2 s until someone uses it, then one interval again."""
FAST_HOLD_S = 10.0
"""Rounds stay fast this long after a closed timestamp was last used."""
LAGGING_ROUNDS = 5
"""A peer that acknowledged no round for this many rounds is lagging: the
shards it is a member of get ClosedTs entries again."""


def _persist(engine: object, value: int) -> None:
    raw = value.to_bytes(8, "big")
    db = getattr(engine, "db", None)
    if db is not None:  # RocksEngine: one synced put
        import rocksdict

        opts = rocksdict.WriteOptions()
        opts.sync = True
        db.put(HLC_FLOOR_KEY, raw, opts)
        return
    batch = engine.new_batch()  # type: ignore[attr-defined]
    batch.put(HLC_FLOOR_KEY, raw)
    engine.write(batch)  # type: ignore[attr-defined]


class ClosedTimestamps:
    def __init__(self, state: NodeState, alarms: SpaceAlarms) -> None:
        self._s = state
        self._alarms = alarms
        """The node's quota: acknowledgements carry its NOSPACE to the leaders
        of shards with a replica here, which refuse growing writes then."""
        self._resolving: set[bytes] = set()
        self.publisher = sidets.Publisher(state.node_id, int.from_bytes(os.urandom(6), "big") or 1)
        self.receiver = sidets.Receiver(state.node_id)
        self._dirty: set[int] = set()
        """Shards to look at next round (something happened to them)."""
        self._unpublished: set[int] = set()
        """Shards led here that are not idle: they get ClosedTs entries (the old way)."""
        self._last_closed: dict[int, float] = {}
        """When a shard of _unpublished last proposed (its writes carry closed timestamps)."""
        self._closing: set[int] = set()
        self.locked: set[int] = set()
        """Shards hosted here with a txn lock applied (for the lock sweep)."""
        self.changed: set[int] = set()
        """Shards whose role, term, leader or applied state changed since the
        owner last took them (``StoreNode.take_changed``: the agent reports
        those to placement instead of looking at every shard)."""
        self.stats_changed: set[int] = set()
        """The same, for the heartbeat's per-shard figures (``StoreNode.take_stats_changed``)."""
        self.generation = 0
        """Counts replicas hosted, forgotten, applying or changing role (``StoreNode.replica_changes``)."""
        self.changes = asyncio.Event()
        """Set when ``changed`` gets a shard (``StoreNode.changes``: the agent's report loop waits on it)."""
        raw = state.engine.get(HLC_FLOOR_KEY)
        self._floor = int.from_bytes(raw, "big") if raw is not None else 0
        """The stored floor: this node's HLC is above it after a restart too."""
        self._raising: asyncio.Future[None] | None = None
        """A higher floor being written (in a worker thread)."""
        self.persist_floor = _persist
        """How a floor is stored: (engine, value), synced (tests slow it down)."""
        self._floor_failed: Exception | None = None
        state.hlc.update(self._floor)
        self.rounds = 0
        self._fast_until = 0.0
        """Monotonic time until which rounds run every closed_ts_interval_s (want_fast)."""
        self._used_until = 0.0
        """Monotonic time until which this node's own reads or watches want fast rounds."""
        self._speed_up = asyncio.Event()
        state.host.on_node_message = self._on_message
        state.host.on_activity = self.activity
        state.host.conf_change_barrier = self._barrier
        state.closed_ts_of = self._closed_ts_used
        state.readable_of = self._readable_used
        state.closed_ts_peek = self.closed_ts

    # -- what the node's jobs tell it ---------------------------------------------------
    def _touch(self, shard_id: int) -> None:
        """Something about a replica changed: its owner's readers look at it."""
        self.changed.add(shard_id)
        self.stats_changed.add(shard_id)
        self.generation += 1
        self.changes.set()

    def track(self, shard_id: int) -> None:
        """A replica is hosted here from now on."""
        self._dirty.add(shard_id)
        self._touch(shard_id)
        rep = self._s.replicas.get(shard_id)
        if rep is not None:
            rep.on_applied = self.applied
            self.applied(shard_id)

    def forget(self, shard_id: int) -> None:
        self._touch(shard_id)  # the heartbeat tells placement it is gone
        self.publisher.set_entry(shard_id, None)
        self.receiver.refuse(shard_id, lambda _sid: (0, 0))
        self.receiver.forget(shard_id)
        self._unpublished.discard(shard_id)
        self._last_closed.pop(shard_id, None)
        self.locked.discard(shard_id)

    def proposed(self, shard_id: int) -> None:
        """The leader proposed a write now (it carries a closed timestamp)."""
        self._last_closed[shard_id] = self._s.clock.monotonic()

    def activity(self, shard_id: int) -> None:
        """GroupHost.on_activity: a proposal, conf change, transfer, or a
        change of role, leader or term. Synchronous, before any stamp of the
        new state: a member that moved on stops vouching for the old leader."""
        self._dirty.add(shard_id)
        self._touch(shard_id)
        self.receiver.refuse(shard_id, self._s.host.term_and_leader)

    def applied(self, shard_id: int) -> None:
        """The replica applied entries (or a snapshot)."""
        self._dirty.add(shard_id)
        self._touch(shard_id)
        rep = self._s.replicas.get(shard_id)
        if rep is None:
            return
        sm = rep.sm
        if sm.txn_lock is not None:
            self.locked.add(shard_id)
        else:
            self.locked.discard(shard_id)
        self.receiver.forget(shard_id, below=sm.closed_ts)

    # -- what reads and watches use ----------------------------------------------------------
    def closed_ts(self, shard_id: int) -> int:
        """This replica's closed timestamp: the replicated one, or the side
        channel's where this replica may use it (0: not hosted)."""
        rep = self._s.replicas.get(shard_id)
        if rep is None:
            return 0
        sm = rep.sm
        c = sm.closed_ts
        if sm.txn_lock is not None or sm.frozen:
            return c  # a locked shard's floor holds: no side channel past it
        side = max(self.publisher.stable(shard_id), self.receiver.closed(shard_id, sm.applied_index()))
        return max(c, side)

    def readable_revision(self, shard_id: int) -> int:
        rep = self._s.replicas.get(shard_id)
        if rep is None:
            return 0
        return max(rep.sm.readable_revision, self.closed_ts(shard_id))

    def _closed_ts_used(self, shard_id: int) -> int:
        """closed_ts for a read or a watch: someone uses the side channel here."""
        self.want_fast(local=True)
        return self.closed_ts(shard_id)

    def _readable_used(self, shard_id: int) -> int:
        self.want_fast(local=True)
        return self.readable_revision(shard_id)

    # -- the loop -------------------------------------------------------------------------
    def want_fast(self, *, local: bool = False) -> None:
        """Rounds every closed_ts_interval_s for the next FAST_HOLD_S (a read
        or a watch here used a closed timestamp (local), or a peer's did):
        else, with nothing but idle shards, a round every SLOW_ROUNDS
        intervals. Only local use is passed on to peers (in acknowledgements),
        or two nodes would keep each other fast for ever."""
        now = self._s.clock.monotonic()
        if now >= self._fast_until:
            self._speed_up.set()
        self._fast_until = max(self._fast_until, now + FAST_HOLD_S)
        if local:
            self._used_until = now + FAST_HOLD_S

    def fast(self) -> bool:
        return bool(self._unpublished) or self._s.clock.monotonic() < self._fast_until

    async def run(self, tg: asyncio.TaskGroup) -> None:
        """Until cancelled: a side-channel round every closed_ts_interval_s
        (every SLOW_ROUNDS of them while nobody reads or watches and every
        shard led here is idle), ClosedTs entries for the shards it does not
        cover, the lock sweep."""
        s = self._s
        interval = s.cfg.closed_ts_interval_s
        while True:
            if self.fast():
                await s.clock.sleep(interval)
            else:
                await self._sleep_slow(interval * SLOW_ROUNDS)
            self.round()
            self._sweep_locks(tg)
            self._fallback(tg, interval)

    async def _sleep_slow(self, seconds: float) -> None:
        """Sleep seconds, or until want_fast."""
        self._speed_up.clear()
        sleep = asyncio.ensure_future(self._s.clock.sleep(seconds))
        woken = asyncio.ensure_future(self._speed_up.wait())
        try:
            await asyncio.wait((sleep, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleep.cancel()
            woken.cancel()

    def round(self) -> None:
        """One side-channel round (public for tests)."""
        if self._floor_failed is not None:
            raise FatalStorageError("storing the HLC floor failed") from self._floor_failed
        s = self._s
        host = s.host
        for sid in list(self._dirty | self._unpublished):
            rep = s.replicas.get(sid)
            if rep is None or not s.is_leader(sid):
                self.publisher.set_entry(sid, None)
                self._unpublished.discard(sid)
                self._last_closed.pop(sid, None)
                continue
            sm = rep.sm
            if sm.txn_lock is None and not sm.frozen and host.is_idle_leader(sid):
                st = host.status(sid)
                cs = st.conf_state
                members = tuple(sorted({*cs.voters, *cs.learners, *getattr(cs, "voters_outgoing", ())}))
                self.publisher.set_entry(sid, sidets.Entry(st.hard_state.term, st.applied, members))
                self._unpublished.discard(sid)
                self._last_closed.pop(sid, None)
            else:
                self.publisher.set_entry(sid, None)
                if sid not in self._unpublished:
                    self._unpublished.add(sid)
                    self._last_closed.setdefault(sid, s.clock.monotonic())
        self._dirty.clear()
        # The same step as the idleness checks above: every proposal stamped
        # before ts is in its shard's log at or below the index published.
        ts = s.stamp()
        if not self._below_floor(ts):
            return  # the next round, once the floor is stored above ts
        self.rounds += 1
        for node, msg in self.publisher.next_round(ts).items():
            host.send_node_message(node, Message(type=MessageType.HEARTBEAT, to=node, from_=s.node_id, context=sidets.encode(msg)))

    def _below_floor(self, ts: int) -> bool:
        """Whether ts is at or below the stored floor (the HLC is above ts
        after a restart too, so ts may be vouched for). Starts storing a
        higher one when ts comes within half of FLOOR_AHEAD_MS of it."""
        if self._floor_failed is not None:
            return False
        if self._raising is None and ts + hlc.span(FLOOR_AHEAD_MS // 2) > self._floor:
            self._raising = asyncio.ensure_future(self._raise_floor(ts + hlc.span(FLOOR_AHEAD_MS)))
        return ts <= self._floor

    async def _raise_floor(self, value: int) -> None:
        try:
            await asyncio.to_thread(self.persist_floor, self._s.engine, value)
            self._floor = max(self._floor, value)
        except Exception as exc:  # noqa: BLE001 - a storage failure: the next round raises it (fail-stop)
            self._floor_failed = exc
        finally:
            self._raising = None

    def _on_message(self, from_node: int, m: Message) -> None:
        s = self._s
        try:
            msg = sidets.decode(m.context)
            if msg.get("k") == "pub":
                ts = int(msg["ts"])
                s.hlc.update(ts)
                if not self._below_floor(ts):
                    return  # unacknowledged: the publisher's next round, once the floor is stored above ts
                ack = self.receiver.on_publication(from_node, msg, s.host.term_and_leader)
                if s.clock.monotonic() < self._used_until:
                    ack["fast"] = 1  # reads or watches here: the publisher's rounds speed up too
                if AlarmType.NOSPACE in self._alarms.quota.alarms:
                    ack["nospace"] = 1  # the leaders of shards with a replica here refuse growing writes
                s.host.send_node_message(from_node, Message(type=MessageType.HEARTBEAT_RESP, to=from_node, from_=s.node_id, context=sidets.encode(ack)))
            elif msg.get("k") == "ack":
                if msg.get("fast"):
                    self.want_fast()
                if msg.get("nospace"):
                    self._alarms.quota.acked_nospace.add(from_node)
                else:
                    self._alarms.quota.acked_nospace.discard(from_node)
                self.publisher.on_ack(from_node, msg)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("node=%d: a bad side-channel message from node %d: %s", s.node_id, from_node, exc)

    def _fallback(self, tg: asyncio.TaskGroup, interval: float) -> None:
        """ClosedTs entries for the shards led here the side channel does not
        cover: not idle, or published with a member that stopped acknowledging."""
        s = self._s
        now = s.clock.monotonic()
        pub = self.publisher
        lagging = {n for n, (r, _) in pub.acked.items() if pub.round - r > LAGGING_ROUNDS}
        stale = set(self._unpublished)
        if lagging or len(pub.acked) < len(pub._dests):
            silent = lagging | {n for n in pub._dests if n not in pub.acked}
            stale |= {sid for sid, e in pub.entries.items() if silent.intersection(e.members) and pub.round - e.since > LAGGING_ROUNDS}
        # Nobody reads or watches here or at a peer: a ClosedTs entry per
        # SLOW_ROUNDS intervals is enough (a cluster of 1,000 new shards,
        # many not idle yet, otherwise logs 5,000 entries a second).
        every = interval if now < self._fast_until else interval * SLOW_ROUNDS
        for sid in stale:
            if sid in self._closing or now - self._last_closed.get(sid, 0.0) < every:
                continue
            rep = s.replicas.get(sid)
            if rep is None or rep.sm.frozen or not s.is_leader(sid):
                continue  # a frozen shard applies nothing more: no closed timestamps either
            self._closing.add(sid)
            self._last_closed[sid] = now
            tg.create_task(self._close(sid))

    def _sweep_locks(self, tg: asyncio.TaskGroup) -> None:
        s = self._s
        if s.lock_resolver is None:
            return
        now_ms = s.clock.wall_ms()
        for sid in list(self.locked):
            rep = s.replicas.get(sid)
            lock = rep.sm.txn_lock if rep is not None else None
            if lock is None or lock.txn_id in self._resolving or not s.is_leader(sid):
                continue
            if now_ms - hlc.wall_ms_of(lock.stamp) < s.cfg.txn_recovery_s * 1000:
                continue
            self._resolving.add(lock.txn_id)
            tg.create_task(self._resolve(sid, lock))

    async def _resolve(self, shard_id: int, lock: TxnLock) -> None:
        assert self._s.lock_resolver is not None
        try:
            await self._s.lock_resolver(shard_id, lock)
        except Exception as exc:  # the next sweep tries again
            log.info("shard=%d: resolving the lock of txn %s failed: %s", shard_id, lock.txn_id.hex(), exc)
        finally:
            self._resolving.discard(lock.txn_id)

    async def _close(self, shard_id: int) -> None:
        s = self._s
        ts = s.stamp()
        data = encode_command(Command(ClosedTs(ts), stamp=ts, closed_ts=ts))
        try:
            await s.host.propose(shard_id, data, timeout_s=s.cfg.propose_timeout_s)
        except (ProposalDropped, TimeoutError, GroupNotFound):
            pass  # leadership moved, the group is stuck or was destroyed: the next round tries again
        finally:
            self._closing.discard(shard_id)

    async def _barrier(self, shard_id: int) -> None:
        """Before a conf change proposed here: log the closed timestamp (the
        HLC now is above every side-channel timestamp this node published,
        and the new member applies this entry before it can lead)."""
        s = self._s
        ts = s.stamp()
        data = encode_command(Command(ClosedTs(ts), stamp=ts, closed_ts=ts))
        await s.host.propose(shard_id, data, timeout_s=s.cfg.propose_timeout_s)
