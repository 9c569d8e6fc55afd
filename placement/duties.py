"""The placement leader's duty loop.

Every `duty_interval_s` on the leader while leases, operators or ending
leases need it (else every 0.5 s; every second on a follower), or at once
when kicked, on every placement server: a follower drops the leader's
memory if it had any; a server that just became leader waits for a ReadIndex (so its state has every entry
committed before its term), then counts every node as heard now and renews
every lease to its full TTL, and only then is ready (PlacementGroup.
require_leader). A ready leader then marks down unheard nodes, bootstraps
the cluster when configured to, revokes expired leases, deletes the keys
of ended leases, and runs a rebalancing round; every heat_interval_s it
takes a sample of the dashboard's heat map (placement/dashboard.py).
"""

from __future__ import annotations

import asyncio
import logging

from placement.bootstrap import ClusterBootstrap
from placement.config import PlacementConfig
from placement.dashboard import HeatSampler
from placement.errors import NotLeaderError
from placement.group import PlacementGroup
from placement.leasekeeper import LeaseKeeper
from placement.nodes import NodeTracker
from placement.rebalancer import Rebalancer
from raft.core import ProposalDropped

log = logging.getLogger(__name__)

FOLLOWER_INTERVAL_S = 1.0
IDLE_LEADER_INTERVAL_S = 0.5
"""A leader's duty round with no lease, running operator or ending lease (the rebalancer's interval)."""
"""A follower's duty round (nothing to do but notice leadership, which also kicks it)."""


class DutyLoop:
    def __init__(
        self,
        group: PlacementGroup,
        cfg: PlacementConfig,
        nodes: NodeTracker,
        leases: LeaseKeeper,
        bootstrap: ClusterBootstrap,
        rebalancer: Rebalancer,
        heat: HeatSampler,
    ) -> None:
        self.g = group
        self.cfg = cfg
        self.nodes = nodes
        self.leases = leases
        self.bootstrap = bootstrap
        self.rebalancer = rebalancer
        self.heat = heat

    async def run(self) -> None:
        while True:
            # A follower has no duty but to notice it leads: the apply of its
            # first entry as leader kicks it (PlacementGroup._on_apply), so it
            # waits longer and costs nothing while idle.
            if self.g.ready_at is not None or self.g.is_leader():
                # Leases to expire, operators to drive or keys to delete want
                # the full rate; else the rebalancer's own cadence is enough.
                busy = len(self.leases.expiry) or self.rebalancer.table.running or self.g.state.ending
                interval = self.cfg.duty_interval_s if busy else max(self.cfg.duty_interval_s, IDLE_LEADER_INTERVAL_S)
            else:
                interval = FOLLOWER_INTERVAL_S
            try:
                async with asyncio.timeout(interval):
                    await self.g.kick.wait()
            except TimeoutError:
                pass
            self.g.kick.clear()
            try:
                await self.round()
            except (ProposalDropped, TimeoutError, NotLeaderError) as exc:
                log.debug("placement node=%d duty round interrupted: %s", self.g.node_id, exc)

    async def round(self) -> None:
        g = self.g
        term = g.leader_term_now()
        if term == 0:
            if g.ready_at is not None:
                log.info("placement node=%d no longer leads: dropping lease deadlines and heartbeat data", g.node_id)
            g.ready_at = None
            g.leader_term = 0
            self.leases.expiry.clear()
            self.nodes.forget()
            self.rebalancer.reset()
            self.heat.reset()
            return
        if term != g.leader_term or g.ready_at is None:
            g.ready_at = None
            self.leases.expiry.clear()
            await g.read_barrier()  # our state now holds every entry committed before our term
            if g.leader_term_now() != term:
                return
            now = g.clock.monotonic()
            g.leader_term = term
            g.ready_at = now
            self.nodes.heard.clear()
            self.rebalancer.reset()
            self.heat.reset(f"{g.node_id}.{term}")
            self.leases.renew_all(now)
            log.info(
                "placement node=%d leads term=%d: map_version=%d nodes=%d leases=%d renewed to full TTL",
                g.node_id, term, g.state.map_version, len(g.state.nodes), len(self.leases.expiry),
            )
        self.heat.maybe_sample(g.clock.monotonic(), g.clock.wall_ms(), g.state, self.nodes.table, self.nodes.heard)
        await self.nodes.mark_down()
        await self.bootstrap.maybe_bootstrap()
        await self.leases.expire()
        await self.leases.delete_ended_keys()
        await self.rebalancer.round()
