"""What the placement leader hears from nodes: registration, heartbeats and
down detection (DESIGN.md, "The shard map"; TiKV's PD heartbeats).

`NodeTracker` keeps, in the leader's memory only, when each node was last
heard and its shard figures (sizes, loads, alarms), merged from delta
heartbeats into a `ShardTable` (placement/shardtable.py). A shard whose
figures changed carries its descriptor if its store leads it: each is
reported to the map, gated by the epoch (stale ones never reach the log);
the work per heartbeat is per shard changed, not per shard hosted. A node
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
from placement.shardtable import ShardTable

log = logging.getLogger(__name__)

NOSPACE = epb.AlarmType.NOSPACE


class NodeTracker:
    def __init__(self, group: PlacementGroup, cfg: PlacementConfig) -> None:
        self.g = group
        self.cfg = cfg
        self.heard: dict[int, float] = {}
        """When each node was last heard (monotonic) by this leader."""
        self.table = ShardTable()
        """Each node's shard figures, merged from its heartbeats to this leader."""
        self.heartbeats = 0
        self.reports = ReportBatcher(self.g.propose)

    def forget(self) -> None:
        """Leadership lost or just won: the last leader's memory is no use
        (every store sends a full heartbeat to the next one)."""
        self.heard.clear()
        self.table.clear()

    async def register_node(self, node_id: int, kind: NodeKind, address: str, labels: tuple[tuple[str, str], ...]) -> int:
        self.g.require_leader()
        nid = await self.g.propose_ok(RegisterNode(node_id, kind, address, labels))
        assert isinstance(nid, int)
        self.heard[nid] = self.g.clock.monotonic()
        return nid

    async def heartbeat(self, req: ppb.StoreHeartbeatRequest) -> tuple[NodeState, int]:
        """Take a heartbeat: (the node's state, the seq its table now holds)."""
        self.g.require_leader()
        state = self.g.state
        node = state.nodes.get(req.node_id)
        if node is None:
            raise RejectedError(Rejected(RejectCode.NODE_NOT_FOUND, f"node {req.node_id} is not registered: call RegisterNode first"))
        self.heartbeats += 1
        now = self.g.clock.monotonic()
        self.heard[req.node_id] = now
        acked, changed = self.table.merge(req)
        await self._up_again(req.node_id)
        for rid in req.routers:  # routers in the sender's process live as long as it does
            r = state.nodes.get(rid)
            if r is not None and r.kind == NodeKind.ROUTER:
                self.heard[rid] = now
                await self._up_again(rid)
        new = []
        for s in changed:
            if s.is_leader and s.HasField("descriptor"):
                shard = convert.shard_from_pb(s.descriptor, s.term)
                if self.g.state.judge_report(shard) == ReportOutcome.ACCEPTED:
                    new.append(shard)
        if new:  # together: they share the reports' batches (placement/reports.py)
            await asyncio.gather(*(self.reports.report(shard) for shard in new))
        return self.g.state.nodes[req.node_id].state, acked

    async def _up_again(self, node_id: int) -> None:
        """A node marked down but heard again is up."""
        node = self.g.state.nodes.get(node_id)
        if node is not None and node.state == NodeState.DOWN:
            await self.g.propose_ok(SetNodeState(node_id, NodeState.UP))
            log.info("placement node=%d: node %d is up again", self.g.node_id, node_id)

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
        """Each shard's figures from the heartbeats of the store that leads
        it (in memory on the placement leader only)."""
        out = self.table.leader_stats()
        return [out[sid] for sid in sorted(out)]

    def nospace_nodes(self) -> list[int]:
        """Nodes whose last heartbeat to this leader reported NOSPACE (a new
        leader learns them again within one heartbeat interval)."""
        return sorted(nid for nid, n in self.table.nodes.items() if NOSPACE in n.alarms and nid in self.g.state.nodes)
