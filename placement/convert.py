"""Between placement's values (placement/model.py, the state) and protobuf
messages (placement.proto).

The servicer and the harness use it; the pure state never sees protobuf.
(placement/codec.py is the encoding of the log and the records.)
"""

from __future__ import annotations

from collections.abc import Iterator

from flotillapb import placement_pb2 as ppb
from flotillapb import store_pb2 as spb
from placement.commands import MapChange
from placement.model import Epoch, Node, NodeKind, NodeState, Replica, Shard
from placement.state import PlacementState
from shard.slots import normalize


def labels_from_pb(labels: object) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((lb.key, lb.value) for lb in labels))  # type: ignore[attr-defined]


def node_to_pb(n: Node) -> ppb.NodeInfo:
    return ppb.NodeInfo(
        node_id=n.node_id,
        kind=int(n.kind),
        address=n.address,
        labels=[ppb.Label(key=k, value=v) for k, v in n.labels],
        state=int(n.state),
    )


def node_from_pb(m: ppb.NodeInfo) -> Node:
    return Node(m.node_id, NodeKind(m.kind), m.address, labels_from_pb(m.labels), NodeState(m.state))


def shard_to_pb(s: Shard, nodes: dict[int, Node]) -> ppb.ShardInfo:
    return ppb.ShardInfo(
        descriptor=spb.ShardDescriptor(
            shard_id=s.shard_id,
            epoch=spb.ShardEpoch(conf_version=s.epoch.conf_version, slot_version=s.epoch.slot_version),
            slots=[spb.SlotRange(start=lo, end=hi) for lo, hi in s.slots],
            replicas=[
                spb.Replica(node_id=r.node_id, address=nodes[r.node_id].address if r.node_id in nodes else "", learner=r.learner)
                for r in s.replicas
            ],
            leader_node_id=s.leader_node_id,
        ),
        leader_term=s.leader_term,
    )


def shard_from_pb(d: spb.ShardDescriptor, term: int) -> Shard:
    return Shard(
        shard_id=d.shard_id,
        slots=normalize((r.start, r.end) for r in d.slots),
        replicas=tuple(Replica(r.node_id, r.learner) for r in d.replicas),
        epoch=Epoch(d.epoch.conf_version, d.epoch.slot_version),
        leader_node_id=d.leader_node_id,
        leader_term=term,
    )


def map_to_pb(st: PlacementState) -> ppb.ClusterMap:
    return ppb.ClusterMap(
        cluster_id=st.cluster_id,
        slot_count=st.slot_count,
        map_version=st.map_version,
        nodes=[node_to_pb(n) for _, n in sorted(st.nodes.items())],
        shards=[shard_to_pb(s, st.nodes) for _, s in sorted(st.shards.items())],
        retired_shards=sorted(st.retired),
    )


SHARDS_PER_PART = 8192
"""Shards per WatchMap response of a whole map: about 700 KB at three
replicas each, well below gRPC's default 4 MiB message limit (a 100,000-shard
map is 8.5 MB whole)."""


def map_parts_to_pb(st: PlacementState, shards_per_part: int = SHARDS_PER_PART) -> list[ppb.WatchMapResponse]:
    """The whole map as WatchMap responses (see WatchMapResponse.more): the
    first carries the map's fields, nodes and first shards, every part some
    shards, all but the last more = true."""
    return list(iter_map_parts(st, shards_per_part))


def iter_map_parts(st: PlacementState, shards_per_part: int = SHARDS_PER_PART) -> Iterator[ppb.WatchMapResponse]:
    """map_parts_to_pb one part at a time. Every part is built from the
    state as it is when the part is taken: a caller that sends each before
    building the next (letting changes apply in between) sends a map whose
    parts may be of different versions; the changes after the first part's
    version, sent after the last part, bring it up to date (each shard's
    newest descriptor wins by its epoch, removals come as changes)."""
    version = st.map_version
    sids = sorted(st.shards)
    first = True
    for i in range(0, max(1, len(sids)), shards_per_part):
        more = i + shards_per_part < len(sids)
        ids = sids[i : i + shards_per_part]
        if not more:
            known = set(sids)
            ids += sorted(sid for sid in st.shards if sid not in known)  # created since the first part
        shards = [shard_to_pb(s, st.nodes) for sid in ids if (s := st.shards.get(sid)) is not None]
        if first:
            m = ppb.ClusterMap(
                cluster_id=st.cluster_id,
                slot_count=st.slot_count,
                map_version=version,
                nodes=[node_to_pb(n) for _, n in sorted(st.nodes.items())],
                shards=shards,
                retired_shards=sorted(st.retired),
            )
            first = False
        else:
            m = ppb.ClusterMap(shards=shards)
        yield ppb.WatchMapResponse(map_version=version, full=m, more=more)


def change_to_pb(ch: MapChange, st: PlacementState) -> ppb.WatchMapResponse:
    """A change as one response (a whole-map change: see map_parts_to_pb)."""
    if ch.full:
        return ppb.WatchMapResponse(map_version=ch.map_version, full=map_to_pb(st))
    return ppb.WatchMapResponse(
        map_version=ch.map_version,
        nodes=[node_to_pb(n) for n in ch.nodes],
        shards=[shard_to_pb(s, st.nodes) for s in ch.shards],
        removed_shards=list(ch.removed_shards),
    )
