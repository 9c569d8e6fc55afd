"""The scheduler: (map, stats, now, config) -> operators (PURE).

`schedule` looks at the shard map and the leader's in-memory figures and
proposes operators (placement/operators.py), in priority order:

0. finish merges: a shard whose replicas report a freeze for a merge into
   another and that no operator works on (its merge operator timed out, or
   was lost with a placement leader: operators are the leader's memory)
   gets its merge again. A freeze cannot be undone and a frozen shard
   serves nothing, so the merge must finish; its PrepareMerge is confirmed
   by the reports, and the CommitMerge follows;
1. repair: a replica on a node down for longer than `down_after_s` (or
   removed) is replaced: a learner on another live node, promoted, then the
   dead replica removed; a shard with fewer voters than `replicas` gets one;
2. drain: every replica on a DRAINING node moves off it (or, when nowhere
   else can take it, at least its leadership does);
3. zones: a shard with two replicas in one zone moves one to an unused
   zone, where labels allow;
4. replica balance: the most loaded live node gives a replica to the least
   loaded one, only while their counts differ by at least
   `balance_min_spread` (hysteresis: a move lowers the spread, so it can
   never be undone by the next round), and only from above the mean
   rounded up to below the mean (a receiver never gives, a giver never
   receives); a shard with no replica on a receiver yet goes first;
5. leader balance: the same for leader counts, by leader transfer, only
   from a node above the mean to one below it (when the most loaded node
   shares no shard with a node far enough below, the next one gives; of
   its shards it gives the one with the lowest leader term, so leadership
   it just received is not what it passes on), and
   not while a running operator removes a leader's replica. Leaders
   are counted as they will be once running operators are done (a running
   TransferLeader counts for its target, a step removing the leader's
   replica makes the leader unknown), since the map shows a transfer only
   after the new leader's next heartbeat: counting the map alone made the
   next round move a second shard off the same node, and 2/2/0 went to
   0/2/2, 2/0/2, ... for ever. A shard with no known leader on a live voter
   whose voters mostly live (it is electing, or its report lags) and that
   no operator works on makes leader balance wait for the next round;
6. hot leaders (with a write rate threshold set): a node leading two or
   more warm shards (write rate at least half the split threshold: the
   halves of a hot shard split) hands one to a live voter leading no warm
   shard and fewer shards than it, so the halves of a hot shard do not
   stay on one store (a split's new group elects its leader anew). After
   such a transfer the two nodes' leader counts differ by at most one, so
   leader balance never gives it back; each transfer lowers the sum of
   squares of warm leaderships and never raises that of leader counts;
7. split: a shard over a size / key count / write rate threshold (0: off)
   splits at its middle slot;
8. merge (off unless `merge_size_bytes` or `merge_keys` is set): two shards
   with the same replicas whose slots are adjacent, each below the merge
   thresholds and together below half of every split threshold (hysteresis:
   the merged shard is far from splitting again, and a shard just split is
   far above the merge thresholds), merge into the one with the lower id.

Live and suspect nodes: a node is live when it is UP and was heard within
`suspect_after` = min(`suspect_after_s`, `down_after_s`) (stores heartbeat
every second; 3 s by default, so a dead store is out of every decision
long before it is marked DOWN). An UP node unheard for longer is suspect: no
step aims at it (a new replica, a promotion, leadership: repair, drain,
zones, both balances), and balancing neither counts it nor takes from it.
Otherwise, once the survivors had elected new leaders, a dead store led
nothing and leader balance moved leadership onto it. (placement/
rebalancer.py also withholds or cancels running steps aimed at one.)

Rate limits: at most one operator per shard; a node takes part in at most
`max_ops_per_node` running operators; at most `max_ops` run at once.
Running operators count as done when the scheduler counts replicas and
leaders, so it does not schedule the same move twice. Deterministic: ties
go to the lowest id.

Steps 5 and 6 (the leader rules) are in placement/leaderrules.py, a mixin
of the round.

Convergence: applied to its own output with the nodes' liveness fixed, the
scheduler reaches a state with nothing to do and never returns to an
earlier one (tests/unit/placement/test_scheduler_convergence.py checks it
on random clusters). Each operator lowers, in this order of precedence:
replicas on dead or draining nodes and missing voters (repair, drain);
shards with two replicas in one zone (zones; balance never adds one); the
sum of squares of the live nodes' replica counts (a balance move between
counts a >= b + 2 lowers it by 2(a - b - 1) > 0); the same for leader
counts.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from placement.operators import (
    AddLearner,
    CommitMerge,
    Frozen,
    Operator,
    OperatorKind,
    PrepareMerge,
    Promote,
    RemoveReplica,
    Split,
    Step,
    TransferLeader,
    merge_steps,
    move_steps,
    project,
    project_leader,
)
from placement.leaderrules import LeaderRules
from placement.model import NodeKind, NodeState, Replica, Shard
from placement.state import PlacementState


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    replicas: int = 3
    down_after_s: float = 30.0
    """A DOWN node's replicas are repaired once it has been unheard this long."""
    suspect_after_s: float = 3.0
    """An up node unheard this long (or down_after_s, if shorter) is suspect:
    no operator step aims at it and balancing does not count it."""
    max_ops: int = 4
    max_ops_per_node: int = 2
    balance_min_spread: int = 2
    leader_min_spread: int = 2
    split_size_bytes: int = 0
    split_keys: int = 0
    split_write_rate: float = 0.0
    op_timeout_s: float = 60.0
    balance: bool = True
    merge_size_bytes: int = 0
    """Merge two adjacent shards both smaller than this (and merge_keys); 0 with merge_keys 0: never."""
    merge_keys: int = 0


@dataclass(frozen=True, slots=True)
class ShardLoad:
    size_bytes: int = 0
    key_count: int = 0
    write_rate: float = 0.0


@dataclass(frozen=True, slots=True)
class Stats:
    last_heard: Mapping[int, float] = field(default_factory=dict)
    """node id -> when placement last heard it (a node missing: never, i.e. long ago)."""
    shards: Mapping[int, ShardLoad] = field(default_factory=dict)
    running: Sequence[Operator] = ()
    frozen: Frozen = field(default_factory=dict)
    """The replicas' reported freezes (see placement/operators.py's Frozen)."""


def schedule(map_state: PlacementState, stats: Stats, now: float, config: SchedulerConfig) -> list[Operator]:
    return _Round(map_state, stats, now, config).run()


def suspect_after(config: SchedulerConfig) -> float:
    """How long an up node may be unheard before it is suspect (never
    longer than down_after_s: a test cluster's short down_after wins)."""
    return min(config.suspect_after_s, config.down_after_s)


def live_nodes(map_state: PlacementState, last_heard: Mapping[int, float], now: float, config: SchedulerConfig) -> frozenset[int]:
    """The store nodes that are UP and not suspect: heard within
    suspect_after (a node missing from last_heard was never heard)."""
    limit = suspect_after(config)
    return frozenset(
        nid
        for nid, n in map_state.nodes.items()
        if n.kind == NodeKind.STORE and n.state == NodeState.UP and (h := last_heard.get(nid)) is not None and now - h <= limit
    )


class _Round(LeaderRules):
    def __init__(self, st: PlacementState, stats: Stats, now: float, cfg: SchedulerConfig) -> None:
        self.st, self.stats, self.now, self.cfg = st, stats, now, cfg
        self.out: list[Operator] = []
        self.busy_shards = {sid for op in stats.running for sid in op.shards()}
        self.node_ops: collections.Counter[int] = collections.Counter(dict.fromkeys(st.nodes, 0))
        self.ops = len(stats.running)
        for op in stats.running:
            self.node_ops.update(op.nodes())
        self.stores = {nid: n for nid, n in st.nodes.items() if n.kind == NodeKind.STORE}
        # up and heard from: the only nodes a step may aim at, and the only ones balancing counts
        self.live = sorted(live_nodes(st, stats.last_heard, now, cfg))
        self.live_set = frozenset(self.live)
        self.sids = sorted(st.shards)
        self.zone_of = {nid: n.zone for nid, n in self.stores.items()}
        self.not_dead = frozenset(nid for nid in self.stores if not self.dead(nid))
        # built on first use, then kept up to date by emit (performance: no
        # scan of every shard per decision at 100,000 shards)
        self._counts: dict[int, int] | None = None
        self._on: dict[int, set[int]] | None = None
        """node -> the shards with a replica on it (once running operators are done)."""
        self._sorted_on: dict[int, list[int]] = {}
        """node -> its shards by id, as they were when first asked for (shards
        added to it since are busy: a balance move never picks them)."""
        self._skip: dict[int, int] = {}
        """node -> how many of _sorted_on[node] left it or are busy (skipped for good)."""
        self._skip_fresh: dict[int, int] = {}
        """node -> how many of _sorted_on[node] left it, are busy or have a replica on a receiver."""
        # replicas and leaders as they will be once running operators are done
        self.replicas: dict[int, tuple[Replica, ...]] = {sid: s.replicas for sid, s in st.shards.items()}
        self.leader: dict[int, int] = {sid: s.leader_node_id for sid, s in st.shards.items()}
        for op in stats.running:
            if op.shard_id in self.replicas:
                rest = op.steps[op.step_index :]
                self.leader[op.shard_id] = project_leader(self.leader[op.shard_id], rest)
                self.replicas[op.shard_id] = project(self.replicas[op.shard_id], rest)

    # -- helpers ---------------------------------------------------------------------
    def dead(self, nid: int) -> bool:
        n = self.stores.get(nid)
        if n is None or n.state == NodeState.REMOVED:
            return True
        if n.state != NodeState.DOWN:
            return False
        heard = self.stats.last_heard.get(nid)
        return heard is None or self.now - heard > self.cfg.down_after_s

    def budget(self, *nodes: int) -> bool:
        return self.ops < self.cfg.max_ops and all(self.node_ops[n] < self.cfg.max_ops_per_node for n in nodes)

    def free(self, sid: int) -> bool:
        return sid not in self.busy_shards

    def index(self) -> None:
        if self._on is not None:
            return
        c = dict.fromkeys(self.live, 0)
        on: dict[int, set[int]] = collections.defaultdict(set)
        for sid, reps in self.replicas.items():
            for r in reps:
                on[r.node_id].add(sid)
                if r.node_id in c:
                    c[r.node_id] += 1
        self._counts, self._on = c, on

    def counts(self) -> dict[int, int]:
        """Replicas on each live node (kept up to date by emit)."""
        self.index()
        assert self._counts is not None
        return self._counts

    def shards_on(self, nid: int) -> set[int]:
        self.index()
        assert self._on is not None
        return self._on[nid]

    def zone(self, nid: int) -> str:
        return self.zone_of.get(nid, "")

    def zones_of(self, sid: int, without: int = 0) -> set[str]:
        return {z for r in self.replicas[sid] if r.node_id != without and (z := self.zone(r.node_id))}

    def target(self, sid: int, without: int = 0) -> int | None:
        """The best live node to take a new replica of sid (replacing `without`)."""
        if self.ops >= self.cfg.max_ops:
            return None  # no node has the budget
        have = {r.node_id for r in self.replicas[sid]}
        zones = self.zones_of(sid, without)
        counts = self.counts()
        limit = self.cfg.max_ops_per_node
        cands = [n for n in self.live if n not in have and self.node_ops[n] < limit]
        if not cands:
            return None
        return min(cands, key=lambda n: (bool(self.zone(n)) and self.zone(n) in zones, counts[n], n))

    def emit(self, kind: OperatorKind, sid: int, steps: tuple[Step, ...], note: str) -> None:
        op = Operator(0, kind, sid, steps, self.now, self.cfg.op_timeout_s, note=note)
        self.out.append(op)
        self.ops += 1
        self.busy_shards.add(sid)
        self.node_ops.update(op.nodes())
        self.leader[sid] = project_leader(self.leader[sid], steps)
        old = self.replicas[sid]
        new = self.replicas[sid] = project(old, steps)
        if self._on is not None and self._counts is not None:
            before, after = {r.node_id for r in old}, {r.node_id for r in new}
            for n in before - after:
                self._on[n].discard(sid)
                if n in self._counts:
                    self._counts[n] -= 1
            for n in after - before:
                self._on[n].add(sid)
                if n in self._counts:
                    self._counts[n] += 1

    def move(self, kind: OperatorKind, sid: int, frm: int, to: int, note: str) -> None:
        self.emit(kind, sid, move_steps(frm, to), note)

    # -- the round ---------------------------------------------------------------------
    def run(self) -> list[Operator]:
        if not self.st.bootstrapped:
            return []
        self.finish_merges()
        self.repair()
        self.drain()
        if self.cfg.balance:
            self.spread_zones()
            self.balance_replicas()
            self.balance_leaders()
            self.spread_hot_leaders()
        self.split()
        self.merge()
        return self.out

    def finish_merges(self) -> None:
        for sid, by_node in sorted(self.stats.frozen.items()):
            targets = set(by_node.values())
            if sid not in self.st.shards or not self.free(sid) or len(targets) != 1:
                continue
            target = targets.pop()
            if target not in self.st.shards or not self.free(target):
                continue
            steps = merge_steps(self.st.shards[sid], self.st.shards[target])
            if isinstance(steps, str) or len(steps) != 2:
                continue  # the replicas differ (a repair ran meanwhile?): no replica moves of a frozen shard
            self.emit(OperatorKind.MERGE, sid, steps, f"shard {sid} is frozen for a merge into shard {target} that no operator finishes: merge it")
            self.busy_shards.add(target)

    def repair(self) -> None:
        not_dead = self.not_dead
        for sid in self.sids:
            if sid in self.busy_shards:
                continue
            reps = self.replicas[sid]
            dead = [r.node_id for r in reps if r.node_id not in not_dead]
            if dead:
                d = dead[0]
                to = self.target(sid, without=d)
                if to is not None and self.budget(to):
                    self.move(OperatorKind.REPAIR, sid, d, to, f"node {d} is down: replace its replica of shard {sid} on node {to}")
                elif len(reps) > self.cfg.replicas:
                    self.emit(OperatorKind.REPAIR, sid, (RemoveReplica(d),), f"node {d} is down: remove its surplus replica")
                continue
            want = min(self.cfg.replicas, len(self.live))
            if len(reps) < want or any(r.learner for r in reps):
                voters = [r for r in reps if not r.learner]
                if len(voters) >= want:
                    continue
                to = self.target(sid)
                if to is not None:
                    self.emit(OperatorKind.REPAIR, sid, (AddLearner(to), Promote(to)), f"shard {sid} has {len(voters)} voters of {want}: add one on node {to}")

    def drain(self) -> None:
        draining = sorted(nid for nid, n in self.stores.items() if n.state == NodeState.DRAINING)
        live = self.live_set
        for d in draining:
            for sid in sorted(self.shards_on(d)):
                if self.ops >= self.cfg.max_ops or self.node_ops[d] >= self.cfg.max_ops_per_node:
                    break  # neither a move nor a transfer has the budget
                if not self.free(sid) or sid not in self.shards_on(d):
                    continue
                to = self.target(sid, without=d)
                if to is not None and self.budget(d, to):
                    self.move(OperatorKind.DRAIN, sid, d, to, f"drain node {d}: move shard {sid} to node {to}")
                    continue
                if self.leader[sid] == d and self.budget(d):
                    voters = [r.node_id for r in self.replicas[sid] if not r.learner and r.node_id != d and r.node_id in live]
                    if voters:
                        self.emit(OperatorKind.DRAIN, sid, (TransferLeader(voters[0]),), f"drain node {d}: move leadership of shard {sid}")

    def spread_zones(self) -> None:
        zone_of = self.zone_of
        for sid in self.sids:
            if self.ops >= self.cfg.max_ops:
                return  # no move has the budget
            if sid in self.busy_shards:
                continue
            reps = self.replicas[sid]
            zs = [zone_of.get(r.node_id, "") for r in reps]
            if len(set(zs)) == len(zs):
                continue  # no two replicas in one zone
            seen: dict[str, int] = {}
            for r in self.replicas[sid]:
                z = self.zone(r.node_id)
                if not z:
                    continue
                if z in seen and r.node_id in self.live:
                    to = self.target(sid, without=r.node_id)
                    if to is not None and self.zone(to) and self.zone(to) not in self.zones_of(sid) and self.budget(r.node_id, to):
                        self.move(OperatorKind.ZONE, sid, r.node_id, to, f"shard {sid} has two replicas in zone {z}: move one to node {to}")
                    break
                seen[z] = r.node_id

    def balance_replicas(self) -> None:
        """The most loaded movable node gives a replica to the least loaded
        one, only from above the mean rounded up to below the mean: a node
        that received a replica ends at most at the mean rounded up, so it
        never gives one (back) in replica balancing, and a giver never drops
        below the mean, so it never receives. Otherwise, with the overloaded
        nodes at their operator limit, a node that had just received became
        the busiest movable one and passed replicas on to another, moving a
        shard a second time (old node -> new node -> newer node)."""
        if len(self.live) < 2:
            return
        counts = self.counts()
        total, n_live = sum(counts.values()), len(counts)
        ceil = -(-total // n_live)
        while self.ops < self.cfg.max_ops:
            movable = [n for n in self.live if self.node_ops[n] < self.cfg.max_ops_per_node]
            if len(movable) < 2:
                return
            src = max(movable, key=lambda n: (counts[n], -n))
            dst = min(movable, key=lambda n: (counts[n], n))
            if counts[src] - counts[dst] < self.cfg.balance_min_spread or counts[src] <= ceil or counts[dst] * n_live >= total:
                return  # nor can a less loaded giver or a more loaded receiver
            sid = self.movable_shard(src, dst, total, n_live)
            if sid is None:
                return
            self.move(OperatorKind.BALANCE_REPLICA, sid, src, dst, f"balance replicas: node {src} has {counts[src]}, node {dst} {counts[dst]}")

    def movable_shard(self, src: int, dst: int, total: int = 0, n_live: int = 1) -> int | None:
        """The lowest free shard id with a replica on src and none on dst
        whose move src -> dst puts no two replicas in one zone; preferably
        one with no other replica on a node below the mean (total / n_live),
        i.e. one that balancing has not moved to a receiver already: every
        giver holding a replica of the same low-id shard gave that shard,
        and one shard was moved three times in one event."""
        on = self.shards_on(src)
        lst = self._sorted_on.get(src)
        if lst is None:
            lst = self._sorted_on[src] = sorted(on)
        busy = self.busy_shards
        zsrc, zdst = self.zone(src), self.zone(dst)
        counts = self.counts()

        def fits(sid: int) -> bool:
            reps = self.replicas[sid]
            if any(r.node_id == dst for r in reps):
                return False
            if zdst:
                zones = self.zones_of(sid, without=src)
                if zdst in zones and not (zsrc and zsrc in zones):
                    return False  # would put two replicas in one zone
            return True

        if total:
            # First pass: shards whose other replicas are on no receiver.
            # Skipped for the rest of the round: gone, busy, or touching a
            # receiver (a receiver stays one for the round).
            skip = self._skip_fresh.get(src, 0)
            prefix = True
            for i in range(skip, len(lst)):
                sid = lst[i]
                moved = sid not in on or sid in busy or any(
                    r.node_id != src and (c := counts.get(r.node_id)) is not None and c * n_live < total for r in self.replicas[sid]
                )
                if moved:
                    if prefix:
                        self._skip_fresh[src] = i + 1
                    continue
                prefix = False
                if fits(sid):
                    return sid
        skip = self._skip.get(src, 0)
        prefix = True
        for i in range(skip, len(lst)):
            sid = lst[i]
            if sid not in on or sid in busy:
                if prefix:
                    self._skip[src] = i + 1  # gone or busy for the rest of the round
                continue
            prefix = False
            if fits(sid):
                return sid
        return None

    def split(self) -> None:
        c = self.cfg
        if not (c.split_size_bytes or c.split_keys or c.split_write_rate):
            return
        size, keys, rate = c.split_size_bytes, c.split_keys, c.split_write_rate
        over = sorted(
            sid
            for sid, load in self.stats.shards.items()
            if (size and load.size_bytes >= size) or (keys and load.key_count >= keys) or (rate and load.write_rate >= rate)
        )
        next_id = 0
        for sid in over:
            if sid not in self.st.shards or not self.free(sid) or self.ops >= c.max_ops:
                continue
            load = self.stats.shards[sid]
            at = middle_slot(self.st.shards[sid])
            if at is not None:
                next_id = next_id or next_shard_id(self.st, [*self.stats.running, *self.out])
                self.emit(OperatorKind.SPLIT, sid, (Split(next_id, at),), f"shard {sid} is over a split threshold ({load})")
                next_id += 1

    def merge(self) -> None:
        c = self.cfg
        if not (c.merge_size_bytes or c.merge_keys):
            return
        small: dict[int, ShardLoad] = {}
        for sid in sorted(self.st.shards):
            load = self.stats.shards.get(sid)
            if load is None or not self.free(sid):
                continue
            if (c.merge_size_bytes and load.size_bytes >= c.merge_size_bytes) or (c.merge_keys and load.key_count >= c.merge_keys):
                continue
            small[sid] = load
        taken: set[int] = set()
        for target in sorted(small):
            if target in taken or self.ops >= c.max_ops:
                continue
            for source in sorted(small):
                if source == target or source in taken or not self.mergeable(target, source, small[target], small[source]):
                    continue
                self.emit(
                    OperatorKind.MERGE, source, (PrepareMerge(target), CommitMerge(source, target)),
                    f"shards {target} and {source} are below the merge thresholds ({small[target]}, {small[source]}): merge {source} into {target}",
                )
                self.busy_shards.add(target)
                taken.update((target, source))
                break

    def mergeable(self, target: int, source: int, lt: ShardLoad, ls: ShardLoad) -> bool:
        """Same replicas (the scheduler does not move replicas for a merge),
        adjacent slots, and far enough below every split threshold."""
        c = self.cfg
        a, b = self.st.shards[target], self.st.shards[source]
        if {(r.node_id, r.learner) for r in a.replicas} != {(r.node_id, r.learner) for r in b.replicas}:
            return False
        if not any(x[1] == y[0] for x in a.slots for y in b.slots) and not any(y[1] == x[0] for x in a.slots for y in b.slots):
            return False
        size, keys, rate = lt.size_bytes + ls.size_bytes, lt.key_count + ls.key_count, lt.write_rate + ls.write_rate
        return not (
            (c.split_size_bytes and size * 2 >= c.split_size_bytes)
            or (c.split_keys and keys * 2 >= c.split_keys)
            or (c.split_write_rate and rate * 2 >= c.split_write_rate)
        )


def next_shard_id(st: PlacementState, ops: Sequence[Operator]) -> int:
    """A shard id never used: above every id the map ever held (a merged
    shard's id is not reused) and every id a split operator picks."""
    used = {*st.shards, st.max_shard_id}
    used.update(s.new_shard_id for op in ops for s in op.steps if isinstance(s, Split))
    return max(used, default=0) + 1


def middle_slot(shard: Shard) -> int | None:
    """The slot that divides the shard's slots into two halves (None: one slot)."""
    total = sum(hi - lo for lo, hi in shard.slots)
    if total < 2:
        return None
    half = total // 2
    for lo, hi in shard.slots:
        if half < hi - lo:
            return lo + half
        half -= hi - lo
    return None


def split_point_valid(shard: Shard, at_slot: int) -> bool:
    """at_slot leaves slots on both sides of the shard."""
    below = sum(max(0, min(hi, at_slot) - lo) for lo, hi in shard.slots)
    total = sum(hi - lo for lo, hi in shard.slots)
    return 0 < below < total

