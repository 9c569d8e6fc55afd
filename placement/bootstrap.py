"""Creating the cluster: the Bootstrap call, and the leader's automatic
bootstrap once `bootstrap_stores` store nodes are up (Bootstrap is
idempotent: a cluster that exists stays as it is)."""

from __future__ import annotations

import logging
import random

from placement.commands import Bootstrap, RejectCode, Rejected
from placement.config import PlacementConfig
from placement.errors import LeaderNotReady, RejectedError
from placement.group import PlacementGroup
from placement.model import NodeKind, NodeState

log = logging.getLogger(__name__)


class ClusterBootstrap:
    def __init__(self, group: PlacementGroup, cfg: PlacementConfig, rng: random.Random) -> None:
        self.g = group
        self.cfg = cfg
        self.rng = rng

    async def bootstrap(self, slot_count: int, initial_shards: int, replicas: int) -> bool:
        """Create the cluster; False if it already existed."""
        self.g.require_leader()
        cluster_id = self.rng.getrandbits(63) | 1
        out = await self.g.propose(Bootstrap(cluster_id, slot_count, initial_shards, replicas))
        if isinstance(out, Rejected):
            if out.code == RejectCode.ALREADY_BOOTSTRAPPED:
                return False
            raise RejectedError(out)
        log.info("placement node=%d bootstrapped cluster=%x slots=%d shards=%d", self.g.node_id, cluster_id, slot_count, len(self.g.state.shards))
        return True

    async def maybe_bootstrap(self) -> None:
        n = self.cfg.bootstrap_stores
        state = self.g.state
        if n <= 0 or state.bootstrapped:
            return
        up = [x for x in state.nodes.values() if x.kind == NodeKind.STORE and x.state == NodeState.UP]
        if len(up) < n:
            return
        try:
            await self.bootstrap(self.cfg.slot_count, self.cfg.initial_shards, self.cfg.replicas)
        except (RejectedError, LeaderNotReady) as exc:
            log.warning("placement node=%d automatic bootstrap failed: %s", self.g.node_id, exc)
