"""Faults against a real cluster's store nodes (flotilla/cluster.py): kill -9
of one node, of a shard's leader, of a majority, of every store at once, then
restart; SIGSTOP/SIGCONT pauses longer than the election timeout; and crash
points (FLOTILLA_CRASH_AT=<point>:<n> in the restarted process's
environment). Blocking calls: the runner runs them on a thread.

Every fault heals before the next begins (restart, SIGCONT), and the nemesis
then waits, against a deadline, for every shard to have a leader again.
Placement servers and the router are never faulted here.
"""

from __future__ import annotations

import os
import random
import signal
import time
from dataclasses import dataclass, field
from typing import Callable

from flotilla.campaign.history import FaultEvent
from flotilla.cluster import Cluster, wait_until

__all__ = ["Nemesis", "KINDS", "CRASH_POINTS", "parse_kinds"]

KINDS = ("kill_one", "kill_leader", "kill_majority", "kill_all", "pause", "crashpoint")
CRASH_POINTS = ("after_persist", "after_apply")
ALIASES = {"kill": ("kill_one", "kill_leader", "kill_majority", "kill_all")}


def parse_kinds(text: str) -> tuple[str, ...]:
    out: list[str] = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        for k in ALIASES.get(item, (item,)):
            if k not in KINDS:
                raise ValueError(f"unknown nemesis {k!r}; known: {', '.join((*KINDS, *ALIASES))}")
            if k not in out:
                out.append(k)
    return tuple(out)


@dataclass
class Nemesis:
    cluster: Cluster
    rng: random.Random
    clock: Callable[[], float] = time.monotonic
    election_timeout_s: float = 1.0
    heal_timeout_s: float = 60.0
    log: Callable[[str], None] = print
    crashpoints_fired: int = 0
    crashpoints_not_fired: int = 0
    events: list[FaultEvent] = field(default_factory=list)

    @property
    def stores(self):  # noqa: ANN201 - the harness's store side
        return self.cluster.stores

    def _kill(self, nids: list[int]) -> None:
        for nid in nids:  # signals first, then waits: "at once"
            p = self.stores.nodes[nid].proc
            assert p is not None
            p.send_signal(signal.SIGKILL)
        for nid in nids:
            p = self.stores.nodes[nid].proc
            assert p is not None
            p.wait(timeout=30)

    def _restart(self, nids: list[int]) -> None:
        for nid in nids:
            self.stores._spawn(nid)
        for nid in nids:
            self.stores._await_ready(nid)
        self.stores.connect_all()

    def _leader_of(self, shard: int) -> int | None:
        try:
            return self.stores.leaders().get(shard)
        except Exception:  # noqa: BLE001 - a node mid-restart: no answer
            return None

    def wait_healed(self) -> None:
        wait_until(self.stores.all_shards_led, timeout=self.heal_timeout_s, what="every shard led after a fault")

    def run(self, kind: str) -> FaultEvent:
        stores = self.stores
        live = sorted(stores.live())
        shard = 0
        detail = ""
        if kind == "pause":
            shard = self.rng.choice(stores.shard_ids())
            victim = self._leader_of(shard) or self.rng.choice(live)
            hold = self.election_timeout_s * self.rng.uniform(1.5, 3.0)
            p = stores.nodes[victim].proc
            assert p is not None
            start = self.clock()
            p.send_signal(signal.SIGSTOP)
            try:
                time.sleep(hold)  # sleep-ok: nemesis pause duration
            finally:
                p.send_signal(signal.SIGCONT)
            nids = [victim]
            detail = f"SIGSTOP {hold:.2f}s (leader of shard {shard})"
        elif kind == "crashpoint":
            victim = self.rng.choice(live)
            point = self.rng.choice(CRASH_POINTS)
            n = self.rng.randint(1, 40)
            start = self.clock()
            self._kill([victim])
            fired = self._restart_with_crash(victim, f"{point}:{n}")
            if fired:
                self.crashpoints_fired += 1
            else:
                self.crashpoints_not_fired += 1
            nids = [victim]
            detail = f"FLOTILLA_CRASH_AT={point}:{n} {'fired' if fired else 'NOT fired (not honoured?)'}"
        else:
            if kind == "kill_one":
                nids = [self.rng.choice(live)]
            elif kind == "kill_leader":
                shard = self.rng.choice(stores.shard_ids())
                leader = self._leader_of(shard)
                nids = [leader if leader is not None else self.rng.choice(live)]
                detail = f"leader of shard {shard}"
            elif kind == "kill_majority":
                nids = self.rng.sample(live, len(live) // 2 + 1)
            elif kind == "kill_all":
                nids = list(live)
            else:
                raise ValueError(kind)
            start = self.clock()
            self._kill(nids)
            down = self.election_timeout_s * self.rng.uniform(0.5, 2.5)
            time.sleep(down)  # sleep-ok: nemesis pause duration (how long the nodes stay down)
            self._restart(nids)
        self.wait_healed()
        ev = FaultEvent(kind=kind, start=start, end=self.clock(), detail=detail, nodes=tuple(nids), shard=shard)
        self.events.append(ev)
        self.log(f"nemesis {kind} nodes={list(nids)} {detail} healed in {ev.end - ev.start:.2f}s")
        return ev

    def _restart_with_crash(self, nid: int, spec: str, window_s: float = 4.0) -> bool:
        """Restart with FLOTILLA_CRASH_AT; True if the process ended with 137
        within the window. Either way it ends up restarted without it."""
        old = os.environ.get("FLOTILLA_CRASH_AT")
        os.environ["FLOTILLA_CRASH_AT"] = spec
        try:
            self.stores._spawn(nid)
        finally:
            if old is None:
                os.environ.pop("FLOTILLA_CRASH_AT", None)
            else:
                os.environ["FLOTILLA_CRASH_AT"] = old
        p = self.stores.nodes[nid].proc
        assert p is not None
        try:
            p.wait(timeout=window_s)  # a crash point fires as soon as the node persists or applies
        except Exception:  # noqa: BLE001 - still running: the point did not fire
            pass
        fired = p.poll() == 137
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=30)
        self._restart([nid])
        return fired
