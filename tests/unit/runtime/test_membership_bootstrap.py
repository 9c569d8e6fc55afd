"""A node added to a bootstrapped group learns the whole configuration.

A group bootstrapped with its configuration only as index-0 snapshot
metadata is unsafe to grow: a new member is caught up from the log at index
1, never sees the initial voters, takes itself (plus the conf changes it
replays) for the whole group and elects itself: two leaders in one term.
RocksLogStore.bootstrap therefore starts a group from a snapshot at index 1
carrying the configuration, so a new member is always sent a snapshot.

In one process: real RocksDB, LocalTransport, virtual time (as test_host.py).
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from raft.core import ConfChange, ConfChangeType, ConfState, StateRole
from raft.runtime.clock import FakeClock
from raft.runtime.host import GroupHost, HostConfig
from raft.runtime.registers import RegisterMachine
from raft.storage.logstore import BOOTSTRAP_INDEX
from raft.storage.rocks import RocksLogStore, open_db
from raft.transport.local import LocalNetwork
from tests.unit.runtime.loopwait import settle

TICK = 0.1
GROUP = 7


class Nodes:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.clock = FakeClock()
        self.net = LocalNetwork()
        self.cfg = HostConfig(tick_interval_s=TICK, quiesce_ticks=0)
        self.hosts: dict[int, GroupHost] = {}
        self.machines: dict[int, RegisterMachine] = {}
        self.closers: list[object] = []
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.leaders_by_term: dict[int, set[int]] = {}

    async def add(self, node_id: int, bootstrap: ConfState | None) -> GroupHost:
        db = open_db(self.tmp / f"n{node_id}")
        store = RocksLogStore(db, keep_snapshot_data=True)
        store.recover()
        host = GroupHost(node_id, store, self.net.transport(node_id), clock=self.clock, rng=random.Random(node_id), config=self.cfg)
        self.machines[node_id] = RegisterMachine(db, GROUP)
        await host.create_group(GROUP, self.machines[node_id], bootstrap=bootstrap)
        self.hosts[node_id] = host
        self.closers.append((store, db))
        for a in self.hosts.values():
            for b in self.hosts.values():
                a.set_peer(b.node_id, b._transport.address)  # noqa: SLF001 - test wiring
        self.tasks[node_id] = asyncio.create_task(host.run())
        return host

    def observe(self) -> None:
        """Record who leads in which term; at most one leader per term, ever."""
        for n, h in self.hosts.items():
            st = h.status(GROUP)
            if st.soft_state.role == StateRole.LEADER:
                self.leaders_by_term.setdefault(st.hard_state.term, set()).add(n)
        for term, leaders in self.leaders_by_term.items():
            assert len(leaders) == 1, f"two leaders in term {term}: {sorted(leaders)}"

    async def until(self, pred, *, what: str, timeout_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            self.observe()
            if pred():
                return
            for n, t in self.tasks.items():
                if t.done() and not t.cancelled() and t.exception() is not None:
                    raise AssertionError(f"host {n} failed") from t.exception()
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            self.clock.advance(TICK)
            await settle(h._store for h in self.hosts.values())  # noqa: SLF001  # the persist thread and transport tasks; time is the FakeClock's

    async def ticks(self, n: int) -> None:
        left = [n]

        def done() -> bool:
            left[0] -= 1
            return left[0] <= 0

        await self.until(done, what=f"{n} ticks")

    def leader(self) -> int | None:
        for n, h in self.hosts.items():
            if h.status(GROUP).soft_state.role == StateRole.LEADER:
                return n
        return None

    async def stop(self) -> None:
        for t in self.tasks.values():
            t.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        for store, db in self.closers:  # type: ignore[misc]
            store.close()
            db.close()


async def test_bootstrapped_group_starts_from_a_snapshot_carrying_its_voters(tmp_path: Path) -> None:
    c = Nodes(tmp_path)
    try:
        h = await c.add(1, ConfState(voters=(1, 2, 3)))
        st = h.status(GROUP)
        assert st.conf_state.voters == (1, 2, 3)
        assert h._store.group(GROUP).first_index() == BOOTSTRAP_INDEX + 1  # noqa: SLF001
        assert h._store.group(GROUP).snapshot().metadata.index == BOOTSTRAP_INDEX  # noqa: SLF001
    finally:
        await c.stop()


async def test_added_node_learns_the_full_configuration_and_never_leads_alone(tmp_path: Path) -> None:
    c = Nodes(tmp_path)
    try:
        for n in (1, 2, 3):
            await c.add(n, ConfState(voters=(1, 2, 3)))
        await c.until(lambda: c.leader() is not None, what="a leader")
        lead = c.leader()
        assert lead is not None
        for k in range(5):
            await c.hosts[lead].propose(GROUP, b"k%d=v" % k)

        # Node 4 joins with no bootstrap: it knows nothing of the group.
        h4 = await c.add(4, None)
        assert h4.status(GROUP).conf_state.voters == ()
        cs = await c.hosts[lead].propose_conf_change(GROUP, ConfChange(ConfChangeType.ADD_NODE, 4))
        assert cs.voters == (1, 2, 3, 4)
        await c.until(lambda: h4.status(GROUP).conf_state.voters == (1, 2, 3, 4), what="node 4 learns every voter")
        await c.until(lambda: c.machines[4].digest == c.machines[lead].digest, what="node 4 catches up")
        assert c.machines[4].count == c.machines[lead].count

        # Cut node 4 off: with the full configuration it needs 3 of 4 votes,
        # so however long it waits it never leads (observe() checks every
        # step that no term has two leaders).
        c.net.isolate(4)
        await c.ticks(10 * c.cfg.election_ticks)
        assert h4.status(GROUP).soft_state.role != StateRole.LEADER
        assert c.leader() in (1, 2, 3)
        c.net.heal()

        # And the group still works with node 4 in it.
        lead = c.leader()
        assert lead is not None
        await c.hosts[lead].propose(GROUP, b"after=v")
        await c.until(lambda: c.machines[4].digest == c.machines[lead].digest, what="node 4 applies new entries")
    finally:
        await c.stop()


async def test_restart_between_bootstrap_persist_and_apply_sends_a_valid_snapshot(tmp_path: Path) -> None:
    """A crash after the bootstrap snapshot is persisted but before the state
    machine records it applied (the before_apply crash point; found by a
    campaign run): on restart the replica must still be at the bootstrap
    index, or the snapshot it sends to a voter with an empty log (at once,
    before its term's no-op commits) claims index 0 and the host fails
    (Compacted). Nodes 1-3 of voters 1-4 are bootstrapped on disk only, as
    after such a crash; node 4 starts empty."""
    voters = (1, 2, 3, 4)
    for n in (1, 2, 3):
        db = open_db(tmp_path / f"n{n}")
        store = RocksLogStore(db, keep_snapshot_data=True)
        store.recover()
        await store.bootstrap(GROUP, ConfState(voters=voters))
        assert RegisterMachine(db, GROUP).applied_index() == 0
        store.close()
        db.close()
    c = Nodes(tmp_path)
    try:
        for n in (1, 2, 3):
            await c.add(n, ConfState(voters=voters))
            assert c.machines[n].applied_index() == BOOTSTRAP_INDEX
        h4 = await c.add(4, None)
        await c.until(lambda: h4.status(GROUP).conf_state.voters == voters, what="node 4 gets a snapshot")
        lead = c.leader()
        assert lead is not None
        await c.hosts[lead].propose(GROUP, b"k=v")
        await c.until(lambda: c.machines[4].digest == c.machines[lead].digest, what="node 4 catches up")
    finally:
        await c.stop()
