"""GroupHost in one process: real RocksDB, the in-memory LocalTransport, virtual time.

The test drives time: each step advances the FakeClock by one tick and lets
the loop run (the persist thread and transport tasks), until a condition
holds or a real-time deadline passes.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from raft.core import ConfState, Message, MessageType, StateRole
from raft.runtime.clock import FakeClock
from raft.runtime.host import GroupHost, HostConfig
from raft.runtime.quiescence import LIVENESS_GROUP
from raft.runtime.registers import RegisterMachine
from raft.storage import FatalStorageError
from raft.storage.rocks import RocksLogStore, open_db
from raft.transport.local import LocalNetwork
from tests.unit.runtime.loopwait import settle

TICK = 0.1


class Cluster:
    def __init__(
        self, tmp: Path, groups: int, *, quiesce_ticks: int = 0, nodes: tuple[int, ...] = (1, 2, 3), candidate: int = 0
    ) -> None:
        self.tmp = tmp
        self.candidate = candidate
        """Non-zero: every new group's designated candidate (create_group's `candidate`)."""
        self.groups = groups
        self.node_ids = nodes
        self.clock = FakeClock()
        self.net = LocalNetwork()
        self.cfg = HostConfig(tick_interval_s=TICK, quiesce_ticks=quiesce_ticks)
        self.hosts: dict[int, GroupHost] = {}
        self.machines: dict[int, dict[int, RegisterMachine]] = {}
        self.stores: dict[int, RocksLogStore] = {}
        self.dbs: dict[int, object] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}

    async def start(self) -> None:
        for n in self.node_ids:
            db = open_db(self.tmp / f"n{n}")
            store = RocksLogStore(db, keep_snapshot_data=True)
            store.recover()
            host = GroupHost(n, store, self.net.transport(n), clock=self.clock, rng=random.Random(n), config=self.cfg)
            self.machines[n] = {}
            for gid in range(1, self.groups + 1):
                self.machines[n][gid] = RegisterMachine(db, gid)
                await host.create_group(
                    gid, self.machines[n][gid], bootstrap=ConfState(voters=self.node_ids),
                    campaign=n == self.candidate, candidate=self.candidate,
                )
            self.hosts[n], self.stores[n], self.dbs[n] = host, store, db
        for a in self.hosts.values():
            for b in self.hosts.values():
                a.set_peer(b.node_id, b._transport.address)  # noqa: SLF001 - test wiring
        for n, h in self.hosts.items():
            self.tasks[n] = asyncio.create_task(h.run())

    async def until(self, pred, *, what: str, timeout_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not pred():
            for n, t in self.tasks.items():
                if t.done() and not t.cancelled() and t.exception() is not None:
                    raise AssertionError(f"host {n} failed") from t.exception()
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            self.clock.advance(TICK)
            await settle(self.stores.values())  # the persist thread and transport tasks; time is the FakeClock's

    def leader(self, gid: int) -> int | None:
        best = None
        for n, h in self.hosts.items():
            if self.tasks[n].done():
                continue
            st = h.status(gid)
            if st.soft_state.role == StateRole.LEADER and (best is None or st.hard_state.term > best[0]):
                best = (st.hard_state.term, n)
        return None if best is None else best[1]

    async def elected(self, gid: int) -> int:
        """Wait until every group has a leader; group gid's leader."""
        await self.until(self.all_led, what="leader")
        lead = self.leader(gid)
        assert lead is not None
        return lead

    def all_led(self) -> bool:
        return all(self.leader(g) is not None for g in range(1, self.groups + 1))

    async def stop(self) -> None:
        for t in self.tasks.values():
            t.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        for n, s in self.stores.items():
            s.close()
            self.dbs[n].close()  # type: ignore[attr-defined]


async def test_group_commit_persists_many_groups_with_one_sync(tmp_path: Path) -> None:
    c = Cluster(tmp_path, groups=20)
    await c.start()
    try:
        await c.until(c.all_led, what="leaders")
        # Put every group's leadership on node 1 so one host persists all proposals.
        for g in range(1, 21):
            lead = c.leader(g)
            if lead != 1:
                assert lead is not None
                c.hosts[lead].transfer_leader(g, 1)
        await c.until(lambda: all(c.leader(g) == 1 for g in range(1, 21)), what="node 1 leads every group")
        h = c.hosts[1]
        syncs0, persisted0 = h.stats.syncs, h.stats.entries_persisted
        results = await asyncio.gather(*(h.propose(g, b"k=%d" % g) for g in range(1, 21)))
        assert all(isinstance(r, int) and r > 0 for r in results)
        entries = h.stats.entries_persisted - persisted0
        syncs = h.stats.syncs - syncs0
        assert entries >= 20
        # 20 groups' proposals, issued in one loop turn, share the same persist rounds.
        assert syncs <= 4, f"{entries} entries took {syncs} syncs"
    finally:
        await c.stop()


async def test_idle_groups_quiesce_and_wake_on_proposal(tmp_path: Path) -> None:
    c = Cluster(tmp_path, groups=10, quiesce_ticks=5)
    await c.start()
    try:
        await c.until(c.all_led, what="leaders")
        await c.until(lambda: all(h.is_quiet(g) for h in c.hosts.values() for g in range(1, 11)), what="all quiet")
        async def ticks(n: int) -> None:
            for _ in range(n):
                c.clock.advance(TICK)
                await settle(c.stores.values())  # let each virtual tick be processed

        await ticks(5)  # answers to heartbeats that were in flight when the groups went quiet
        sent = {n: h.stats.messages_sent for n, h in c.hosts.items()}
        ticked = {n: h.stats.ticks for n, h in c.hosts.items()}
        group_ticks = {n: h.stats.group_ticks for n, h in c.hosts.items()}
        pings = {n: h.stats.pings_sent for n, h in c.hosts.items()}
        await ticks(60)
        assert {n: h.stats.messages_sent for n, h in c.hosts.items()} == sent, "quiet groups sent Raft messages"
        assert {n: h.stats.group_ticks for n, h in c.hosts.items()} == group_ticks, "quiet groups were ticked"
        # The ticker wakes only for liveness (every liveness_ticks), and a
        # node pings each peer once a round at most, whatever the groups.
        rounds = 60 // c.cfg.liveness_ticks
        for n, h in c.hosts.items():
            assert h.stats.ticks - ticked[n] <= rounds + 1, f"node {n}: {h.stats.ticks - ticked[n]} ticker rounds in 60 ticks"
            assert h.stats.pings_sent - pings[n] <= 2 * (rounds + 1), f"node {n}: {h.stats.pings_sent - pings[n]} pings"
        assert sum(h.stats.pings_sent - pings[n] for n, h in c.hosts.items()) > 0, "no liveness pings for quiet groups"
        lead = c.leader(3)
        assert lead is not None
        index = await c.hosts[lead].propose(3, b"x=1")
        assert isinstance(index, int)
        assert not c.hosts[lead].is_quiet(3)
        await c.until(lambda: all(c.machines[n][3].get(b"x") == b"1" for n in c.node_ids), what="applied everywhere")
        assert all(c.hosts[lead].is_quiet(g) for g in (1, 2, 4)), "other groups must stay quiet"
    finally:
        await c.stop()


async def test_answering_a_ping_counts_as_pinging_that_node(tmp_path: Path) -> None:
    """Two nodes that each lead quiet groups of the other's would both ping
    every liveness round; the answer to one's ping already tells the other
    this node is alive, so it stands for this node's own ping that round."""
    c = Cluster(tmp_path, groups=10, quiesce_ticks=5)
    await c.start()
    try:
        await c.until(c.all_led, what="leaders")
        await c.until(lambda: all(h.is_quiet(g) for h in c.hosts.values() for g in range(1, 11)), what="all quiet")
        h = c.hosts[1]
        peers = sorted(h._ping_to)  # noqa: SLF001 - the nodes it pings
        assert peers, "node 1 leads a quiet group"
        period = c.cfg.tick_interval_s * c.cfg.liveness_ticks
        answered = peers[1:]
        assert answered, "node 1 pings both other nodes"
        start = c.clock.monotonic()
        for n in answered:
            h.on_messages(n, [(LIVENESS_GROUP, Message(type=MessageType.HEARTBEAT, to=1, from_=n))])
        assert all(h._last_sent[n] == start for n in answered)  # noqa: SLF001
        h._liveness(start + period * 0.5)  # noqa: SLF001 - one liveness round, half a period after the answers
        assert all(h._last_sent[n] == start for n in answered), "a node answered this round is not pinged too"  # noqa: SLF001
    finally:
        await c.stop()


async def test_quiet_followers_wake_and_elect_when_leader_node_dies(tmp_path: Path) -> None:
    c = Cluster(tmp_path, groups=6, quiesce_ticks=5)
    await c.start()
    try:
        await c.until(c.all_led, what="leaders")
        await c.until(lambda: all(h.is_quiet(g) for h in c.hosts.values() for g in range(1, 7)), what="all quiet")
        victim = c.leader(1)
        assert victim is not None
        led_by_victim = [g for g in range(1, 7) if c.leader(g) == victim]
        c.net.isolate(victim)
        c.tasks[victim].cancel()
        await asyncio.gather(c.tasks[victim], return_exceptions=True)
        await c.until(
            lambda: all(c.leader(g) not in (None, victim) for g in led_by_victim),
            what="new leaders for the dead node's groups",
        )
    finally:
        await c.stop()


async def test_a_quiet_leader_cut_off_from_its_members_steps_down(tmp_path: Path) -> None:
    """Silence from a member wakes a quiet group at its leader too: check-quorum
    then steps a leader cut off from the others down (a quiet leader that
    never ticked would keep believing it leads)."""
    c = Cluster(tmp_path, groups=3, quiesce_ticks=5)
    await c.start()
    try:
        await c.until(c.all_led, what="leaders")
        await c.until(lambda: all(h.is_quiet(g) for h in c.hosts.values() for g in range(1, 4)), what="all quiet")
        victim = c.leader(1)
        assert victim is not None
        c.net.isolate(victim)
        h = c.hosts[victim]
        await c.until(lambda: h._groups[1].node.role != StateRole.LEADER, what="the cut-off leader to step down")  # noqa: SLF001
        await c.until(lambda: any(c.hosts[n]._groups[1].node.role == StateRole.LEADER for n in c.node_ids if n != victim), what="a new leader")  # noqa: SLF001
    finally:
        c.net.heal()
        await c.stop()


async def test_a_proposal_that_cannot_commit_times_out_and_the_host_goes_on(tmp_path: Path) -> None:
    """propose() raises TimeoutError when its entry does not apply in time;
    when that entry commits later (the leader is reachable again), its answer
    finds nobody waiting, and the host and the group carry on."""
    c = Cluster(tmp_path, groups=1)
    await c.start()
    try:
        lead = await c.elected(1)
        c.net.isolate(lead)
        with pytest.raises(TimeoutError):
            await c.hosts[lead].propose(1, b"late=1", timeout_s=0.3)
        assert not c.hosts[lead]._pending  # noqa: SLF001 - nothing left waiting
        c.net.heal()
        await c.until(lambda: all(c.machines[n][1].get(b"late") == b"1" for n in c.node_ids), what="the late entry applied everywhere")
        lead = c.leader(1)
        assert lead is not None
        await c.hosts[lead].propose(1, b"after=2", timeout_s=10)
        assert all(not t.done() for t in c.tasks.values())
    finally:
        c.net.heal()
        await c.stop()


async def test_concurrent_reads_share_one_read_index(tmp_path: Path) -> None:
    c = Cluster(tmp_path, groups=1)
    await c.start()
    try:
        lead = await c.elected(1)
        h = c.hosts[lead]
        await h.propose(1, b"a=1")
        raft = h._groups[1].node.raft  # noqa: SLF001 - counting ReadIndex requests
        calls = []
        orig = h._groups[1].node.read_index  # noqa: SLF001

        def counting(ctx: bytes) -> None:
            calls.append(ctx)
            orig(ctx)

        h._groups[1].node.read_index = counting  # type: ignore[method-assign]  # noqa: SLF001
        indexes = await asyncio.gather(*(h.read_index(1) for _ in range(50)))
        assert len(set(indexes)) == 1 and indexes[0] >= raft.raft_log.committed - 1
        assert 1 <= len(calls) <= 2, f"{len(calls)} ReadIndex requests for 50 concurrent reads"
        # A follower's read index waits until the follower applied it.
        f = next(n for n in c.node_ids if n != lead)
        idx = await c.hosts[f].read_index(1)
        assert c.hosts[f].status(1).applied >= idx
        assert c.machines[f][1].get(b"a") == b"1"
    finally:
        await c.stop()


async def test_storage_failure_stops_the_host(tmp_path: Path) -> None:
    c = Cluster(tmp_path, groups=1, nodes=(1,))
    await c.start()
    try:
        await c.until(c.all_led, what="leader")
        store = c.stores[1]

        class FailingSync:
            """The real DB, whose WAL sync fails (a disk that went away)."""

            def __init__(self, db: object) -> None:
                self._db = db

            def __getattr__(self, name: str) -> object:
                return getattr(self._db, name)

            def flush_wal(self, sync: bool) -> None:
                raise OSError("injected: fsync failed")

        store._db = FailingSync(store._db)  # type: ignore[assignment]  # noqa: SLF001 - failing-sync seam
        with pytest.raises(TimeoutError):
            await c.hosts[1].propose(1, b"x=1", timeout_s=2.0)
        task = c.tasks[1]
        await c.until(task.done, what="host stopped")
        exc = task.exception()
        assert isinstance(exc, BaseExceptionGroup)
        assert any(isinstance(e, FatalStorageError) for e in exc.exceptions)
    finally:
        await c.stop()


async def test_read_index_is_retried_when_its_message_is_lost(tmp_path: Path) -> None:
    c = Cluster(tmp_path, groups=1)
    await c.start()
    try:
        lead = await c.elected(1)
        follower = next(n for n in c.node_ids if n != lead)
        await c.hosts[lead].propose(1, b"a=1")
        # The follower's ReadIndex request to the leader is lost.
        c.net.cut(follower, lead, one_way=True)
        read = asyncio.create_task(c.hosts[follower].read_index(1, timeout_s=60))
        await c.until(lambda: bool(c.hosts[follower]._groups[1].read_inflight), what="read index issued")  # noqa: SLF001
        c.net.heal()
        await c.until(read.done, what="read index answered after a retry")
        assert read.result() >= 1
        assert c.machines[follower][1].get(b"a") == b"1"
    finally:
        await c.stop()


async def test_a_read_does_not_wake_a_new_group_waiting_for_its_candidate(tmp_path: Path) -> None:
    """A ReadIndex on a new group's replica that waits for its candidate's
    first election leaves the group waiting: a Range over 1,000 new shards
    woke every waiting replica, and they all campaigned at once (#20). The
    read is answered once the candidate has won."""
    c = Cluster(tmp_path, groups=2, quiesce_ticks=3, candidate=1)
    c.net.isolate(1)  # the candidate's campaign is lost, for now
    await c.start()
    try:
        h2 = c.hosts[2]
        assert h2.is_quiet(1)
        read = asyncio.create_task(h2.read_index(1, timeout_s=120))
        for _ in range(3 * c.cfg.election_ticks):  # three election timeouts: a woken replica campaigns in one or two
            c.clock.advance(TICK)
            await settle(c.stores.values())
        assert not read.done()
        for n in (2, 3):
            assert c.hosts[n].is_quiet(1), f"node {n}: the read woke the waiting group"
            assert c.hosts[n].status(1).hard_state.term == 1, f"node {n} campaigned"
        c.net.heal()
        await c.until(read.done, what="the read answered once the candidate is elected")
        assert read.result() >= 1
        assert c.leader(1) == 1
    finally:
        await c.stop()


async def ticks(c: Cluster, n: int) -> None:
    for _ in range(n):
        c.clock.advance(TICK)
        await settle(c.stores.values())


async def test_a_new_groups_replicas_answer_their_candidates_votes_without_waking(tmp_path: Path) -> None:
    """The designated candidate's (pre-)vote requests do not wake the replicas
    waiting for it: they answer and keep waiting, so an election slower than
    their timeout (a loaded host) does not make them campaign too. Here the
    answers are lost for three election timeouts; then the candidate wins."""
    c = Cluster(tmp_path, groups=2, quiesce_ticks=3, candidate=1)
    for n in (2, 3):
        c.net.cut(n, 1, one_way=True)  # the candidate's requests arrive, the answers do not
    await c.start()
    try:
        await ticks(c, 3 * c.cfg.election_ticks)
        for n in (2, 3):
            for g in (1, 2):
                assert c.hosts[n].is_quiet(g), f"node {n} group {g}: the candidate's request woke it"
                assert c.hosts[n].status(g).hard_state.term == 1, f"node {n} group {g} campaigned"
        assert c.hosts[1].stats.messages_sent > 0
        c.net.heal()
        await c.until(c.all_led, what="leaders")
        assert c.leader(1) == 1 and c.leader(2) == 1
    finally:
        await c.stop()


async def test_new_groups_campaigns_under_way_are_bounded(tmp_path: Path) -> None:
    """A node starts its new groups' campaigns at most CAMPAIGNS_IN_FLIGHT at a
    time: while none completes (the answers are lost) no more start, until
    the ones under way have had CAMPAIGN_SLOT_ELECTIONS election timeouts."""
    from raft.runtime.ticker import CAMPAIGN_SLOT_ELECTIONS, CAMPAIGNS_IN_FLIGHT, CAMPAIGNS_PER_TICK

    groups = 2 * CAMPAIGNS_IN_FLIGHT + 5
    c = Cluster(tmp_path, groups=groups, quiesce_ticks=3, candidate=1)
    for n in (2, 3):
        c.net.cut(n, 1, one_way=True)
    await c.start()
    try:
        h = c.hosts[1]

        def started() -> int:
            return sum(1 for g in range(1, groups + 1) if not h.is_quiet(g))

        await ticks(c, CAMPAIGNS_IN_FLIGHT // CAMPAIGNS_PER_TICK + 3)
        assert started() == CAMPAIGNS_IN_FLIGHT
        await ticks(c, CAMPAIGN_SLOT_ELECTIONS * c.cfg.election_ticks)
        assert CAMPAIGNS_IN_FLIGHT < started() <= 2 * CAMPAIGNS_IN_FLIGHT
        c.net.heal()
        await c.until(c.all_led, what="leaders", timeout_s=60)
        assert all(c.leader(g) == 1 for g in range(1, groups + 1))
    finally:
        await c.stop()
