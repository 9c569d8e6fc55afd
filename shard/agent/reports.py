"""What the store tells placement: it registers (id, address, labels) until
placement answers; heartbeats every ``heartbeat_interval_s`` (per hosted
shard: leader or not, epoch, term, request rates, size, merge target; the
shard's descriptor when this node leads it; the node's alarms), taking the
operator steps and the nodes with NOSPACE from the answer; and reports a
shard (ReportShard) as soon as this node becomes its leader or its epoch or
configuration changes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc.aio

from flotillapb import placement_pb2 as ppb
from flotillapb import store_pb2 as spb
from shard import convert
from shard.agent.config import AgentConfig
from shard.agent.link import PlacementClient, PlacementUnavailable, short
from shard.node import StoreNode

log = logging.getLogger(__name__)

STATS_REBUILD_S = 30.0
"""The heartbeat builds every shard's figures again at least this often (a safety net)."""
REPORT_SWEEP_S = 10.0
"""How often the report check looks at every shard, not only those that changed (a safety net)."""
REPORTS_IN_FLIGHT = 64
"""ReportShard calls a node has outstanding at most."""


class Reporter:
    def __init__(
        self,
        node: StoreNode,
        client: PlacementClient,
        cfg: AgentConfig,
        labels: tuple[tuple[str, str], ...],
        on_step: Callable[[ppb.OperatorStep], None],
    ) -> None:
        self.node = node
        self.client = client
        self.cfg = cfg
        self.labels = labels
        self._on_step = on_step
        self._prev_counts: dict[int, tuple[int, int]] = {}
        self._prev_counts_at = time.monotonic()
        self._reported: dict[int, tuple[object, ...]] = {}
        self._stats_cache: dict[int, tuple[tuple[float, float], ppb.ShardStats]] = {}
        """Shard -> (rates, figures) as last built for a heartbeat."""
        self._stats_built = time.monotonic()
        self._retry: set[int] = set()
        """Shards whose report failed or was not taken: checked again next time."""
        self.registered = asyncio.Event()

    async def register(self) -> None:
        req = ppb.RegisterNodeRequest(
            node_id=self.node.node_id,
            kind=ppb.STORE,
            address=self.node.address,
            labels=[ppb.Label(key=k, value=v) for k, v in sorted(self.labels)],
        )
        while True:
            try:
                await self.client.call("RegisterNode", req)
            except (PlacementUnavailable, grpc.aio.AioRpcError) as exc:
                log.warning("node=%d registering with placement failed (%s); retrying", self.node.node_id, short(exc))
                await asyncio.sleep(self.cfg.retry_s)
                continue
            log.info("node=%d registered with placement at %s", self.node.node_id, self.node.address)
            self.registered.set()
            return

    def _descriptor(self, shard_id: int) -> tuple[spb.ShardDescriptor, int, bool]:
        info = self.node.shard_info(shard_id)
        addresses = {n: self.node.address_of(n) for n in (*info.voters, *info.learners)}
        return convert.descriptor_to_pb(info, addresses), info.term, info.is_leader

    def _rates(self) -> dict[int, tuple[float, float]]:
        """Reads and writes per second of each shard since the last heartbeat."""
        now = time.monotonic()
        counts = {sid: (c[0], c[1]) for sid, c in self.node.request_counts.items()}
        prev, then = self._prev_counts, self._prev_counts_at
        self._prev_counts, self._prev_counts_at = counts, now
        dt = now - then
        if dt <= 0:
            return {}
        return {
            sid: ((r - prev.get(sid, (0, 0))[0]) / dt, (w - prev.get(sid, (0, 0))[1]) / dt)
            for sid, (r, w) in counts.items()
        }

    def _stats(self) -> list[ppb.ShardStats]:
        """Every hosted shard's figures. A shard's are built again only if it
        changed (StoreNode.take_stats_changed), its rates moved, or every
        STATS_REBUILD_S: an idle node with 1,000 shards rebuilds none."""
        out = []
        rates = self._rates()
        changed = self.node.take_stats_changed()
        now = time.monotonic()
        if now - self._stats_built >= STATS_REBUILD_S:
            self._stats_built = now
            self._stats_cache.clear()
        cache = self._stats_cache
        for sid in list(cache):
            if not self.node.hosts(sid):
                del cache[sid]
        for sid in self.node.shard_ids():
            rate = rates.get(sid, (0.0, 0.0))
            hit = cache.get(sid)
            if hit is not None and sid not in changed and hit[0] == rate:
                out.append(hit[1])
                continue
            st = self._shard_stats(sid, rate)
            cache[sid] = (rate, st)
            out.append(st)
        return out

    def _shard_stats(self, sid: int, rate: tuple[float, float]) -> ppb.ShardStats:
        desc, term, leader = self._descriptor(sid)
        read_rate, write_rate = rate
        key_count, size_bytes = self.node.shard_figures(sid)
        st = ppb.ShardStats(
            shard_id=sid,
            is_leader=leader,
            epoch=desc.epoch,
            term=term,
            read_rate=read_rate,
            write_rate=write_rate,
            key_count=key_count,
            size_bytes=size_bytes,
            merge_target=self.node.merge_target(sid),
        )
        if leader:
            st.descriptor.CopyFrom(desc)
        return st

    async def heartbeat_loop(self) -> None:
        while True:
            req = ppb.StoreHeartbeatRequest(node_id=self.node.node_id, shards=self._stats(), alarms=[int(a) for a in self.node.quota.active()])
            try:
                resp = await self.client.call("StoreHeartbeat", req)
                self.node.quota.peers_nospace = frozenset(n for n in resp.nospace_nodes if n != self.node.node_id)
                for step in resp.steps:
                    self._on_step(step)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    await self.register()  # placement does not know this node (yet): register again
                else:
                    log.debug("node=%d heartbeat refused (%s)", self.node.node_id, short(exc))
            except PlacementUnavailable as exc:
                log.debug("node=%d heartbeat failed (%s)", self.node.node_id, short(exc))
            await asyncio.sleep(self.cfg.heartbeat_interval_s)

    async def report_loop(self) -> None:
        """Report a shard as soon as this node leads it with a new term, epoch
        or configuration. Each check looks at the shards that changed since
        the last one (StoreNode.take_changed), and every REPORT_SWEEP_S at
        all of them: an idle node with 1,000 shards does no work per shard."""
        swept = time.monotonic()
        while True:
            await asyncio.sleep(self.cfg.report_check_interval_s)
            now = time.monotonic()
            changed = self.node.take_changed() | self._retry
            self._retry = set()
            if now - swept >= REPORT_SWEEP_S:
                swept = now
                changed = set(self.node.shard_ids())
            elif not changed:
                continue
            due = [d for d in (self._due(sid) for sid in sorted(changed)) if d is not None]
            if due:
                # Concurrently (at most REPORTS_IN_FLIGHT): placement commits
                # the reports that reach it together as one entry
                # (placement/reports.py); one at a time, a new cluster's
                # 1,000 first leaders took one placement commit each.
                gate = asyncio.Semaphore(REPORTS_IN_FLIGHT)
                await asyncio.gather(*(self._report(sid, desc, term, sig, gate) for sid, desc, term, sig in due))

    def _due(self, sid: int) -> tuple[int, spb.ShardDescriptor, int, tuple[object, ...]] | None:
        """(sid, descriptor, term, signature) if this node leads shard sid and
        placement has not taken this report yet, else None."""
        if not self.node.hosts(sid):
            self._reported.pop(sid, None)
            return None  # destroyed (or while an earlier report was in flight)
        desc, term, leader = self._descriptor(sid)
        if not leader:
            self._reported.pop(sid, None)
            return None
        sig = (term, desc.epoch.conf_version, desc.epoch.slot_version, tuple((r.node_id, r.learner) for r in desc.replicas))
        if self._reported.get(sid) == sig:
            return None
        return sid, desc, term, sig

    async def _report(self, sid: int, desc: spb.ShardDescriptor, term: int, sig: tuple[object, ...], gate: asyncio.Semaphore) -> None:
        async with gate:
            try:
                resp = await self.client.call("ReportShard", ppb.ReportShardRequest(descriptor=desc, term=term))
            except (PlacementUnavailable, grpc.aio.AioRpcError) as exc:
                log.debug("node=%d report of shard %d failed (%s)", self.node.node_id, sid, short(exc))
                self._retry.add(sid)
                return
        if resp.outcome in (ppb.ReportShardResponse.ACCEPTED, ppb.ReportShardResponse.STALE):
            self._reported[sid] = sig
        else:
            self._retry.add(sid)
