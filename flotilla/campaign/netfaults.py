"""Network and clock faults of the nemesis (flotilla/campaign/nemesis.py):
rule files (raft/transport/faults.py) that isolate a leader, split stores
and placement servers into a minority and a majority, bridge two nodes
through a third, drop one way or delay; and a wall clock offset, live or by
a restart. Blocking calls."""

from __future__ import annotations

import random
import time
from collections import Counter

from flotilla.cluster import Cluster
from raft.transport.faults import Rules, write_rules

__all__ = ["NetworkFaults"]


class NetworkFaults:
    """Part of Nemesis: its network and clock faults. Nemesis supplies the
    attributes below, ``stores`` and ``_kill``/``_restart``."""

    cluster: Cluster
    rng: random.Random
    election_timeout_s: float
    max_clock_offset_ms: int

    # -- network -------------------------------------------------------------------------------
    def _write_rules(self, rules: dict[int, Rules]) -> None:
        """Each named process's rule file (a process not named keeps its own)."""
        for nid, r in rules.items():
            write_rules(self.cluster.faults_file(nid), r)

    def _clear_rules(self) -> None:
        """Heal every network fault (clock offsets set through the file too)."""
        self._write_rules({nid: Rules() for nid in (*self.cluster.placement_ids, *self.cluster.store_ids)})

    @staticmethod
    def _cut(groups: list[list[int]]) -> dict[int, Rules]:
        """Rules that let each group talk only within itself."""
        out: dict[int, Rules] = {}
        for g in groups:
            others = frozenset(n for h in groups if h is not g for n in h)
            for nid in g:
                out[nid] = Rules(drop=others)
        return out

    def _busiest_leader(self) -> tuple[int, int]:
        """(node leading the most shards, one shard it leads), or a random node's."""
        leaders = self.stores.leaders()
        if not leaders:
            return self.rng.choice(sorted(self.stores.live())), 0
        count = Counter(leaders.values())
        nid = max(sorted(count), key=lambda n: count[n])
        return nid, min(s for s, n in leaders.items() if n == nid)

    def _start_network_fault(self, kind: str) -> tuple[list[int], int, str]:
        """Write the rules of a network fault; returns (nodes, shard, detail)."""
        stores = sorted(self.cluster.store_ids)
        placement = sorted(self.cluster.placement_ids)
        shard = 0
        if kind == "partition_leader":
            victim, shard = self._busiest_leader()
            self._write_rules(self._cut([[victim], [n for n in stores if n != victim]]))
            return [victim], shard, f"isolated node {victim} (leads shard {shard})"
        if kind == "partition_split":
            # 3 of each: the minority is one store and one placement server.
            s_min = self.rng.sample(stores, (len(stores) - 1) // 2)
            p_min = self.rng.sample(placement, (len(placement) - 1) // 2)
            rules = {
                **self._cut([s_min, [n for n in stores if n not in s_min]]),
                **self._cut([p_min, [n for n in placement if n not in p_min]]),
            }
            self._write_rules(rules)
            return [*s_min, *p_min], 0, f"minority stores {s_min} and placement {p_min} cut from the majority"
        if kind == "partition_bridge":
            bridge = self.rng.choice(stores)
            a, b = [n for n in stores if n != bridge][:2]
            self._write_rules({a: Rules(drop=frozenset({b})), b: Rules(drop=frozenset({a}))})
            return [a, b, bridge], 0, f"{a} and {b} cut, both still reach {bridge} (bridge)"
        if kind == "partition_oneway":
            victim, shard = self._busiest_leader()
            dst = self.rng.choice([n for n in stores if n != victim])
            self._write_rules({victim: Rules(drop=frozenset({dst}))})
            return [victim, dst], shard, f"one-way drop {victim} -> {dst} ({victim} leads shard {shard})"
        if kind == "delay":
            victim, shard = self._busiest_leader()
            ms = int(self.election_timeout_s * 1000 * self.rng.uniform(0.6, 1.5))
            jitter = int(ms * 0.3)
            self._write_rules({victim: Rules(delay_ms={n: ms for n in stores if n != victim}, jitter_ms=jitter)})
            return [victim], shard, f"node {victim}'s messages delayed {ms}+-{jitter} ms (leads shard {shard})"
        raise ValueError(kind)

    def _hold(self) -> float:
        hold = self.election_timeout_s * self.rng.uniform(2.0, 4.0)
        time.sleep(hold)  # sleep-ok: nemesis fault duration
        return hold

    def _network_fault(self, kind: str) -> tuple[list[int], int, str]:
        nids, shard, detail = self._start_network_fault(kind)
        try:
            hold = self._hold()
        finally:
            self._clear_rules()
        return nids, shard, f"{detail} for {hold:.2f}s"

    # -- clock ---------------------------------------------------------------------------------
    def _clock_fault(self) -> tuple[list[int], str]:
        """A wall-clock offset on one store or placement server, live (rule
        file) or by a restart with FLOTILLA_CLOCK_OFFSET_MS; healed to 0."""
        victim = self.rng.choice([*self.cluster.store_ids, *self.cluster.placement_ids])
        offset = self.rng.choice((-1, 1)) * self.rng.randint(50, 2000)
        self.max_clock_offset_ms = max(self.max_clock_offset_ms, abs(offset))
        is_store = victim in self.cluster.store_ids
        group = self.stores if is_store else self.cluster.placement
        if self.rng.random() < 0.5:
            self._write_rules({victim: Rules(clock_offset_ms=offset)})
            try:
                hold = self._hold()
            finally:
                self._clear_rules()
            return [victim], f"node {victim} wall clock {offset:+d} ms live for {hold:.2f}s"
        env = group.node_env.setdefault(victim, {})
        env["FLOTILLA_CLOCK_OFFSET_MS"] = str(offset)
        try:
            self._restart_any(victim)
            hold = self._hold()
        finally:
            env.pop("FLOTILLA_CLOCK_OFFSET_MS", None)
            self._restart_any(victim)
        return [victim], f"node {victim} restarted with wall clock {offset:+d} ms for {hold:.2f}s, then restarted without"

    def _restart_any(self, nid: int) -> None:
        """kill -9 and restart a store or placement server."""
        if nid in self.cluster.store_ids:
            self._kill([nid])
            self._restart([nid])
        else:
            self.cluster.placement.nodes[nid].kill()
            self.cluster.placement.restart(nid)
