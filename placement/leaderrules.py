"""The scheduler's leader rules (steps 5 and 6 of placement/scheduler.py's
list): leader balance, which moves leadership by TransferLeader from the
nodes leading more than the mean to those leading fewer, and hot leaders,
which spreads the shards near the split write rate over their voters. A
mixin of the scheduler's round, whose projected state (replicas and
leaders as they will be once running operators are done) it reads and
whose emit() it calls.

Pure, as the scheduler: no I/O, clocks or randomness.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from placement.model import Replica
from placement.operators import OperatorKind, Step, TransferLeader
from placement.state import PlacementState


class LeaderRules:
    # The round's state these rules read (set by scheduler._Round).
    st: PlacementState
    stats: Any
    """scheduler.Stats (not imported: the scheduler imports this module)"""
    cfg: Any
    """scheduler.SchedulerConfig"""
    live: list[int]
    live_set: frozenset[int]
    sids: list[int]
    busy_shards: set[int]
    node_ops: collections.Counter[int]
    ops: int
    replicas: dict[int, tuple[Replica, ...]]
    leader: dict[int, int]
    emit: Callable[[OperatorKind, int, tuple[Step, ...], str], None]
    free: Callable[[int], bool]

    def balance_leaders(self) -> None:
        """Leader counts of the live nodes, running transfers counted as
        done (self.leader): a transfer the map does not show yet must not
        make the next round move a second shard off the same node.

        The most loaded node gives leadership of a shard to the least
        loaded of that shard's voters, only from above the mean (rounded
        down) to below it (rounded up): a node that received leadership
        never gives any back in pure leader balancing, since it can end
        above the mean no more than a giver can end below it (several
        givers choosing one receiver each made it overshoot, then give
        back). When no shard of the most loaded node
        has a voter far enough below it (its shards' other replicas are in
        other zones than the least loaded nodes, say), the next most loaded
        node gives instead.

        It waits (no transfer this round) while a leader is not known: a
        shard between leaders, or one whose leader's replica a running
        operator removes (the leader hands leadership to a voter of its
        choosing, and the map tells which only afterwards: counting such
        shards nowhere made leader balance move leadership that the
        replica moves' hand-overs then moved back)."""
        if len(self.live) < 2:
            return
        leaders: dict[int, int] = dict.fromkeys(self.live, 0)
        led: dict[int, list[int]] = collections.defaultdict(list)
        busy = self.busy_shards
        for sid in self.sids:
            lead = self.leader[sid]
            led[lead].append(sid)
            if lead in leaders and any(r.node_id == lead and not r.learner for r in self.replicas[sid]):
                leaders[lead] += 1
            elif (sid not in busy or lead == 0) and self.can_elect(sid):
                return  # the shard is between leaders (or its report lags): the counts are not known yet
        limit = self.cfg.max_ops_per_node
        total = sum(leaders.values())
        floor, ceil = total // len(leaders), -(-total // len(leaders))
        gave_up: set[int] = set()  # sources with no transfer to make, for the rest of the round
        skip: dict[tuple[int, int], int] = {}  # (source, voter) -> how many of their shards are busy for the rest of the round
        by_voter: dict[int, dict[int, list[int]]] = {}  # source -> voter -> the free shards source leads, by id
        while self.ops < self.cfg.max_ops:
            eligible = [n for n in self.live if self.node_ops[n] < limit]
            if not eligible:
                return
            low = min(eligible, key=lambda n: (leaders[n], n))
            best: tuple[int, int] | None = None
            for src in sorted(eligible, key=lambda n: (-leaders[n], n)):
                if leaders[src] - leaders[low] < self.cfg.leader_min_spread or leaders[src] <= floor:
                    return  # nor can any node leading fewer
                if src in gave_up:
                    continue
                best = self.leader_transfer(src, led[src], skip, leaders, by_voter, ceil)
                if best is not None:
                    break
                gave_up.add(src)
            if best is None:
                return
            sid, dst = best
            self.emit(OperatorKind.BALANCE_LEADER, sid, (TransferLeader(dst),), f"balance leaders: node {src} leads {leaders[src]}, node {dst} {leaders[dst]}")
            leaders[src] -= 1
            leaders[dst] += 1

    def leader_transfer(self, src: int, sids: list[int], skip: dict[tuple[int, int], int], leaders: dict[int, int], by_voter: dict[int, dict[int, list[int]]], ceil: int) -> tuple[int, int] | None:
        """(shard, voter): the least loaded live voter (ties: the lowest id)
        of any free shard src leads that leads at least leader_min_spread
        fewer than src and fewer than the mean rounded up, with the free
        shard src leads that it is a voter of whose leader term is the
        lowest (then the lowest id)."""
        limit, spread = self.cfg.max_ops_per_node, self.cfg.leader_min_spread
        voters = by_voter.get(src)
        if voters is None:
            voters = by_voter[src] = collections.defaultdict(list)
            # The shards whose leadership changed least first (the lowest
            # term): leadership just handed to src is not what src gives
            # away when the counts shift again (churn per shard, and the
            # simulation's no-undo rule).
            shards = self.st.shards
            for sid in sorted(sids, key=lambda sid: (s.leader_term if (s := shards.get(sid)) is not None else 0, sid)):
                for r in self.replicas[sid]:
                    if not r.learner and r.node_id != src:
                        voters[r.node_id].append(sid)
        busy = self.busy_shards
        cands = sorted(
            (leaders[n], n) for n in voters
            if n in leaders and self.node_ops[n] < limit and leaders[src] - leaders[n] >= spread and leaders[n] < ceil
        )
        for _, n in cands:
            lst = voters[n]
            i = skip.get((src, n), 0)
            while i < len(lst) and lst[i] in busy:
                i += 1  # busy for the rest of the round
            skip[(src, n)] = i
            if i < len(lst):
                return lst[i], n
        return None

    def spread_hot_leaders(self) -> None:
        """A node leading two or more warm shards (write rate >= half the
        split threshold) gives one (the lowest id) to its live voter that
        leads no warm shard and the fewest shards, if fewer than the giver
        (ties: the lowest id); running operators counted as done."""
        rate = self.cfg.split_write_rate
        if not rate or len(self.live) < 2:
            return
        warm = sorted(sid for sid, load in self.stats.shards.items() if load.write_rate >= rate / 2 and sid in self.replicas)
        if len(warm) < 2:
            return
        led = collections.Counter(self.leader.values())
        warm_led: dict[int, list[int]] = collections.defaultdict(list)
        for sid in warm:
            warm_led[self.leader[sid]].append(sid)
        for src in sorted(warm_led):
            sids = warm_led[src]
            if not src or len(sids) < 2:
                continue
            for sid in sids:
                if self.ops >= self.cfg.max_ops or len(warm_led[src]) < 2:
                    break
                if not self.free(sid) or self.node_ops[src] >= self.cfg.max_ops_per_node:
                    continue
                cands = [
                    r.node_id for r in self.replicas[sid]
                    if not r.learner and r.node_id != src and r.node_id in self.live_set and not warm_led.get(r.node_id)
                    and led[r.node_id] < led[src] and self.node_ops[r.node_id] < self.cfg.max_ops_per_node
                ]
                if not cands:
                    continue
                to = min(cands, key=lambda n: (led[n], n))
                self.emit(OperatorKind.BALANCE_LEADER, sid, (TransferLeader(to),), f"hot leaders: node {src} leads {len(warm_led[src])} shards over half the split write rate: shard {sid} to node {to}")
                warm_led[src].remove(sid)
                warm_led[to].append(sid)
                led[src] -= 1
                led[to] += 1

    def can_elect(self, sid: int) -> bool:
        """Do most of the shard's voters live (so it has, or will soon
        have, a leader on a live node)?"""
        voters = [r.node_id for r in self.replicas[sid] if not r.learner]
        live = self.live_set
        return 2 * sum(n in live for n in voters) > len(voters)
