"""What the placement leader hears from nodes: registration, heartbeats and
down detection (DESIGN.md, "The shard map"; TiKV's PD heartbeats).

`NodeTracker` keeps, in the leader's memory only, when each node was last
heard and its latest heartbeat figures (shard sizes and loads, alarms). A
heartbeat carries the shard descriptors its store leads: each is reported
to the map, gated by the epoch (stale ones never reach the log). A node
heard again after being marked down is up again; the duty loop marks down
the up nodes unheard for `down_after_s` (`mark_down`).
"""

from __future__ import annotations

import asyncio
import logging

from flotillapb import placement_pb2 as ppb
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from placement import convert
from placement.commands import RegisterNode, RejectCode, Rejected, ReportOutcome, ReportResult, SetNodeState
from placement.config import PlacementConfig
from placement.errors import RejectedError
from placement.group import PlacementGroup
from placement.model import NodeKind, NodeState, Shard
from placement.reports import ReportBatcher

log = logging.getLogger(__name__)

NOSPACE = epb.AlarmType.NOSPACE


class NodeTracker:
    def __init__(self, group: PlacementGroup, cfg: PlacementConfig) -> None:
        self.g = group
        self.cfg = cfg
        self.heard: dict[int, float] = {}
        """When each node was last heard (monotonic) by this leader."""
        self.stats: dict[int, ppb.StoreHeartbeatRequest] = {}
        """Each node's latest heartbeat to this leader."""
        self.heartbeats = 0
        self.reports = ReportBatcher(self.g.propose)

    def forget(self) -> None:
        """Leadership lost or just won: the last leader's memory is no use."""
        self.heard.clear()
        self.stats.clear()

    async def register_node(self, node_id: int, kind: NodeKind, address: str, labels: tuple[tuple[str, str], ...]) -> int:
        self.g.require_leader()
        nid = await self.g.propose_ok(RegisterNode(node_id, kind, address, labels))
        assert isinstance(nid, int)
        self.heard[nid] = self.g.clock.monotonic()
        return nid

    async def heartbeat(self, req: ppb.StoreHeartbeatRequest) -> NodeState:
        self.g.require_leader()
        state = self.g.state
        node = state.nodes.get(req.node_id)
        if node is None:
            raise RejectedError(Rejected(RejectCode.NODE_NOT_FOUND, f"node {req.node_id} is not registered: call RegisterNode first"))
        self.heartbeats += 1
        self.heard[req.node_id] = self.g.clock.monotonic()
        self.stats[req.node_id] = req
        if node.state == NodeState.DOWN:
            await self.g.propose_ok(SetNodeState(req.node_id, NodeState.UP))
            log.info("placement node=%d: node %d is up again", self.g.node_id, req.node_id)
        new = []
        for s in req.shards:
            if s.is_leader and s.HasField("descriptor"):
                shard = convert.shard_from_pb(s.descriptor, s.term)
                if self.g.state.judge_report(shard) == ReportOutcome.ACCEPTED:
                    new.append(shard)
        if new:  # together: they share the reports' batches (placement/reports.py)
            await asyncio.gather(*(self.reports.report(shard) for shard in new))
        return self.g.state.nodes[req.node_id].state

    async def report_shard(self, shard: Shard) -> ReportResult:
        self.g.require_leader()
        outcome = self.g.state.judge_report(shard)
        if outcome != ReportOutcome.ACCEPTED:
            return ReportResult(outcome, self.g.state.shards.get(shard.shard_id))
        return await self.reports.report(shard)

    async def mark_down(self) -> None:
        """Mark down the up nodes unheard for down_after_s (a node not heard
        since this leader became ready counts as heard then)."""
        assert self.g.ready_at is not None
        now = self.g.clock.monotonic()
        for nid in self.g.state.nodes_to_mark_down(self.heard, now, self.cfg.down_after_s, self.g.ready_at):
            await self.g.propose_ok(SetNodeState(nid, NodeState.DOWN))
            log.info("placement node=%d: node %d unheard for %.1fs, marked down", self.g.node_id, nid, self.cfg.down_after_s)

    # -- figures from the heartbeats ---------------------------------------------------
    def leader_shard_stats(self) -> list[ppb.ShardStats]:
        """Each shard's figures from the latest heartbeat of the store that
        leads it (in memory on the placement leader only)."""
        out: dict[int, ppb.ShardStats] = {}
        for hb in self.stats.values():
            for st in hb.shards:
                if st.is_leader and (st.shard_id not in out or st.term > out[st.shard_id].term):
                    out[st.shard_id] = st
        return [out[sid] for sid in sorted(out)]

    def nospace_nodes(self) -> list[int]:
        """Nodes whose last heartbeat to this leader reported NOSPACE (a new
        leader learns them again within one heartbeat interval)."""
        return sorted(nid for nid, hb in self.stats.items() if NOSPACE in hb.alarms and nid in self.g.state.nodes)
