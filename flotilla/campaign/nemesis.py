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
from flotilla.cluster import Cluster, wait_until
from flotilla.router_main import RouterProcess
from flotillapb import placement_pb2 as ppb
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc as eg
from raft.transport.faults import Rules, write_rules

__all__ = ["Nemesis", "KINDS", "CRASH_POINTS", "ALIASES", "parse_kinds"]

PARTITION_KINDS = ("partition_leader", "partition_split", "partition_bridge", "partition_oneway", "delay")
OP_KINDS = ("transfer_under_fault", "split_under_fault", "move_under_fault", "merge_under_fault")
PLACEMENT_KINDS = ("kill_placement_leader", "kill_placement_follower", "pause_placement")
ROUTER_KINDS = ("kill_router", "pause_router")
KINDS = (
    "kill_one", "kill_leader", "kill_majority", "kill_all", "pause", "crashpoint",
    *PARTITION_KINDS, "clock", *OP_KINDS, *PLACEMENT_KINDS, *ROUTER_KINDS,
)
CRASH_POINTS = (
    "before_persist", "after_persist", "before_apply", "after_apply",
    "snapshot_save", "before_snapshot_apply", "after_snapshot_apply", "split_apply", "merge_apply",
)
ALIASES = {
    "kill": ("kill_one", "kill_leader", "kill_majority", "kill_all"),
    "partition": PARTITION_KINDS,
    "ops": OP_KINDS,
    "placement": PLACEMENT_KINDS,
    "router": ROUTER_KINDS,
    "all": KINDS,
}
MAX_SPLITS = 2  # per run: each split adds a shard (a Raft group on every store)
MAX_MERGES = 2  # per run, and only while at least MIN_SHARDS_TO_MERGE shards exist
MIN_SHARDS_TO_MERGE = 3


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

    # -- operations under a fault --------------------------------------------------------------
    def _op_under_fault(self, kind: str) -> tuple[list[int], int, str]:
        under = self.rng.choice(("partition_leader", "partition_oneway", "delay", "pause"))
        paused: int | None = None
        if under == "pause":
            nids, shard = list(self._busiest_leader()[:1]), 0
            paused = nids[0]
            self.stores.nodes[paused].send_signal(signal.SIGSTOP)
            fdetail = f"node {paused} paused"
        else:
            nids, shard, fdetail = self._start_network_fault(under)
        t0 = self.clock()
        try:
            time.sleep(self.election_timeout_s * self.rng.uniform(0.2, 1.0))  # sleep-ok: let the fault bite first
            op, shard = self._placement_op(kind, shard)
            left = self.election_timeout_s * 3 - (self.clock() - t0)
            if left > 0:
                time.sleep(left)  # sleep-ok: nemesis fault duration
        finally:
            if paused is not None:
                self.stores.nodes[paused].send_signal(signal.SIGCONT)
            self._clear_rules()
        if kind in ("split_under_fault", "merge_under_fault"):
            self.sync_map()
        return nids, shard, f"{op} while {fdetail}"

    def _placement_op(self, kind: str, shard: int) -> tuple[str, int]:
        """Ask placement (as `flotilla ctl` does) for the operation; returns
        its description with the outcome, and the shard."""
        stores = sorted(self.cluster.store_ids)
        shards = self.stores.shard_ids()
        shard = shard if shard in shards else self.rng.choice(shards)
        if kind == "transfer_under_fault":
            to = self.rng.choice(stores)
            name, req, method = f"transfer shard {shard} leader to {to}", ppb.TransferLeaderRequest(shard_id=shard, node_id=to), "TransferLeader"
        elif kind == "split_under_fault":
            if self.splits >= MAX_SPLITS:
                self.op_outcomes[(kind, "skipped")] += 1
                return f"split of shard {shard} skipped (the run's {MAX_SPLITS} splits done)", shard
            name, req, method = f"split shard {shard}", ppb.SplitRequest(shard_id=shard, at_slot=0), "Split"
        elif kind == "merge_under_fault":
            if not self._may_merge():
                self.op_outcomes[(kind, "skipped")] += 1
                return f"merge skipped ({self.merges} merges done, {len(shards)} shards)", shard
            source = shard if shard in shards else self.rng.choice(shards)
            target = self.rng.choice([s for s in shards if s != source])
            name, req, method = f"merge shard {source} into shard {target}", ppb.MergeRequest(shard_id=target, other_shard_id=source), "Merge"
        elif kind == "move_under_fault":
            # From a replica to a store without one, by the map (with 3
            # stores there is none: placement refuses, and that is recorded).
            try:
                d = next(s.descriptor for s in self.cluster.get_map(linearizable=False).shards if s.descriptor.shard_id == shard)
                holders = sorted(r.node_id for r in d.replicas)
            except (grpc.RpcError, StopIteration):
                holders = []
            others = [n for n in stores if n not in holders]
            frm = self.rng.choice(holders or stores)
            to = self.rng.choice(others or [n for n in stores if n != frm])
            name, req, method = f"move shard {shard} replica {frm} -> {to}", ppb.MoveRequest(shard_id=shard, from_node=frm, to_node=to), "Move"
        else:
            raise ValueError(kind)
        try:
            resp = self.cluster.call(method, req, timeout=10)
            if kind == "split_under_fault":
                self.splits += 1
            if kind == "merge_under_fault":
                self.merges += 1
            self.op_outcomes[(kind, "ok")] += 1
            return f"{name}: accepted, operator {resp.operator.id} {resp.operator.state}", shard
        except (grpc.RpcError, AssertionError) as exc:
            self.op_outcomes[(kind, "failed")] += 1
            why = f"{exc.code().name}: {exc.details()}" if isinstance(exc, grpc.RpcError) else repr(exc)[:200]  # type: ignore[attr-defined]
            return f"{name}: failed ({why})", shard

    def _may_merge(self) -> bool:
        return self.merges < MAX_MERGES and len(self.stores.shard_ids()) >= MIN_SHARDS_TO_MERGE

    def _merge_somewhere(self) -> str:
        """Merge two random shards through placement (the merge_apply crash point)."""
        desc, _ = self._placement_op("merge_under_fault", 0)
        return desc

    def _split_somewhere(self) -> str:
        """Split a random shard through placement (the split_apply crash point)."""
        desc, _ = self._placement_op("split_under_fault", 0)
        return desc

    def sync_map(self, timeout_s: float = 30.0) -> None:
        """Take the shards' slots and epochs from placement's map into the
        store harness (a split or merge through placement changed them):
        once no merge operator runs (a merge ends with its source leaving
        the map), every shard in the map, led, its epoch as its leader
        reports it; shards gone from the map were merged away."""

        def synced() -> bool:
            ops = self.cluster.call("ListOperators", ppb.ListOperatorsRequest()).operators
            if self.merges and any(o.kind == "merge" and o.state == "running" for o in ops):
                return False
            m = self.cluster.get_map()
            if not all(s.descriptor.leader_node_id for s in m.shards):
                return False
            for s in m.shards:
                d = s.descriptor
                ranges = tuple((r.start, r.end) for r in d.slots)
                self.stores.splits[d.shard_id] = (ranges, (d.epoch.conf_version, d.epoch.slot_version))
            in_map = {s.descriptor.shard_id for s in m.shards}
            self.stores.merged.update(sid for sid in self.stores.shard_ids() if sid not in in_map)
            return True

        try:
            wait_until(synced, timeout=timeout_s, what="placement's map with every shard led")
        except AssertionError as exc:
            self.log(f"nemesis: map not synced: {exc}")

    # -- placement servers and the router ------------------------------------------------------
    def _placement_fault(self, kind: str) -> tuple[list[int], str]:
        pl = self.cluster.placement
        leader = pl.wait_leader(timeout=self.heal_timeout_s)
        if kind == "kill_placement_leader":
            victim = leader
        elif kind == "kill_placement_follower":
            victim = self.rng.choice([n for n in pl.live() if n != leader])
        else:
            victim = self.rng.choice(sorted(pl.live()))
        role = "leader" if victim == leader else "follower"
        if kind == "pause_placement":
            p = pl.nodes[victim]
            p.send_signal(signal.SIGSTOP)
            try:
                hold = self.election_timeout_s * self.rng.uniform(1.5, 3.0)
                time.sleep(hold)  # sleep-ok: nemesis pause duration
            finally:
                p.send_signal(signal.SIGCONT)
            return [victim], f"placement {role} {victim} SIGSTOP {hold:.2f}s"
        pl.nodes[victim].kill()
        down = self.election_timeout_s * self.rng.uniform(0.5, 2.5)
        time.sleep(down)  # sleep-ok: nemesis pause duration (how long the node stays down)
        pl.restart(victim)
        return [victim], f"placement {role} {victim} killed, down {down:.2f}s"

    def _router_fault(self, kind: str) -> tuple[list[int], str]:
        r = self.router
        if r is None:
            raise ValueError(f"{kind}: the nemesis was given no router")
        hold = self.election_timeout_s * self.rng.uniform(1.0, 3.0)
        if kind == "pause_router":
            r.send_signal(signal.SIGSTOP)
            try:
                time.sleep(hold)  # sleep-ok: nemesis pause duration
            finally:
                r.send_signal(signal.SIGCONT)
            return [], f"router SIGSTOP {hold:.2f}s"
        port = r.port
        self.router_down.set()
        try:
            r.kill()
            time.sleep(hold)  # sleep-ok: nemesis pause duration (how long the router stays down)
            r.start(port=port)
            wait_until(self._router_serves, timeout=self.heal_timeout_s, what="the restarted router serving")
        finally:
            self.router_down.clear()
        return [], f"router killed, restarted on port {port} after {hold:.2f}s"
