"""The ready loop's writes: only a sync goes through the executor.

A round that stages nothing (heartbeats, ReadIndex traffic, a round with
nothing to apply) writes nothing, and an unsynced write (the commit index,
the apply step's effects) is done inline on the loop thread: an executor
round trip costs 0.2-2 ms on a loaded host and sat on the critical path of
every write (commit round) and every linearizable read (issue #9). A small
synced round that sent nothing first (a follower's append) syncs inline
too (issue #18); the leader's appends sync on the executor.

Real RocksDB, the in-memory LocalTransport, virtual time (FakeClock).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from raft.core import ConfState, MessageType, StateRole
from raft.runtime.clock import FakeClock
from raft.runtime.host import GroupHost, HostConfig
from raft.runtime.registers import RegisterMachine
from raft.storage import LogBatch
from raft.storage.rocks import RocksLogStore, open_db
from raft.transport.local import LocalNetwork
from tests.unit.runtime.loopwait import settle

TICK = 0.1
NODES = (1, 2, 3)


class _CountingStore(RocksLogStore):
    """The real store, recording each write that goes to the executor and
    each inline commit (sync flag of each)."""

    def __init__(self, db: Any) -> None:
        super().__init__(db, keep_snapshot_data=True)
        self.executor_writes: list[bool] = []
        self.inline_writes: list[bool] = []

    async def write(self, lb: LogBatch, *, sync: bool | None = None) -> None:
        self.executor_writes.append(lb.must_sync if sync is None else sync)
        await super().write(lb, sync=sync)

    def commit(self, lb: LogBatch, *, sync: bool | None = None) -> None:
        self.inline_writes.append(lb.must_sync if sync is None else sync)
        super().commit(lb, sync=sync)


class _SlowSyncStore(_CountingStore):
    """A disk whose fsync takes 10 ms (of the FakeClock's time): a synced
    write, inline or on the executor, advances the clock."""

    def __init__(self, db: Any, clock: FakeClock) -> None:
        super().__init__(db)
        self.clock = clock

    async def write(self, lb: LogBatch, *, sync: bool | None = None) -> None:
        if lb.must_sync if sync is None else sync:
            self.clock.advance(0.010)
        await super().write(lb, sync=sync)

    def commit(self, lb: LogBatch, *, sync: bool | None = None) -> None:
        if lb.must_sync if sync is None else sync:
            self.clock.advance(0.010)
        super().commit(lb, sync=sync)


def _slow_store(db: Any, clock: FakeClock) -> _CountingStore:
    return _SlowSyncStore(db, clock)


async def _until(pred: Any, clock: FakeClock, tasks: list[asyncio.Task[None]], what: str, *, stores: Any, timeout_s: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not pred():
        for t in tasks:
            if t.done() and not t.cancelled() and t.exception() is not None:
                raise AssertionError("a host failed") from t.exception()
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        clock.advance(TICK)
        await settle(stores.values())  # the persist thread and transport tasks; time is the FakeClock's


class _Three:
    """Three hosts of group 1 over LocalNetwork on one FakeClock, running,
    with a leader elected (`lead`)."""

    def __init__(self, clock: FakeClock, hosts: dict[int, GroupHost], stores: dict[int, Any], machines: dict[int, RegisterMachine], tasks: list[asyncio.Task[None]]) -> None:
        self.clock, self.hosts, self.stores, self.machines, self.tasks = clock, hosts, stores, machines, tasks
        self.lead = 0

    async def until(self, pred: Any, what: str) -> None:
        await _until(pred, self.clock, self.tasks, what, stores=self.stores)

    def leader(self) -> int | None:
        return next((n for n, h in self.hosts.items() if h.status(1).soft_state.role == StateRole.LEADER), None)


@contextlib.asynccontextmanager
async def _three(tmp_path: Path, make_store: Callable[[Any, FakeClock], _CountingStore] = lambda db, _: _CountingStore(db)) -> AsyncIterator[_Three]:
    clock = FakeClock()
    net = LocalNetwork()
    cfg = HostConfig(tick_interval_s=TICK, quiesce_ticks=0)
    hosts: dict[int, GroupHost] = {}
    stores: dict[int, _CountingStore] = {}
    machines: dict[int, RegisterMachine] = {}
    dbs: dict[int, Any] = {}
    for n in NODES:
        dbs[n] = open_db(tmp_path / f"n{n}")
        stores[n] = make_store(dbs[n], clock)
        stores[n].recover()
        hosts[n] = GroupHost(n, stores[n], net.transport(n), clock=clock, rng=random.Random(n), config=cfg)
        machines[n] = RegisterMachine(dbs[n], 1)
        await hosts[n].create_group(1, machines[n], bootstrap=ConfState(voters=NODES))
    for a in hosts.values():
        for b in hosts.values():
            a.set_peer(b.node_id, b._transport.address)  # noqa: SLF001 - test wiring
    tasks = [asyncio.create_task(h.run()) for h in hosts.values()]
    c = _Three(clock, hosts, stores, machines, tasks)
    try:
        await c.until(lambda: (ld := c.leader()) is not None and hosts[ld].status(1).applied >= 2, "a leader")
        lead = c.leader()
        assert lead is not None
        c.lead = lead
        for st in stores.values():
            st.executor_writes.clear()
            st.inline_writes.clear()
        yield c
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for n in NODES:
            stores[n].close()
            dbs[n].close()


async def test_only_syncs_use_the_executor_and_writes_stay_applied(tmp_path: Path) -> None:
    async with _three(tmp_path) as c:
        for i in range(20):
            await c.hosts[c.lead].propose(1, b"k%d=%d" % (i % 4, i))
            await c.hosts[c.lead].read_index(1)
        # Every write acknowledged above is applied on the leader, and the
        # followers catch up through the same path.
        assert c.machines[c.lead].get(b"k3") == b"19"
        await c.until(lambda: all(m.get(b"k3") == b"19" for m in c.machines.values()), "followers apply")

        for n, s in c.stores.items():
            # Only syncs went through the executor ...
            assert all(s.executor_writes), f"node {n}: an unsynced write went through the executor: {s.executor_writes}"
            if n == c.lead:
                # ... the leader's appends (its messages to the followers
                # are written during the fsync) ...
                assert s.executor_writes, "the leader synced no append on the executor"
                # ... and its commit/apply writes were done inline, without sync.
                assert s.inline_writes and not any(s.inline_writes), f"leader's inline writes {s.inline_writes}"
            else:
                # A follower's append of one entry sends nothing before its
                # sync: synced inline (INLINE_SYNC_MAX_ENTRIES), with its
                # commit/apply writes, unsynced.
                assert not s.executor_writes, f"node {n}: executor writes {s.executor_writes}"
                assert any(s.inline_writes) and not all(s.inline_writes), f"node {n}: inline writes {s.inline_writes}"
        # 20 proposals and 20 ReadIndex rounds: empty rounds wrote nothing
        # (at most one apply write and one commit write per proposal round).
        assert len(c.stores[c.lead].inline_writes) <= 2 * 20 + 10, c.stores[c.lead].inline_writes


async def test_a_commit_round_answers_its_proposer_before_it_sends(tmp_path: Path) -> None:
    """A round with nothing to sync (the leader's commit round) has no sync
    for its messages to overlap with: its proposers are answered and run
    first (a client's reply, a Forward batch, leave before the commit index
    to the followers does: issue #18), then its messages go. A round that
    appends still sends before its sync (the followers' appends overlap it)."""
    async with _three(tmp_path) as c:
        host = c.hosts[c.lead]
        events: list[tuple[str, int, int]] = []  # (what, entries, commit)
        transport = host._transport  # noqa: SLF001 - test wiring
        send = transport.send

        def recording_send(to: int, group_id: int, m: Any) -> bool:
            if group_id == 1 and m.type == MessageType.APP:
                events.append(("append", len(m.entries), m.commit))
            return send(to, group_id, m)

        transport.send = recording_send  # type: ignore[method-assign,assignment]
        for i in range(5):
            index = host.status(1).last_index + 1
            await host.propose(1, b"k=%d" % i)
            events.append(("answered", 0, index))
            await c.until(lambda: all(h.status(1).hard_state.commit >= index for h in c.hosts.values()), "followers learn the commit")
            answered = events.index(("answered", 0, index))
            # The entry's append left before the answer (before the leader's
            # sync); the first append carrying its commit, after the answer.
            assert any(e[0] == "append" and e[1] > 0 for e in events[:answered]), events
            first_commit = next(j for j, e in enumerate(events) if e[0] == "append" and e[1] == 0 and e[2] >= index)
            assert answered < first_commit, events
            events.clear()


async def test_a_slow_sync_keeps_follower_appends_on_the_executor(tmp_path: Path) -> None:
    """On a disk whose fsync takes longer than INLINE_SYNC_MAX_S, a
    follower's append syncs on the executor (the loop keeps serving during
    the fsync); at most one inline sync per follower finds out how slow."""
    async with _three(tmp_path, _slow_store) as c:
        for i in range(10):
            await c.hosts[c.lead].propose(1, b"k=%d" % i)
        await c.until(lambda: all(m.get(b"k") == b"9" for m in c.machines.values()), "followers apply")
        for n, s in c.stores.items():
            if n == c.lead:
                continue
            assert sum(s.inline_writes) <= 1, f"node {n}: synced inline on a slow disk: {s.inline_writes}"
            assert sum(s.executor_writes) >= 9, f"node {n}: executor writes {s.executor_writes}"
