"""The placement node: the wiring of one placement server.

`PlacementServer` puts together, around group 0 of a GroupHost running the
placement state machine (placement/machine.py):

- `group` (placement/group.py): leadership, proposing, waiting for the state;
- `nodes` (placement/nodes.py): registration, heartbeats, down detection;
- `leases` (placement/leasekeeper.py): the Lease calls, expiry, deleting the
  keys of ended leases through the KeyDeleter seam (placement/deleter.py);
- `bootstrapper` (placement/bootstrap.py): creating the cluster;
- `rebalancer` (placement/rebalancer.py): operators, the scheduler, admin
  commands;
- `duties` (placement/duties.py): the leader's duty loop that drives them;
- `heat` (placement/dashboard.py): the dashboard's heat map samples, and
  `dashboard()` the document the dashboard page shows;
- `hub` (placement/watchhub.py): each applied MapChange to the WatchMap
  streams.

The gRPC servicer over it is placement/service.py. Only the leader's
memory (when nodes were heard, their heartbeat figures, lease deadlines,
operators) is not in the replicated state; a new leader rebuilds it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from flotillapb import placement_pb2 as ppb
from placement.bootstrap import ClusterBootstrap
from placement.commands import Command, MapChange
from placement.config import PlacementConfig
from placement.dashboard import HeatSampler, document
from placement.deleter import KeyDeleter
from placement.duties import DutyLoop
from placement.group import PLACEMENT_GROUP_ID, PlacementGroup
from placement.leasekeeper import LeaseKeeper
from placement.machine import PlacementMachine
from placement.nodes import NodeTracker
from placement.rebalancer import Rebalancer
from placement.shardtable import ShardTable
from placement.state import PlacementState
from placement.watchhub import MapWatchHub
from raft.core import StateRole
from raft.runtime.clock import Clock
from raft.runtime.host import GroupHost


class PlacementServer:
    def __init__(
        self,
        node_id: int,
        host: GroupHost,
        machine: PlacementMachine,
        *,
        clock: Clock,
        rng: random.Random,
        deleter: KeyDeleter,
        config: PlacementConfig | None = None,
    ) -> None:
        self.cfg = config or PlacementConfig()
        self.group = PlacementGroup(node_id, host, machine, clock)
        self.deleter = deleter
        self.hub = MapWatchHub(self.cfg.watch_queue, self.cfg.watch_history)
        self.nodes = NodeTracker(self.group, self.cfg)
        self.leases = LeaseKeeper(self.group, self.cfg, rng, deleter)
        self.bootstrapper = ClusterBootstrap(self.group, self.cfg, rng)
        self.rebalancer = Rebalancer(self, self.cfg.scheduler())
        self.heat = HeatSampler(interval_s=self.cfg.heat_interval_s, max_samples=self.cfg.heat_samples, fresh_s=self.cfg.suspect_after_s)
        self.duties = DutyLoop(self.group, self.cfg, self.nodes, self.leases, self.bootstrapper, self.rebalancer, self.heat)
        machine.add_listener(self._on_change)

    def _on_change(self, ch: MapChange) -> None:
        self.hub.publish_change(ch, self.state)

    async def run(self) -> None:
        """The leader's duties, on every server (a follower's rounds only keep it ready to lead)."""
        await self.duties.run()

    # -- the group, and what the rebalancer needs (placement/rebalancer.py RebalancerHost) -----
    @property
    def node_id(self) -> int:
        return self.group.node_id

    @property
    def clock(self) -> Clock:
        return self.group.clock

    @property
    def host(self) -> GroupHost:
        return self.group.host

    @property
    def machine(self) -> PlacementMachine:
        return self.group.machine

    @property
    def state(self) -> PlacementState:
        return self.group.state

    @property
    def peers(self) -> dict[int, str]:
        """The other placement servers' addresses (leader hints name them)."""
        return self.group.peers

    @property
    def address(self) -> str:
        return self.group.address

    @address.setter
    def address(self, value: str) -> None:
        self.group.address = value

    @property
    def ready_at(self) -> float | None:
        return self.group.ready_at

    @property
    def heard(self) -> Mapping[int, float]:
        return self.nodes.heard

    @property
    def shard_table(self) -> ShardTable:
        return self.nodes.table

    def require_leader(self, *, ready: bool = True) -> None:
        self.group.require_leader(ready=ready)

    async def propose_ok(self, cmd: Command) -> object:
        return await self.group.propose_ok(cmd)

    # -- status ---------------------------------------------------------------------------
    def status(self) -> ppb.StatusResponse:
        st = self.host.status(PLACEMENT_GROUP_ID)
        keys_deleted = getattr(self.deleter, "keys_deleted", 0)
        return ppb.StatusResponse(
            node_id=self.node_id,
            is_leader=st.soft_state.role == StateRole.LEADER,
            leader_node_id=st.soft_state.leader_id,
            term=st.hard_state.term,
            applied_index=self.machine.applied_index(),
            map_version=self.state.map_version,
            cluster_id=self.state.cluster_id,
            leases=len(self.state.leases),
            leases_pending_delete=len(self.state.ending),
            keys_deleted=int(keys_deleted),
            heartbeats=self.nodes.heartbeats,
            voters=st.conf_state.voters,
        )

    def dashboard(self, since: int = 0) -> dict[str, object]:
        """The dashboard's document (placement/dashboard.py) as this server
        knows it: the leader's has the heartbeat figures, the operators and
        the heat map samples numbered `since` and later; a follower's, its map."""
        now = self.clock.monotonic()
        leader = self.group.is_leader() and self.ready_at is not None
        return document(
            served_by=self.node_id,
            leader_id=self.group.leader_id(),
            is_leader=leader,
            placement_servers={**self.peers, self.node_id: self.address},
            state=self.state,
            table=self.nodes.table,
            heard=self.nodes.heard,
            suspects=self.rebalancer.suspects(now) if leader else [],
            operators=self.rebalancer.table.all() if leader else [],
            sampler=self.heat,
            now=now,
            wall_ms=self.clock.wall_ms(),
            since=since,
        )
