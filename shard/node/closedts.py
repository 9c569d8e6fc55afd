"""Closed timestamps: the leader's promise that no later write in its shard
gets a revision at or below a timestamp.

A write carries ``closed_ts = stamp - 1`` (piggybacked), and the leader of a
shard that proposed nothing for ``closed_ts_interval_s`` proposes a
``ClosedTs(now)`` entry. The apply rule (shard/hlc.py) makes any later
write's revision greater than a closed timestamp applied before it, so a
replica serves reads at any revision <= max(revision, closed_ts). A shard
frozen for a merge proposes none (it applies nothing more).

The same sweep looks for txn locks (shard/txn2pc.py) older than
``txn_recovery_s`` on shards led here, and hands each to the node's lock
resolver: a lock left by a coordinator that died is resolved even if no
request ever meets it (its shard's closed timestamp, and so watch progress,
would stay behind until one did).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from raft.core import ProposalDropped
from raft.runtime.host import GroupNotFound
from shard import hlc
from shard.codec import encode_command
from shard.node.state import NodeState
from shard.txn2pc import TxnLock
from shard.types import ClosedTs, Command

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _ShardTimers:
    last_closed: float = 0.0
    closing: bool = False


class ClosedTimestamps:
    def __init__(self, state: NodeState) -> None:
        self._s = state
        self._timers: dict[int, _ShardTimers] = {}
        self._resolving: set[bytes] = set()

    def track(self, shard_id: int) -> None:
        """A replica is hosted here from now on."""
        self._timers[shard_id] = _ShardTimers()

    def forget(self, shard_id: int) -> None:
        self._timers.pop(shard_id, None)

    def proposed(self, shard_id: int) -> None:
        """The leader proposed a write now (it carries a closed timestamp)."""
        self._timers[shard_id].last_closed = self._s.clock.monotonic()

    async def run(self, tg: asyncio.TaskGroup) -> None:
        """Until cancelled: propose a ClosedTs for every shard led here that
        proposed nothing for closed_ts_interval_s, as a task of tg."""
        s = self._s
        interval = s.cfg.closed_ts_interval_s
        while True:
            await s.clock.sleep(interval / 2)
            now = s.clock.monotonic()
            self._sweep_locks(tg)
            for sid in list(s.replicas):
                t = self._timers[sid]
                if t.closing or now - t.last_closed < interval or not s.is_leader(sid):
                    continue
                if s.replicas[sid].sm.frozen:
                    continue  # a frozen shard applies nothing more: no closed timestamps either
                t.closing = True
                t.last_closed = now
                tg.create_task(self._close(sid, t))

    def _sweep_locks(self, tg: asyncio.TaskGroup) -> None:
        s = self._s
        if s.lock_resolver is None:
            return
        now_ms = s.clock.wall_ms()
        for sid, rep in list(s.replicas.items()):
            lock = rep.sm.txn_lock
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

    async def _close(self, shard_id: int, t: _ShardTimers) -> None:
        s = self._s
        ts = s.stamp()
        data = encode_command(Command(ClosedTs(ts), stamp=ts, closed_ts=ts))
        try:
            await s.host.propose(shard_id, data, timeout_s=s.cfg.propose_timeout_s)
        except (ProposalDropped, TimeoutError, GroupNotFound):
            pass  # leadership moved, the group is stuck or was destroyed: the next round tries again
        finally:
            t.closing = False
