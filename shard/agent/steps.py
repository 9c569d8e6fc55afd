"""Operator steps: what placement answers a heartbeat with, carried out by
the leader of each shard they name.

Conf changes ADD_LEARNER, ADD_NODE (promote, once the learner has caught
up), REMOVE_NODE; a leader transfer (only to a replica the leader hears
from, and not again to the same target within ``transfer_retry_s``: see
shard/agent/transfer.py); a split; a merge's freeze (PREPARE_MERGE, as the
source's leader) and commit (COMMIT_MERGE, as the target's leader;
heartbeats say which shards this replica is frozen for, ``merge_target``,
which is how placement confirms a freeze on every replica). A step already
in effect is skipped (placement sends a step again until the shard's report
confirms it); one step per shard at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time

from flotillapb import placement_pb2 as ppb
from raft.core import ConfChange, ConfChangeType, ProposalDropped, Status
from raft.runtime.host import GroupHost
from shard.agent.config import AgentConfig
from shard.agent.link import short
from shard.agent.transfer import may_transfer
from shard.node import StoreNode

log = logging.getLogger(__name__)


class StepRunner:
    def __init__(self, node: StoreNode, host: GroupHost, cfg: AgentConfig) -> None:
        self.node = node
        self.host = host
        self.cfg = cfg
        self._stepping: dict[int, asyncio.Task[None]] = {}
        self._transfers: dict[int, tuple[int, float]] = {}  # shard -> (target, monotonic time started)
        self.steps_done = 0

    def start(self, step: ppb.OperatorStep) -> None:
        t = self._stepping.get(step.shard_id)
        if t is not None and not t.done():
            return  # one step per shard at a time: placement sends it again
        self._stepping[step.shard_id] = asyncio.create_task(self._run_step(step), name=f"agent-step-{step.shard_id}")

    async def _run_step(self, step: ppb.OperatorStep) -> None:
        try:
            if await self.execute_step(step):
                self.steps_done += 1
        except (ProposalDropped, TimeoutError) as exc:
            log.info("node=%d shard=%d operator %d step %s failed (%s); placement will send it again",
                     self.node.node_id, step.shard_id, step.operator_id, ppb.StepKind.Name(step.kind), short(exc))
        except Exception as exc:  # a refused step (split at a bad slot, not leader any more): placement retries or times it out
            log.warning("node=%d shard=%d operator %d step %s refused: %s",
                        self.node.node_id, step.shard_id, step.operator_id, ppb.StepKind.Name(step.kind), short(exc))

    async def execute_step(self, step: ppb.OperatorStep) -> bool:
        """Carry out one operator step as the shard's leader. False: skipped
        (not leader, already in effect, or not ready yet)."""
        sid = step.shard_id
        if sid not in self.node.shard_ids():
            return False
        st = self.host.status(sid)
        if st.soft_state.leader_id != self.node.node_id or st.id != self.node.node_id:
            return False
        voters, learners = set(st.conf_state.voters), set(st.conf_state.learners)
        n = step.node_id
        kind = step.kind
        if kind == ppb.ADD_LEARNER:
            if n in voters or n in learners:
                return False
            cc = ConfChange(ConfChangeType.ADD_LEARNER, n)
        elif kind == ppb.PROMOTE:
            if n in voters or n not in learners:
                return False
            pr = st.progress.get(n)
            if pr is None or pr.match == 0 or pr.match + 16 < st.hard_state.commit:
                return False  # not caught up yet: promoting now would weaken the quorum
            cc = ConfChange(ConfChangeType.ADD_NODE, n)
        elif kind == ppb.REMOVE_REPLICA:
            if n not in voters and n not in learners:
                return False
            if n == self.node.node_id:
                return False  # placement asks for a leader transfer first
            cc = ConfChange(ConfChangeType.REMOVE_NODE, n)
        elif kind == ppb.TRANSFER_LEADER:
            if n == self.node.node_id or n not in voters:
                return False
            if not self._may_transfer(sid, n, st):
                return False
            log.info("node=%d shard=%d operator %d: transferring leadership to node %d", self.node.node_id, sid, step.operator_id, n)
            self.host.transfer_leader(sid, n)
            return True
        elif kind == ppb.SPLIT:
            log.info("node=%d shard=%d operator %d: splitting at slot %d into shard %d", self.node.node_id, sid, step.operator_id, step.at_slot, step.new_shard_id)
            await self.node.split(sid, step.new_shard_id, step.at_slot)
            return True
        elif kind == ppb.PREPARE_MERGE:
            if self.node.merge_target(sid) == step.other_shard_id:
                return False  # frozen already: placement waits for every replica's report
            log.info("node=%d shard=%d operator %d: freezing for a merge into shard %d", self.node.node_id, sid, step.operator_id, step.other_shard_id)
            await self.node.prepare_merge(sid, step.other_shard_id)
            return True
        elif kind == ppb.COMMIT_MERGE:
            log.info("node=%d shard=%d operator %d: merging shard %d into it", self.node.node_id, sid, step.operator_id, step.other_shard_id)
            await self.node.commit_merge(sid, step.other_shard_id)
            return True
        else:
            return False
        log.info("node=%d shard=%d operator %d: conf change %s node %d", self.node.node_id, sid, step.operator_id, cc.type.name, n)
        await self.host.propose_conf_change(sid, cc)
        return True

    def _may_transfer(self, sid: int, target: int, st: Status) -> bool:
        now = time.monotonic()
        if not may_transfer(
            st.progress.get(target), st.last_index, self.host.is_quiet(sid), self._transfers.get(sid), target, now, self.cfg.transfer_retry_s
        ):
            log.info("node=%d shard=%d: not transferring leadership to node %d now (not heard recently, or tried within %.1fs)",
                     self.node.node_id, sid, target, self.cfg.transfer_retry_s)
            return False
        self._transfers[sid] = (target, now)
        return True
