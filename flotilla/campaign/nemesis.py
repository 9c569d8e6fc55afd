"""Faults against a real cluster (flotilla/cluster.py). Blocking calls: the
runner runs them on a thread.

Store nodes: kill -9 of one node, of a shard's leader, of a majority, of
every store at once, then restart; SIGSTOP/SIGCONT pauses longer than the
election timeout; crash points (FLOTILLA_CRASH_AT=<point>:<n> in the
restarted process's environment, CRASH_POINTS).

Network (the cluster started with faults=True: every process reads a rule
file, raft/transport/faults.py, applied to the Raft messages it sends):
isolate a node leading shards, a minority/majority split of the stores and
of the placement servers, a bridge (two nodes cut from each other, both
still talking to a third: non-transitive), a one-way drop from a leader,
delays (with jitter) longer than the election timeout. Clock: a wall clock
offset of +-(50..2000) ms on a store or placement server, live through the
rule file or by a restart with FLOTILLA_CLOCK_OFFSET_MS.

Operations under a fault: while a partition, delay or pause is on, ask
placement to transfer a shard's leader, split a shard or move a replica;
each may fail, and the outcome is recorded in the event's detail.

Placement servers and the router: kill -9 or pause of the placement leader
or a follower (restarted on its port), kill -9 or pause of the router
(restarted on its port: clients reconnect).

Every fault heals before the next begins (restart, SIGCONT, rules cleared),
and the nemesis then waits, against a deadline, for every shard to have a
leader again, placement to have one, and the router to serve.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import grpc

from flotilla.campaign.history import FaultEvent
from flotilla.campaign.kinds import (
    CRASH_POINTS,
    MAX_SPLITS,
    OP_KINDS,
    PARTITION_KINDS,
    PLACEMENT_KINDS,
    ROUTER_KINDS,
)
from flotilla.campaign.netfaults import NetworkFaults
from flotilla.campaign.placementops import PlacementOps
from flotilla.campaign.rolefaults import RoleFaults
from flotilla.cluster import Cluster, wait_until
from flotilla.router_main import RouterProcess
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc as eg

__all__ = ["Nemesis"]


@dataclass
class Nemesis(NetworkFaults, PlacementOps, RoleFaults):
    """Runs one fault at a time (``run``) and waits for the cluster to heal.
    Store process faults (kills, pauses, crash points) are here; network and
    clock faults (netfaults.py), operations under a fault (placementops.py)
    and placement server and router faults (rolefaults.py) are mixed in."""

    cluster: Cluster
    rng: random.Random
    clock: Callable[[], float] = time.monotonic
    election_timeout_s: float = 1.0
    heal_timeout_s: float = 60.0
    log: Callable[[str], None] = print
    router: RouterProcess | None = None
    router_down: threading.Event = field(default_factory=threading.Event)
    """Set while the router is killed: clients hold their operations (the
    outcome of one sent to no process is not unknown, it is "not sent")."""
    crashpoints_fired: int = 0
    crashpoints_not_fired: int = 0
    crashpoints_by_point: Counter = field(default_factory=Counter)
    """"<point>:fired" / "<point>:not_fired" -> count."""
    splits: int = 0
    merges: int = 0
    max_clock_offset_ms: int = 0
    """The largest |offset| any process's wall clock had: the staleness checker's slack."""
    op_outcomes: Counter = field(default_factory=Counter)
    """(kind, "ok"/"failed") of the operations asked of placement under a fault."""
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
        wait_until(self.cluster.placement.leader, timeout=self.heal_timeout_s, what="a placement leader after a fault")
        if self.router is not None:
            wait_until(self._router_serves, timeout=self.heal_timeout_s, what="the router serving after a fault")

    def _router_serves(self) -> bool:
        assert self.router is not None
        ch = grpc.insecure_channel(self.router.address)
        try:
            eg.KVStub(ch).Range(epb.RangeRequest(key=b"nemesis/heal"), timeout=5)
            return True
        except grpc.RpcError:
            return False
        finally:
            ch.close()

    def run(self, kind: str) -> FaultEvent:
        stores = self.stores
        live = sorted(stores.live())
        shard = 0
        detail = ""
        if kind in PARTITION_KINDS:
            start = self.clock()
            nids, shard, detail = self._network_fault(kind)
        elif kind == "clock":
            start = self.clock()
            nids, detail = self._clock_fault()
        elif kind in OP_KINDS:
            start = self.clock()
            nids, shard, detail = self._op_under_fault(kind)
        elif kind in PLACEMENT_KINDS:
            start = self.clock()
            nids, detail = self._placement_fault(kind)
        elif kind in ROUTER_KINDS:
            start = self.clock()
            nids, detail = self._router_fault(kind)
        elif kind == "pause":
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
            if point == "split_apply" and self.splits >= MAX_SPLITS:
                point = self.rng.choice([p for p in CRASH_POINTS if p != "split_apply"])  # no more splits this run
            if point == "merge_apply" and not self._may_merge():
                point = self.rng.choice([p for p in CRASH_POINTS if p not in ("split_apply", "merge_apply")])
            n = self.rng.randint(1, 40)
            start = self.clock()
            self._kill([victim])
            window_s = 6.0
            if point in ("before_snapshot_apply", "after_snapshot_apply"):
                # Down long enough for the leaders to compact past it: it then
                # catches up by snapshot.
                n = 1
                time.sleep(self.rng.uniform(10.0, 15.0))  # sleep-ok: nemesis pause duration (how long the node stays down)
                window_s = 10.0
            elif point in ("snapshot_save", "split_apply", "merge_apply"):
                n, window_s = 1, 10.0
            during = {"split_apply": self._split_somewhere, "merge_apply": self._merge_somewhere}.get(point)
            fired = self._restart_with_crash(victim, f"{point}:{n}", window_s=window_s, during=during)
            if fired:
                self.crashpoints_fired += 1
            else:
                self.crashpoints_not_fired += 1
            self.crashpoints_by_point[f"{point}:{'fired' if fired else 'not_fired'}"] += 1
            if point in ("split_apply", "merge_apply"):
                self.sync_map()
            nids = [victim]
            detail = f"FLOTILLA_CRASH_AT={point}:{n} {'fired' if fired else 'NOT fired (not reached in the window?)'}"
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

    def _restart_with_crash(
        self, nid: int, spec: str, window_s: float = 4.0, during: Callable[[], str] | None = None
    ) -> bool:
        """Restart with FLOTILLA_CRASH_AT; True if the process ended with 137
        within the window (during(), if given, runs once it is up: what
        reaches the point). Either way it ends up restarted without it."""
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
        try:  # the window starts once it serves (a start takes seconds on a loaded machine)
            self.stores._await_ready(nid)
            self.stores.connect_all()
            if during is not None:
                self.log(f"nemesis crashpoint {spec}: {during()}")
        except Exception as exc:  # noqa: BLE001 - it may have crashed already: that is the point
            self.log(f"nemesis crashpoint {spec}: {exc!r}")
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
