"""What the web dashboard shows, as the placement leader knows it (DESIGN.md,
"Dashboard"; flotilla/dashboard.py serves it over HTTP).

`HeatSampler` takes a heat map sample (placement/heatmap.py) every
`interval_s` on the leader's duty loop: each shard's reads and writes per
second, summed over the heartbeat figures of its replicas (a follower
serves reads too; only the leader counts writes) from the nodes heard
within `fresh_s`, spread over the shard's slots in the map. Only the
shards with a nonzero rate are looked at (the shard table keeps them
apart): an idle cluster's sample costs nothing per shard. The ring is the
leader's memory: dropped when leadership is lost, started anew (a new ring
id) when it is won.

`document` builds the JSON-able document the page polls: nodes (state,
replicas, leaders, the figures of their last heartbeat), shards (slots,
replicas, leader, figures), operators with their progress, and the heat
map samples after the caller's last. Pure over what it is given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from flotillapb import placement_pb2 as ppb
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from placement.heatmap import MAX_ROWS, MAX_SAMPLES, HeatMap
from placement.model import NodeKind, NodeState, Shard
from placement.operators import AddLearner, CommitMerge, Operator, OperatorState, PrepareMerge, Promote, RemoveReplica, Split, Step, TransferLeader
from placement.shardtable import ShardTable
from placement.state import PlacementState

DEFAULT_INTERVAL_S = 1.0


class HeatSampler:
    def __init__(self, *, interval_s: float = DEFAULT_INTERVAL_S, max_samples: int = MAX_SAMPLES, max_rows: int = MAX_ROWS, fresh_s: float = 3.0) -> None:
        self.interval_s = interval_s
        self.max_samples = max_samples
        self.max_rows = max_rows
        self.fresh_s = fresh_s
        self.heat: HeatMap | None = None
        self.ring = ""
        """Names this ring (the leader's node id and term): a reader that sees another starts over."""
        self._next_at = 0.0

    def reset(self, ring: str = "") -> None:
        """Leadership lost (ring ""), or won (the new ring's name)."""
        self.heat = None
        self.ring = ring
        self._next_at = 0.0

    def maybe_sample(
        self,
        now: float,
        wall_ms: int,
        state: PlacementState,
        table: ShardTable,
        heard: Mapping[int, float],
    ) -> bool:
        """Take a sample if one is due (True if taken). `now` is monotonic, as `heard`."""
        if not self.ring or not state.bootstrapped or now < self._next_at:
            return False
        self._next_at = now + self.interval_s
        if self.heat is None or self.heat.slot_count != state.slot_count:
            self.heat = HeatMap(state.slot_count, max_rows=self.max_rows, max_samples=self.max_samples)
        rates = shard_rates(table, heard, now, self.fresh_s)
        # A shard with no reads or writes adds nothing to any row: only the busy ones are spread.
        self.heat.record(wall_ms, ((state.shards[sid].slots, r, w) for sid, (r, w) in rates.items() if sid in state.shards))
        return True


def shard_rates(table: ShardTable, heard: Mapping[int, float], now: float, fresh_s: float) -> dict[int, tuple[float, float]]:
    """shard id -> (reads/s, writes/s), summed over its replicas' figures
    from the nodes heard within fresh_s (only shards with a nonzero rate)."""
    fresh = {nid for nid, at in heard.items() if now - at <= fresh_s}
    out: dict[int, tuple[float, float]] = {}
    for sid, by_node in table.busy().items():
        r = w = 0.0
        for nid, (nr, nw) in by_node.items():
            if nid in fresh:
                r, w = r + nr, w + nw
        if r or w:
            out[sid] = (r, w)
    return out


# -- the document -------------------------------------------------------------------------


def step_text(step: Step) -> str:
    """As `flotilla ctl operators` writes a step: kind(argument)."""
    if isinstance(step, Split):
        return f"split({step.new_shard_id}@{step.at_slot})"
    if isinstance(step, PrepareMerge):
        return f"prepare-merge({step.target_shard_id})"
    if isinstance(step, CommitMerge):
        return f"commit-merge({step.source_shard_id})"
    names = {AddLearner: "add-learner", Promote: "promote", RemoveReplica: "remove-replica", TransferLeader: "transfer-leader"}
    return f"{names[type(step)]}({step.node_id})"


def _operator(op: Operator, now: float) -> dict[str, Any]:
    done = min(op.step_index, len(op.steps))
    return {
        "id": op.id,
        "kind": op.kind.value,
        "shard": op.shard_id,
        "shards": sorted(op.shards()),
        "state": op.state.value,
        "step": done,
        "steps": [step_text(s) for s in op.steps],
        "progress": f"{done}/{len(op.steps)}",
        "age_s": round(max(0.0, now - op.created_at), 1),
        "note": op.note,
    }


def _shard(s: Shard, st: ppb.ShardStats | None, rates: tuple[float, float] | None, operator: int | None) -> dict[str, Any]:
    return {
        "id": s.shard_id,
        "slots": [[lo, hi] for lo, hi in s.slots],
        "slot_count": sum(hi - lo for lo, hi in s.slots),
        "replicas": [{"node": r.node_id, "learner": r.learner} for r in s.replicas],
        "leader": s.leader_node_id,
        "term": s.leader_term,
        "epoch": f"{s.epoch.conf_version}/{s.epoch.slot_version}",
        "keys": st.key_count if st is not None else None,
        "bytes": st.size_bytes if st is not None else None,
        "reads_per_s": round(rates[0], 2) if rates is not None else None,
        "writes_per_s": round(rates[1], 2) if rates is not None else None,
        "operator": operator,
    }


def _round_rates(values: Iterable[float]) -> list[float]:
    """Three significant digits are plenty for a colour, and keep the document small."""
    return [float(f"{v:.3g}") for v in values]


def document(
    *,
    served_by: int,
    leader_id: int,
    is_leader: bool,
    placement_servers: Mapping[int, str],
    state: PlacementState,
    table: ShardTable,
    heard: Mapping[int, float],
    suspects: Sequence[int],
    operators: Sequence[Operator],
    sampler: HeatSampler,
    now: float,
    wall_ms: int,
    since: int = 0,
) -> dict[str, Any]:
    """The dashboard's document (JSON-able). On a follower: its applied map
    only (no heartbeat figures, operators or heat map: those are the leader's)."""
    suspect = set(suspects)
    rates = shard_rates(table, heard, now, sampler.fresh_s) if is_leader else {}
    leader_stats = table.leader_stats()
    running = {sid: op.id for op in operators if op.state == OperatorState.RUNNING for sid in op.shards()}
    replicas: dict[int, int] = {}
    learners: dict[int, int] = {}
    leaders: dict[int, int] = {}
    for s in state.shards.values():
        for r in s.replicas:
            counts = learners if r.learner else replicas
            counts[r.node_id] = counts.get(r.node_id, 0) + 1
        if s.leader_node_id:
            leaders[s.leader_node_id] = leaders.get(s.leader_node_id, 0) + 1
    nodes = []
    for nid, n in sorted(state.nodes.items()):
        figures = table.nodes.get(nid)
        at = heard.get(nid)
        node: dict[str, Any] = {
            "id": nid,
            "kind": n.kind.name.lower(),
            "address": n.address,
            "zone": n.zone,
            "labels": {k: v for k, v in n.labels},
            "state": n.state.name.lower(),
            "suspect": nid in suspect,
            "replicas": replicas.get(nid, 0) + learners.get(nid, 0),
            "learners": learners.get(nid, 0),
            "leaders": leaders.get(nid, 0),
            "heard_s_ago": round(max(0.0, now - at), 1) if is_leader and at is not None else None,
        }
        if figures is not None:
            node["reads_per_s"] = round(sum(st.read_rate for st in figures.shards.values()), 2)
            node["writes_per_s"] = round(sum(st.write_rate for st in figures.shards.values()), 2)
            node["alarms"] = [epb.AlarmType.Name(a) for a in figures.alarms]
        nodes.append(node)
    heat: dict[str, Any] = {"ring": sampler.ring, "interval_s": sampler.interval_s, "max_samples": sampler.max_samples, "rows": [], "samples": []}
    if is_leader and sampler.heat is not None:
        h = sampler.heat
        heat.update(
            rows=[[lo, hi] for lo, hi in h.rows],
            first_seq=h.first_seq,
            next_seq=h.next_seq,
            samples=[
                {"seq": s.seq, "t_ms": s.wall_ms, "reads": _round_rates(s.reads), "writes": _round_rates(s.writes)}
                for s in h.since(since)
            ],
        )
    return {
        "served_by": served_by,
        "leader_id": leader_id,
        "from_leader": is_leader,
        "placement_servers": [{"id": i, "address": a, "leader": i == leader_id} for i, a in sorted(placement_servers.items())],
        "now_ms": wall_ms,
        "cluster_id": f"{state.cluster_id:x}" if state.cluster_id else "",
        "map_version": state.map_version,
        "slot_count": state.slot_count,
        "nodes": nodes,
        "stores": sum(n.kind == NodeKind.STORE and n.state != NodeState.REMOVED for n in state.nodes.values()),
        "shards": [
            _shard(s, leader_stats.get(sid), rates.get(sid) if is_leader else None, running.get(sid))
            for sid, s in sorted(state.shards.items())
        ],
        "operators": [_operator(op, now) for op in operators] if is_leader else [],
        "heat": heat,
    }
