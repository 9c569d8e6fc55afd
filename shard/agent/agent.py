"""StoreAgent: a store node's side of the conversation with placement
(`flotilla server --store --join ...`), composing the agent's jobs:
reports.py (register, heartbeats, shard reports), hosting.py (follow the
map, host what it assigns), destroy.py (destroy replicas no longer
wanted), steps.py (carry out operator steps), link.py (the placement client
and the node's lease registry over it)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from flotillapb import placement_pb2 as ppb
from raft.runtime.host import GroupHost
from shard.agent.config import AgentConfig
from shard.agent.destroy import DestroyPass
from shard.agent.hosting import MapFollower
from shard.agent.link import PlacementClient, PlacementLeases
from shard.agent.reports import Reporter
from shard.agent.steps import StepRunner
from shard.node import StoreNode


class StoreAgent:
    def __init__(
        self,
        node: StoreNode,
        host: GroupHost,
        client: PlacementClient,
        *,
        labels: Sequence[tuple[str, str]] = (),
        config: AgentConfig | None = None,
    ) -> None:
        self.node = node
        self.host = host
        self.client = client
        self.cfg = config or AgentConfig()
        hosting = asyncio.Lock()
        """Creating and destroying replicas never interleave."""
        self.map = MapFollower(node, client, self.cfg, hosting)
        self.steps = StepRunner(node, host, self.cfg)
        self.destroyer = DestroyPass(node, host, client, self.map, self.cfg, hosting)
        self.reporter = Reporter(node, client, self.cfg, tuple(labels), self.steps.start)
        host.on_unknown_group = self.map.on_unknown_group
        node.leases = PlacementLeases(client)

    @property
    def registered(self) -> asyncio.Event:
        return self.reporter.registered

    @property
    def steps_done(self) -> int:
        return self.steps.steps_done

    @property
    def destroyed(self) -> list[int]:
        """Shards whose replica this agent destroyed (in order; for tests and logs)."""
        return self.destroyer.destroyed

    async def execute_step(self, step: ppb.OperatorStep) -> bool:
        return await self.steps.execute_step(step)

    async def run(self) -> None:
        await self.reporter.register()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.map.watch_loop(), name="agent-watch-map")
            tg.create_task(self.map.create_loop(), name="agent-create-replicas")
            tg.create_task(self.reporter.heartbeat_loop(), name="agent-heartbeat")
            tg.create_task(self.reporter.report_loop(), name="agent-report")
            tg.create_task(self.destroyer.run(), name="agent-destroy-replicas")
