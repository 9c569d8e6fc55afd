"""A deterministic simulation of the scheduler at scale (PURE).

Issue #20, "Scale": the pure scheduler (placement/scheduler.py) and the
operator table (placement/operators.py) run against a `PlacementState`
built directly (no processes, no Raft, no network), in virtual time:

- the cluster: `nodes` store nodes in `zones` zones, `shards` shards placed
  as placement's Bootstrap places them (placement/state.py's
  `place_replicas`), with skewed (Pareto) sizes and write rates; every
  shard elects a leader among its voters (a seeded hash picks which);
- a round (every `round_s` of virtual time, the rebalancer's 0.5 s): every
  node not lost is heard; up nodes unheard for `down_after_s` are marked
  DOWN (placement/registry.py); shards whose leader was lost elect a new
  one among their live voters (when most of them live); each running
  operator's current step (`next_action`: a leader removing itself first
  hands leadership on) is carried out on the map, one step per operator per
  round, unless it aims at a node that is not live (the rebalancer
  withholds it; the operator then times out); `OperatorTable.confirm`
  advances the operators from the map, as the rebalancer does from shard
  reports; then `schedule` runs and its operators start.
- the map is changed directly (a new epoch, the leader hint), not through
  `PlacementState.apply(ReportShard)`, whose merge check scans every shard
  per report (fine for a real cluster's report rate, too slow for
  thousands of simulated reports per round); node changes go through
  `apply` (RegisterNode, SetNodeState).
- loads: a split divides its shard's size and write rate by slot count.

Events (`run_events`): the initial cluster, `added` nodes joining (spread
over the zones), `lost` nodes dying (no longer heard: suspect after 3 s,
DOWN after `down_after_s`, then repaired), `drained` nodes drained, and a
hot key range (`hot_shards` adjacent shards whose write rate goes to
`hot_factor` times the split threshold: they split, and their halves split
again while above it). After each event the rounds run until the scheduler
has nothing to do and no operator runs; the event's `EventReport` tells
the rounds, the operators by kind, the most any one shard was moved, the
operators that undid an earlier one of the same event (a replica added
where the event removed one, or removed where it added one; leadership
transferred back along a transfer of the same event), and the balance at
the end (`Balance`).

Nothing here reads a clock or a random generator: a seeded SplitMix64 makes
the data, and the caller may pass a `timer` (e.g. time.process_time) to
measure the CPU time of each `schedule` call.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from placement.commands import RegisterNode, SetNodeState
from placement.model import Epoch, NodeKind, NodeState, Replica, Shard
from placement.operators import (
    AddLearner,
    Operator,
    OperatorKind,
    OperatorTable,
    Promote,
    RemoveReplica,
    Split,
    Step,
    TransferLeader,
    next_action,
    step_node,
)
from placement.scheduler import SchedulerConfig, ShardLoad, Stats, live_nodes, schedule
from placement.state import PlacementState, initial_slots, place_replicas
from shard.slots import SlotRanges

MASK64 = (1 << 64) - 1


def mix64(x: int) -> int:
    """SplitMix64's finalizer: a well-spread 64-bit hash of x."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


class SplitMix64:
    """A seeded generator (no global randomness in a pure module)."""

    def __init__(self, seed: int) -> None:
        self.state = seed & MASK64

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        return mix64(self.state - 0x9E3779B97F4A7C15)

    def uniform(self) -> float:
        """In (0, 1]."""
        return ((self.next() >> 11) + 1) / float(1 << 53)

    def pareto(self, alpha: float) -> float:
        """>= 1, heavy-tailed (most near 1, a few far above)."""
        return self.uniform() ** (-1.0 / alpha)


@dataclass(frozen=True, slots=True)
class SimConfig:
    nodes: int = 100
    zones: int = 5
    shards: int = 100_000
    slot_count: int = 1 << 20
    """Above MAX_SLOTS (65536, what Bootstrap accepts) when there are more
    shards than that: a shard owns at least one slot. The scheduler never
    looks at the slot count."""
    replicas: int = 3
    seed: int = 1
    round_s: float = 0.5
    added: int = 10
    lost: int = 5
    drained: int = 1
    hot_shards: int = 4
    hot_factor: float = 3.5
    """The hot shards' write rate, in split thresholds: 3.5 splits them, and their halves once more."""
    split_write_rate: float = 1000.0
    split_size_bytes: int = 1 << 30
    mean_write_rate: float = 20.0
    mean_size_bytes: int = 32 << 20
    max_ops_per_node: int = 0
    """0: max(8, shards // nodes // 20)."""
    max_ops: int = 0
    """0: max_ops_per_node * nodes // 2."""
    max_rounds: int = 5000
    """Per event: an event not converged after this many rounds fails."""

    def scheduler(self) -> SchedulerConfig:
        per_node = self.max_ops_per_node or max(8, self.shards // self.nodes // 20)
        return SchedulerConfig(
            replicas=self.replicas,
            max_ops=self.max_ops or per_node * self.nodes // 2,
            max_ops_per_node=per_node,
            split_write_rate=self.split_write_rate,
            split_size_bytes=self.split_size_bytes,
        )


@dataclass(frozen=True, slots=True)
class Balance:
    """The map at the end of an event, over the live up nodes."""

    replica_mean: float
    replica_spread: tuple[int, int]
    """(min, max) replica count of a live up node."""
    leader_mean: float
    leader_spread: tuple[int, int]
    zone_violations: int
    """Shards with two replicas in one zone (zones allowing)."""
    misplaced: int
    """Replicas on nodes that are not live and up (dead, draining), learners,
    and shards without `replicas` voters or without a live leader."""

    @property
    def replica_deviation(self) -> float:
        """max |count - mean| / mean."""
        return max(abs(c - self.replica_mean) for c in self.replica_spread) / self.replica_mean

    @property
    def leader_deviation(self) -> float:
        return max(abs(c - self.leader_mean) for c in self.leader_spread) / self.leader_mean


@dataclass(slots=True)
class EventReport:
    name: str
    rounds: int = 0
    converged: bool = False
    operators: int = 0
    by_kind: collections.Counter[str] = field(default_factory=collections.Counter)
    max_moves: int = 0
    """The most replica moves (an operator adding and removing a replica) of one shard."""
    max_ops_per_shard: int = 0
    """The most operators of one shard (any kind but split)."""
    undone: list[str] = field(default_factory=list)
    """Operators that undid an earlier one of the event."""
    max_round_cpu: float = 0.0
    """The CPU time of the slowest `schedule` call (0 without a timer)."""
    max_round_ops: int = 0
    balance: Balance | None = None

    def summary(self) -> str:
        b = self.balance
        bal = "" if b is None else (
            f" replicas {b.replica_spread[0]}..{b.replica_spread[1]} (mean {b.replica_mean:.1f}, dev {b.replica_deviation:.2%})"
            f" leaders {b.leader_spread[0]}..{b.leader_spread[1]} (mean {b.leader_mean:.1f}, dev {b.leader_deviation:.2%})"
            f" zone violations {b.zone_violations} misplaced {b.misplaced}"
        )
        kinds = ",".join(f"{k}={v}" for k, v in sorted(self.by_kind.items()))
        return (
            f"{self.name}: {'converged' if self.converged else 'NOT converged'} in {self.rounds} rounds,"
            f" {self.operators} operators ({kinds}), max moves/shard {self.max_moves}, max ops/shard {self.max_ops_per_shard},"
            f" undone {len(self.undone)}, slowest round {self.max_round_cpu * 1000:.0f} ms CPU ({self.max_round_ops} ops){bal}"
        )


class Simulation:
    def __init__(self, cfg: SimConfig, *, timer: Callable[[], float] | None = None) -> None:
        self.cfg = cfg
        self.sched = cfg.scheduler()
        self.timer = timer
        self.rng = SplitMix64(cfg.seed)
        self.now = 1000.0
        self.st = PlacementState(cluster_id=7, slot_count=cfg.slot_count)
        self.table = OperatorTable(history_len=0)
        self.heard: dict[int, float] = {}
        self.lost: set[int] = set()
        self.loads: dict[int, ShardLoad] = {}
        self.leaderless: set[int] = set()
        self.report: EventReport | None = None
        self._moves: collections.Counter[int] = collections.Counter()
        self._shard_ops: collections.Counter[int] = collections.Counter()
        self._added: dict[int, set[int]] = {}
        self._removed: dict[int, set[int]] = {}
        self._transfers: dict[int, set[tuple[int, int]]] = {}
        self._term = 1

    # -- the cluster ---------------------------------------------------------------------
    def add_node(self, zone: str) -> int:
        nid = max(self.st.nodes, default=0) + 1
        self.st.apply(RegisterNode(nid, NodeKind.STORE, f"store-{nid}:2380", (("zone", zone),)))
        self.heard[nid] = self.now
        return nid

    def zone_name(self, i: int) -> str:
        return f"z{i % self.cfg.zones}"

    def bootstrap(self) -> None:
        c = self.cfg
        for i in range(c.nodes):
            self.add_node(self.zone_name(i))
        stores = [self.st.nodes[n] for n in sorted(self.st.nodes)]
        for i, node_ids in enumerate(place_replicas(stores, c.shards, c.replicas)):
            sid = i + 1
            self.st.shards[sid] = Shard(sid, initial_slots(i, c.shards, c.slot_count), tuple(sorted((Replica(n) for n in node_ids), key=lambda r: r.node_id)))
            # skewed sizes and write rates, kept below the split thresholds
            size = min(int(c.mean_size_bytes / 3 * self.rng.pareto(1.5)), c.split_size_bytes // 2)
            rate = min(c.mean_write_rate / 3 * self.rng.pareto(1.5), c.split_write_rate / 2)
            self.loads[sid] = ShardLoad(size_bytes=size, key_count=size // 1024, write_rate=rate)
        self.st.max_shard_id = c.shards
        self.st.map_version += 1
        self.leaderless = set(self.st.shards)

    # -- a round -------------------------------------------------------------------------
    def live(self) -> frozenset[int]:
        return live_nodes(self.st, self.heard, self.now, self.sched)

    def elect(self) -> None:
        """Shards without a leader on a node that lives elect one among their
        voters that live (a seeded hash picks which), if most of them live."""
        for sid in sorted(self.leaderless):
            s = self.st.shards.get(sid)
            if s is None:
                self.leaderless.discard(sid)
                continue
            voters = [r.node_id for r in s.replicas if not r.learner]
            alive = [v for v in voters if v not in self.lost]
            if 2 * len(alive) <= len(voters):
                continue
            self._term += 1
            leader = alive[mix64(self.cfg.seed * 1_000_003 + sid * 7919 + s.leader_term) % len(alive)]
            self.st.shards[sid] = dataclasses.replace(s, leader_node_id=leader, leader_term=s.leader_term + 1)
            self.leaderless.discard(sid)

    def carry_out(self, live: frozenset[int]) -> None:
        """Each running operator's current step, as its shard's leader would."""
        for op in sorted(self.table.running.values(), key=lambda o: o.id):
            s = self.st.shards.get(op.executing_shard())
            if s is None or s.leader_node_id == 0 or s.leader_node_id in self.lost:
                continue
            step = next_action(op, s, live)
            if step is None:
                continue
            n = step_node(step)
            if n is not None and (n not in live or n in self.lost):
                continue  # the rebalancer withholds it, or the lost node never answers (the operator times out)
            self.apply_step(s, step)

    def apply_step(self, s: Shard, step: Step) -> None:
        reps = {r.node_id: r.learner for r in s.replicas}
        if isinstance(step, TransferLeader):
            if reps.get(step.node_id) is False:
                self.st.shards[s.shard_id] = dataclasses.replace(s, leader_node_id=step.node_id, leader_term=s.leader_term + 1)
            return
        if isinstance(step, Split):
            left, right = split_slots(s.slots, step.at_slot)
            if not left or not right:
                return
            ep = Epoch(s.epoch.conf_version, s.epoch.slot_version + 1)
            self.st.shards[s.shard_id] = dataclasses.replace(s, slots=left, epoch=ep)
            self.st.shards[step.new_shard_id] = dataclasses.replace(s, shard_id=step.new_shard_id, slots=right, epoch=ep)
            self.st.max_shard_id = max(self.st.max_shard_id, step.new_shard_id)
            load = self.loads.get(s.shard_id, ShardLoad())
            total = sum(hi - lo for lo, hi in s.slots)
            part = sum(hi - lo for lo, hi in right) / total
            self.loads[step.new_shard_id] = scale(load, part)
            self.loads[s.shard_id] = scale(load, 1 - part)
            self.st.map_version += 1
            return
        if isinstance(step, AddLearner):
            reps.setdefault(step.node_id, True)
        elif isinstance(step, Promote):
            if step.node_id not in reps:
                return
            reps[step.node_id] = False
        elif isinstance(step, RemoveReplica):
            if step.node_id == s.leader_node_id:
                return  # next_action hands leadership on first
            reps.pop(step.node_id, None)
        else:
            return  # merges are off
        replicas = tuple(Replica(n, le) for n, le in sorted(reps.items()))
        ep = Epoch(s.epoch.conf_version + 1, s.epoch.slot_version)
        self.st.shards[s.shard_id] = dataclasses.replace(s, replicas=replicas, epoch=ep)
        self.st.map_version += 1

    def round(self) -> list[Operator]:
        """One round; the operators the scheduler started."""
        self.now += self.cfg.round_s
        for nid, n in self.st.nodes.items():
            if nid not in self.lost and n.state != NodeState.REMOVED:
                self.heard[nid] = self.now
        for nid in self.st.nodes_to_mark_down(self.heard, self.now, self.sched.down_after_s, self.now):
            self.st.apply(SetNodeState(nid, NodeState.DOWN))
        self.elect()
        live = self.live()
        self.carry_out(live)
        self.table.confirm(self.st.shards, self.now)
        stats = Stats(last_heard=self.heard, shards=self.loads, running=tuple(self.table.running.values()))
        t0 = self.timer() if self.timer else 0.0
        ops = schedule(self.st, stats, self.now, self.sched)
        cpu = (self.timer() - t0) if self.timer else 0.0
        started = []
        for op in ops:
            added = self.table.add(op, self.now)
            if added is not None:
                started.append(added)
                self.record(added)
        if self.report is not None:
            self.report.rounds += 1
            if cpu > self.report.max_round_cpu:
                self.report.max_round_cpu, self.report.max_round_ops = cpu, len(ops)
        return started

    def settled(self) -> bool:
        """Nothing runs, nothing is waiting to happen (a lost node not yet
        DOWN, a shard without a leader) and the scheduler has nothing to do."""
        if self.table.running or self.leaderless:
            return False
        if any(self.st.nodes[n].state == NodeState.UP for n in self.lost):
            return False
        return True

    # -- events --------------------------------------------------------------------------
    def begin(self, name: str) -> EventReport:
        self.report = EventReport(name)
        self._moves.clear()
        self._shard_ops.clear()
        self._added, self._removed, self._transfers = {}, {}, {}
        return self.report

    def record(self, op: Operator) -> None:
        rep = self.report
        if rep is None:
            return
        rep.operators += 1
        rep.by_kind[op.kind.value] += 1
        sid = op.shard_id
        adds = {s.node_id for s in op.steps if isinstance(s, AddLearner)}
        removes = {s.node_id for s in op.steps if isinstance(s, RemoveReplica)}
        if op.kind != OperatorKind.SPLIT:
            self._shard_ops[sid] += 1
            rep.max_ops_per_shard = max(rep.max_ops_per_shard, self._shard_ops[sid])
        if adds and removes:
            self._moves[sid] += 1
            rep.max_moves = max(rep.max_moves, self._moves[sid])
        added, removed = self._added.setdefault(sid, set()), self._removed.setdefault(sid, set())
        if adds & removed or removes & added:
            rep.undone.append(f"{op.kind.value} shard {sid} {op.steps}: the event earlier added {sorted(added)}, removed {sorted(removed)}")
        added |= adds
        removed |= removes
        for s in op.steps:
            if isinstance(s, TransferLeader):
                frm = self.st.shards[sid].leader_node_id
                pairs = self._transfers.setdefault(sid, set())
                if (s.node_id, frm) in pairs:
                    rep.undone.append(f"{op.kind.value} shard {sid}: leadership back from {frm} to {s.node_id}")
                pairs.add((frm, s.node_id))

    def converge(self) -> EventReport:
        rep = self.report
        assert rep is not None
        while rep.rounds < self.cfg.max_rounds:
            started = self.round()
            if not started and self.settled():
                # a last look: the scheduler has nothing more to do
                rep.converged = True
                break
        rep.balance = self.balance()
        return rep

    def lose(self, node_ids: list[int]) -> None:
        self.lost.update(node_ids)
        for sid, s in self.st.shards.items():
            if s.leader_node_id in self.lost:
                self.leaderless.add(sid)

    def drain(self, node_ids: list[int]) -> None:
        for nid in node_ids:
            self.st.apply(SetNodeState(nid, NodeState.DRAINING))

    def heat(self, count: int) -> list[int]:
        """The write rate of `count` adjacent shards goes to hot_factor times the split threshold."""
        ids = sorted(self.st.shards)
        hot = ids[len(ids) // 2 : len(ids) // 2 + count]
        for sid in hot:
            load = self.loads.get(sid, ShardLoad())
            self.loads[sid] = dataclasses.replace(load, write_rate=self.cfg.split_write_rate * self.cfg.hot_factor)
        return hot

    def run_events(self, on_event: Callable[[EventReport], None] | None = None) -> list[EventReport]:
        c = self.cfg
        out = []

        def event(name: str) -> None:
            rep = self.converge()
            out.append(rep)
            if on_event is not None:
                on_event(rep)

        self.begin(f"initial: {c.nodes} nodes in {c.zones} zones, {c.shards} shards")
        self.bootstrap()
        event("initial")
        self.begin(f"+{c.added} nodes")
        for i in range(c.added):
            self.add_node(self.zone_name(i))
        event("added")
        self.begin(f"-{c.lost} nodes")
        # one node from each of the first `lost` zones (round robin over the zones)
        ups = [n for n in sorted(self.st.nodes) if self.st.nodes[n].state == NodeState.UP]
        self.lose(ups[:: max(1, len(ups) // c.lost)][: c.lost] if c.lost else [])
        event("lost")
        self.begin(f"drain {c.drained} node(s)")
        ups = [n for n in sorted(self.st.nodes) if self.st.nodes[n].state == NodeState.UP and n not in self.lost]
        self.drain(ups[len(ups) // 2 : len(ups) // 2 + c.drained])
        event("drained")
        self.begin(f"hot key range ({c.hot_shards} shards at {c.hot_factor}x the split write rate)")
        self.heat(c.hot_shards)
        event("hot")
        return out

    # -- the end of an event -------------------------------------------------------------
    def balance(self) -> Balance:
        live = self.live()
        counted = sorted(n for n in live if self.st.nodes[n].state == NodeState.UP)
        reps = dict.fromkeys(counted, 0)
        leads = dict.fromkeys(counted, 0)
        zones = {n: self.st.nodes[n].zone for n in self.st.nodes}
        spread_ok = len({zones[n] for n in counted}) >= self.cfg.replicas
        violations = misplaced = 0
        for s in self.st.shards.values():
            seen: set[str] = set()
            clash = False
            voters = 0
            for r in s.replicas:
                if r.node_id in reps:
                    reps[r.node_id] += 1
                else:
                    misplaced += 1
                if r.learner:
                    misplaced += 1
                else:
                    voters += 1
                z = zones.get(r.node_id, "")
                clash |= bool(z) and z in seen
                seen.add(z)
            if voters != self.cfg.replicas or s.leader_node_id not in leads:
                misplaced += 1
            else:
                leads[s.leader_node_id] += 1
            violations += clash and spread_ok
        rv, lv = list(reps.values()), list(leads.values())
        return Balance(sum(rv) / len(rv), (min(rv), max(rv)), sum(lv) / len(lv), (min(lv), max(lv)), violations, misplaced)


def split_slots(slots: SlotRanges, at: int) -> tuple[SlotRanges, SlotRanges]:
    left = tuple((lo, min(hi, at)) for lo, hi in slots if lo < at)
    right = tuple((max(lo, at), hi) for lo, hi in slots if hi > at)
    return left, right


def scale(load: ShardLoad, part: float) -> ShardLoad:
    return ShardLoad(int(load.size_bytes * part), int(load.key_count * part), load.write_rate * part)


def run(cfg: SimConfig, *, timer: Callable[[], float] | None = None, on_event: Callable[[EventReport], None] | None = None) -> list[EventReport]:
    return Simulation(cfg, timer=timer).run_events(on_event)
