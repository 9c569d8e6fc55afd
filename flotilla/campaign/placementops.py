"""Operations asked of placement while a fault is on (transfer a leader,
split, merge, move a replica), for the nemesis (flotilla/campaign/nemesis.py),
and ``sync_map``: the store harness follows placement's map after a split
or merge. Blocking calls."""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from typing import Callable

import grpc

from flotilla.campaign.kinds import MAX_MERGES, MAX_SPLITS, MIN_SHARDS_TO_MERGE
from flotilla.cluster import Cluster, wait_until
from flotillapb import placement_pb2 as ppb

__all__ = ["PlacementOps"]


class PlacementOps:
    """Part of Nemesis: operations under a fault. Nemesis supplies the
    attributes below, ``stores``, and the network faults it mixes in
    (``_start_network_fault``, ``_clear_rules``, ``_busiest_leader``)."""

    cluster: Cluster
    rng: random.Random
    clock: Callable[[], float]
    election_timeout_s: float
    log: Callable[[str], None]
    splits: int
    merges: int
    op_outcomes: Counter

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
