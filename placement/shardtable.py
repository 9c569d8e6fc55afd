"""The placement leader's table of the stores' shard figures, merged from
delta heartbeats (PURE; DESIGN.md, "Heartbeats").

A store sends, each heartbeat, only the shards whose figures changed since
the heartbeat the leader last acknowledged (plus the shards it no longer
hosts), and every shard now and then (a full heartbeat). `ShardTable` keeps,
per node, the figures as of the heartbeat numbered `seq` in the store's
`session`, and the rule that keeps it exact: a delta is applied only on top
of the table it was built against (same session, table at `base_seq`);
anything else, a lost heartbeat, a duplicate that does not fit, a store
restarted, a leader that never heard this store, is refused and the store
answers with a full heartbeat. By induction a table numbered `seq` holds
exactly what the store had at `seq`: a duplicate of the last heartbeat
taken is acknowledged again and changes nothing.

Indexes kept up to date as deltas arrive, so the leader's duties read
what they need without walking every shard of every node: leader claims
(the figures of each shard's leader), freezes for merges, and the shards
with a nonzero read or write rate. `version` moves with every change.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from flotillapb import placement_pb2 as ppb

V = TypeVar("V")


@dataclass(slots=True)
class NodeFigures:
    """One node's merged heartbeats."""

    session: int = 0
    seq: int = 0
    shards: dict[int, ppb.ShardStats] = field(default_factory=dict)
    alarms: tuple[int, ...] = ()


class ShardTable:
    def __init__(self) -> None:
        self.nodes: dict[int, NodeFigures] = {}
        self.version = 0
        """Moves whenever any shard's figures change (a cache key for their readers)."""
        self._leaders: dict[int, dict[int, ppb.ShardStats]] = {}
        """shard -> node -> figures, for the nodes that claim to lead it."""
        self._frozen: dict[int, dict[int, int]] = {}
        """shard -> node -> merge target, for the replicas frozen for a merge."""
        self._busy: dict[int, dict[int, tuple[float, float]]] = {}
        """shard -> node -> (reads/s, writes/s), for the replicas with a nonzero rate."""

    def clear(self) -> None:
        """Leadership lost or won: every store sends a full heartbeat next."""
        self.nodes.clear()
        self._leaders.clear()
        self._frozen.clear()
        self._busy.clear()
        self.version += 1

    # -- merging ---------------------------------------------------------------------------
    def merge(self, req: ppb.StoreHeartbeatRequest) -> tuple[int, list[ppb.ShardStats]]:
        """Take a heartbeat. Returns the seq the node's table now holds (the
        request's seq if taken; anything else asks for a full heartbeat) and
        the figures it changed (the leader reports their descriptors)."""
        nid = req.node_id
        node = self.nodes.get(nid)
        if req.session == 0 or req.full:  # a full heartbeat (session 0: a sender without deltas)
            if node is not None and req.session and node.session == req.session and node.seq >= req.seq:
                return node.seq, []  # a late duplicate of an older heartbeat: the table is newer
            if node is None:
                node = self.nodes[nid] = NodeFigures()
            node.session, node.seq, node.alarms = req.session, req.seq, tuple(req.alarms)
            old = node.shards
            new = {st.shard_id: st for st in req.shards}
            for sid in old.keys() - new.keys():
                self._put(nid, sid, None)
            changed = [st for sid, st in new.items() if old.get(sid) != st]
            for st in changed:
                self._put(nid, st.shard_id, st)
            node.shards = new
            return node.seq, changed
        if node is None or node.session != req.session:
            return 0, []  # no table for this session: a full heartbeat, please
        if node.seq == req.seq:
            node.alarms = tuple(req.alarms)
            return node.seq, []  # a duplicate of the heartbeat taken last
        if node.seq != req.base_seq:
            return node.seq, []  # built on a table we do not hold: a full heartbeat, please
        node.seq, node.alarms = req.seq, tuple(req.alarms)
        for sid in req.removed_shards:
            if sid in node.shards:
                del node.shards[sid]
                self._put(nid, sid, None)
        changed = []
        for st in req.shards:
            if node.shards.get(st.shard_id) != st:
                node.shards[st.shard_id] = st
                self._put(nid, st.shard_id, st)
                changed.append(st)
        return node.seq, changed

    def _put(self, nid: int, sid: int, st: ppb.ShardStats | None) -> None:
        self.version += 1
        _index(self._leaders, sid, nid, st if st is not None and st.is_leader else None)
        _index(self._frozen, sid, nid, st.merge_target if st is not None and st.merge_target else None)
        rates = (max(st.read_rate, 0.0), max(st.write_rate, 0.0)) if st is not None else (0.0, 0.0)
        _index(self._busy, sid, nid, rates if rates != (0.0, 0.0) else None)

    def drop(self, node_ids: Iterable[int]) -> None:
        """Forget nodes (no longer in the map)."""
        for nid in list(node_ids):
            node = self.nodes.pop(nid, None)
            if node is not None:
                for sid in node.shards:
                    self._put(nid, sid, None)

    # -- reading -------------------------------------------------------------------------
    def shards_of(self, node_id: int) -> Iterator[ppb.ShardStats]:
        node = self.nodes.get(node_id)
        return iter(node.shards.values()) if node is not None else iter(())

    def alarms(self, node_id: int) -> tuple[int, ...]:
        node = self.nodes.get(node_id)
        return node.alarms if node is not None else ()

    def leads(self, node_id: int, shard_id: int) -> bool:
        """Whether the node's latest figures say it leads the shard."""
        return node_id in self._leaders.get(shard_id, ())

    def leader_stats(self) -> dict[int, ppb.ShardStats]:
        """Each shard's figures from the node that claims to lead it with the highest term."""
        return {sid: max(by.values(), key=lambda st: st.term) for sid, by in self._leaders.items()}

    def frozen(self) -> dict[int, dict[int, int]]:
        """shard -> node -> merge target: the replicas frozen for a merge."""
        return {sid: dict(by) for sid, by in self._frozen.items()}

    def busy(self) -> Mapping[int, Mapping[int, tuple[float, float]]]:
        """shard -> node -> (reads/s, writes/s): the replicas with a nonzero rate (read only)."""
        return self._busy


def _index(index: dict[int, dict[int, V]], sid: int, nid: int, value: V | None) -> None:
    if value is None:
        by = index.get(sid)
        if by is not None:
            by.pop(nid, None)
            if not by:
                del index[sid]
    else:
        index.setdefault(sid, {})[nid] = value
