"""HostSim: a seeded simulation of several store processes, each a real
``GroupHost`` hosting many groups, in virtual time (``virtualtime.py``).

Each process has a ``SimDisk`` (written vs synced), a ``SimLogStore`` over it
(writes inline), ``RegisterMachine`` state machines on the same disk, and a
``FaultyTransport`` on a ``FaultyNetwork`` that knows group ids: it drops,
duplicates and delays messages (per group too), cuts links and isolates
processes. ``crash(node)`` ends a process (unsynced writes are lost) and
``restart(node)`` brings it back from what its disk synced.

``check()`` verifies, per group, after every step: at most one leader per
term (over the whole run), log matching between every two replicas' stored
logs, applied prefixes equal (a replica at applied count c has the same
digest as any other replica ever seen at c: the register machine's digest
chains every applied payload), and nothing acknowledged lost (a proposal
whose future resolved as applied is in the state of every replica that has
applied past its index).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from raft.core import ConfChange, ConfChangeType, ConfState, Entry, ProposalDropped, StateRole
from raft.runtime.host import GroupHost, GroupNotFound, HostConfig
from raft.runtime.registers import PREFIX as REGISTER_PREFIX
from raft.runtime.registers import RegisterMachine
from raft.testing.invariants import SafetyViolation
from raft.testing.simdisk import SimDisk, SimLogStore
from raft.testing.virtualtime import LoopClock
from raft.transport.base import _Peer
from raft.transport.local import LocalNetwork, LocalTransport

__all__ = ["FaultyNetwork", "FaultyTransport", "HostSim", "SimProcess"]


class FaultyNetwork(LocalNetwork):
    """LocalNetwork plus seeded message faults (per group, too)."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.rng = rng
        self.drop_rate = 0.0
        self.dup_rate = 0.0
        self.delay_rate = 0.0
        self.max_delay_s = 0.0
        self.dropped_groups: set[int] = set()

    def transport(self, node_id: int, **kwargs: int) -> FaultyTransport:
        address = f"local:{node_id}#{self._next_incarnation}"
        self._next_incarnation += 1
        return FaultyTransport(self, node_id, address, **kwargs)

    def set_chaos(self, *, drop: float = 0.0, dup: float = 0.0, delay: float = 0.0, max_delay_s: float = 0.0) -> None:
        self.drop_rate, self.dup_rate, self.delay_rate, self.max_delay_s = drop, dup, delay, max_delay_s

    def heal(self) -> None:
        super().heal()
        self.dropped_groups.clear()
        self.set_chaos()


class FaultyTransport(LocalTransport):
    _network: FaultyNetwork

    async def _run_peer(self, peer: _Peer) -> None:
        net = self._network
        loop = asyncio.get_running_loop()
        while True:
            await self._wait_queued(peer)
            if peer.queue.empty():
                continue
            items = self._next_batch(peer, peer.queue.get_nowait())
            dest = net._route(self._node_id, peer.node_id, peer.address)
            if dest is None:
                peer.connected = False
                self._lost(peer, items)
                continue
            peer.connected = True
            self._batch_sent(items)
            now: list[tuple[int, object]] = []
            for item in items:
                if item[0] in net.dropped_groups or net.rng.random() < net.drop_rate:
                    continue
                copies = 2 if net.rng.random() < net.dup_rate else 1
                for _ in range(copies):
                    if net.rng.random() < net.delay_rate:
                        loop.call_later(net.rng.uniform(0, net.max_delay_s), self._late, peer.node_id, peer.address, item)
                    else:
                        now.append(item)
            if now:
                dest._deliver(self._node_id, now)  # type: ignore[arg-type]

    def _late(self, to_node: int, address: str, item: tuple[int, object]) -> None:
        dest = self._network._route(self._node_id, to_node, address)
        if dest is not None and self._running:
            dest._deliver(self._node_id, [item])  # type: ignore[list-item]


@dataclass
class SimProcess:
    node_id: int
    disk: SimDisk
    groups: set[int]
    host: GroupHost | None = None
    store: SimLogStore | None = None
    machines: dict[int, RegisterMachine] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool:
        return self.host is not None


@dataclass
class _Ack:
    group_id: int
    key: bytes
    index: int


class HostSim:
    def __init__(self, seed: int, *, nodes: int, groups: int, replicas: int = 3, cfg: HostConfig) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.cfg = cfg
        self.net = FaultyNetwork(random.Random(self.rng.getrandbits(64)))
        self.members: dict[int, set[int]] = {}
        node_ids = list(range(1, nodes + 1))
        for gid in range(1, groups + 1):
            self.members[gid] = set(self.rng.sample(node_ids, replicas))
        self.procs = {n: SimProcess(n, SimDisk(), {g for g, m in self.members.items() if n in m}) for n in node_ids}
        self.leaders: dict[tuple[int, int], int] = {}  # (group, term) -> leader
        self.digests: dict[tuple[int, int], bytes] = {}  # (group, applied count) -> digest
        self.acks: list[_Ack] = []
        self.tasks: list[asyncio.Task[object]] = []
        self._seq = 0
        self.counts = {"proposed": 0, "acked": 0, "reads": 0, "crashes": 0, "conf_changes": 0, "snapshots": 0, "quiet_seen": 0}

    # -- processes ----------------------------------------------------------------
    async def start(self, node_id: int) -> None:
        p = self.procs[node_id]
        loop = asyncio.get_running_loop()
        p.store = SimLogStore(p.disk, keep_snapshot_data=True)  # RegisterMachine does not stream its snapshots
        p.store.recover()
        host = GroupHost(
            node_id, p.store, self.net.transport(node_id), clock=LoopClock(loop), rng=random.Random(self.rng.getrandbits(64)), config=self.cfg
        )
        p.machines = {}
        for gid in sorted(p.groups):
            sm = p.machines[gid] = RegisterMachine(p.disk, gid)  # type: ignore[arg-type]
            await host.create_group(gid, sm, bootstrap=ConfState(voters=tuple(sorted(self.members[gid]))) if self._initial(gid, node_id) else None)
        p.host = host
        for q in self.procs.values():
            if q.host is not None:
                q.host.set_peer(node_id, host._transport.address)
                host.set_peer(q.node_id, q.host._transport.address)
        p.task = asyncio.create_task(host.run(), name=f"host-{node_id}")

    def _initial(self, gid: int, node_id: int) -> bool:
        return node_id in self._initial_members.get(gid, ())

    async def start_all(self) -> None:
        self._initial_members = {g: frozenset(m) for g, m in self.members.items()}
        for n in sorted(self.procs):
            await self.start(n)

    async def crash(self, node_id: int) -> None:
        p = self.procs[node_id]
        if p.task is None:
            return
        p.task.cancel()
        await asyncio.gather(p.task, return_exceptions=True)
        p.host, p.store, p.task, p.machines = None, None, None, {}
        p.disk = p.disk.crash()
        self.counts["crashes"] += 1

    def failed(self) -> str | None:
        for p in self.procs.values():
            if p.task is not None and p.task.done() and not p.task.cancelled() and p.task.exception() is not None:
                return f"host {p.node_id} failed: {p.task.exception()!r}"
        return None

    # -- client operations ----------------------------------------------------------
    def _live_replicas(self, gid: int) -> list[SimProcess]:
        return [self.procs[n] for n in sorted(self.members[gid]) if self.procs[n].up and gid in self.procs[n].machines]

    def leader(self, gid: int) -> SimProcess | None:
        best = None
        for p in self._live_replicas(gid):
            assert p.host is not None
            try:
                node = p.host._groups[gid].node
            except KeyError:
                continue
            if node.role == StateRole.LEADER and (best is None or node.term > best[0]):
                best = (node.term, p)
        return None if best is None else best[1]

    def propose(self, gid: int) -> None:
        p = self.leader(gid) or (self.rng.choice(self._live_replicas(gid)) if self._live_replicas(gid) else None)
        if p is None or p.host is None:
            return
        self._seq += 1
        key = b"p%d" % self._seq
        host = p.host
        self.counts["proposed"] += 1

        async def run() -> None:
            try:
                index = await host.propose(gid, key + b"=v", timeout_s=30.0)
            except (ProposalDropped, TimeoutError, GroupNotFound):
                return
            assert isinstance(index, int)
            self.acks.append(_Ack(gid, key, index))
            self.counts["acked"] += 1

        self.tasks.append(asyncio.create_task(run()))

    def read(self, gid: int) -> None:
        reps = self._live_replicas(gid)
        if not reps:
            return
        p = self.rng.choice(reps)
        host, sm = p.host, p.machines[gid]
        assert host is not None
        before = [a for a in self.acks if a.group_id == gid]

        async def run() -> None:
            try:
                index = await host.read_index(gid, timeout_s=30.0)
            except (TimeoutError, GroupNotFound, ProposalDropped):
                return
            self.counts["reads"] += 1
            for a in before:  # acknowledged before the read began: visible to it
                if a.index > index or sm.get(a.key) is None:
                    raise SafetyViolation(f"seed={self.seed} group={gid} read at {index} on node {p.node_id} misses ack {a}")

        self.tasks.append(asyncio.create_task(run()))

    async def move_replica(self, gid: int) -> None:
        """Add a replica on a process not hosting gid, then remove another
        one (one server at a time); the new member is caught up by snapshot."""
        lead = self.leader(gid)
        spare = [n for n in sorted(self.procs) if n not in self.members[gid] and self.procs[n].up]
        if lead is None or lead.host is None or not spare:
            return
        new = self.rng.choice(spare)
        q = self.procs[new]
        assert q.host is not None
        if q.host.tombstone(gid) is not None:
            await q.host.clear_tombstone(gid)
        q.groups.add(gid)
        self.members[gid].add(new)
        q.machines[gid] = RegisterMachine(q.disk, gid)  # type: ignore[arg-type]
        await q.host.create_group(gid, q.machines[gid])
        try:
            await lead.host.propose_conf_change(gid, ConfChange(type=ConfChangeType.ADD_NODE, node_id=new), timeout_s=10.0)
        except (ProposalDropped, TimeoutError, GroupNotFound):
            return  # may still commit: the new member stays in members
        self.counts["conf_changes"] += 1
        out = self.rng.choice(sorted(self.members[gid] - {new, lead.node_id}))
        try:
            await lead.host.propose_conf_change(gid, ConfChange(type=ConfChangeType.REMOVE_NODE, node_id=out), timeout_s=10.0)
        except (ProposalDropped, TimeoutError, GroupNotFound):
            return
        self.counts["conf_changes"] += 1
        self.members[gid].discard(out)
        o = self.procs[out]
        o.groups.discard(gid)
        if o.host is not None:
            o.machines.pop(gid, None)
            base = REGISTER_PREFIX + gid.to_bytes(8, "big")
            await o.host.remove_group(gid, tombstone=1, extra_writes=lambda wb: wb.delete_range(base, base + b"\xff"))

    # -- invariants --------------------------------------------------------------------
    def check(self) -> None:
        err = self.failed()
        if err:
            raise SafetyViolation(f"seed={self.seed}: {err}")
        for gid in sorted(self.members):
            logs: list[tuple[int, list[Entry]]] = []
            for p in self._live_replicas(gid):
                assert p.host is not None and p.store is not None
                g = p.host._groups.get(gid)
                if g is None:
                    continue
                node = g.node
                if g.quiet:
                    self.counts["quiet_seen"] += 1
                if node.role == StateRole.LEADER:
                    prev = self.leaders.setdefault((gid, node.term), p.node_id)
                    if prev != p.node_id:
                        raise SafetyViolation(f"seed={self.seed} group={gid} term={node.term}: leaders {prev} and {p.node_id}")
                sm = p.machines[gid]
                prev_digest = self.digests.setdefault((gid, sm.count), sm.digest)
                if prev_digest != sm.digest:
                    raise SafetyViolation(f"seed={self.seed} group={gid} node={p.node_id}: applied prefix of {sm.count} entries differs")
                applied = sm.applied_index()
                for a in self.acks:
                    if a.group_id == gid and a.index <= applied and sm.get(a.key) is None:
                        raise SafetyViolation(f"seed={self.seed} group={gid} node={p.node_id} applied {applied} but lost ack {a}")
                st = p.store.group(gid)
                first, last = st.first_index(), st.last_index()
                logs.append((first, st.entries(first, last + 1) if last >= first else []))
            self._check_log_matching(gid, logs)

    def _check_log_matching(self, gid: int, logs: list[tuple[int, list[Entry]]]) -> None:
        for i in range(len(logs)):
            for j in range(i + 1, len(logs)):
                (fa, ea), (fb, eb) = logs[i], logs[j]
                lo = max(fa, fb)
                hi = min(fa + len(ea), fb + len(eb)) - 1
                matched = False
                for index in range(hi, lo - 1, -1):
                    x, y = ea[index - fa], eb[index - fb]
                    if x.term == y.term:
                        matched = True
                    if matched and x != y:
                        raise SafetyViolation(f"seed={self.seed} group={gid}: logs differ at {index} below a matching entry: {x} vs {y}")

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for p in self.procs.values():
            if p.task is not None:
                p.task.cancel()
        await asyncio.gather(*(p.task for p in self.procs.values() if p.task is not None), return_exceptions=True)
