"""What the store tells placement: it registers (id, address, labels) until
placement answers; heartbeats every ``heartbeat_interval_s`` (per hosted
shard: leader or not, epoch, term, request rates, size, merge target; the
shard's descriptor when this node leads it; the node's alarms), taking the
operator steps and the nodes with NOSPACE from the answer; and reports a
shard (ReportShard) as soon as this node becomes its leader or its epoch or
configuration changes.

Heartbeats carry deltas (shard/agent/deltas.py): only the shards whose
figures changed since the heartbeat placement acknowledged last. The
figures looked at are those of the shards that changed
(StoreNode.take_stats_changed) or had requests; every STATS_SWEEP_S, all of
them; and a full heartbeat goes on start, whenever placement asks for one
(a new leader, a lost heartbeat), and every FULL_REPORT_S. An idle node
with 1,000 shards sends a heartbeat with no shard in it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable

import grpc.aio

from flotillapb import placement_pb2 as ppb
from flotillapb import store_pb2 as spb
from shard import convert
from shard.agent.config import AgentConfig
from shard.agent.deltas import HeartbeatDeltas, round_rate
from shard.agent.link import PlacementClient, PlacementUnavailable, short
from shard.node import StoreNode
from shard.types import ShardInfo

log = logging.getLogger(__name__)

STATS_SWEEP_S = 60.0
"""The heartbeat builds every shard's figures again this often, sending those that differ (a safety net)."""
FULL_REPORT_S = 600.0
"""A full heartbeat goes at least this often (a safety net: placement's table is replaced)."""
REPORT_SWEEP_S = 60.0
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
        self._last_rates: dict[int, tuple[float, float]] = {}
        self._reported: dict[int, tuple[object, ...]] = {}
        self.deltas = HeartbeatDeltas(node.node_id, int.from_bytes(os.urandom(7), "big") or 1)
        self._rated: set[int] = set()
        """Shards whose last heartbeat figures had a nonzero rate (looked at again until it is 0)."""
        self._swept = self._full_at = time.monotonic()
        self._retry: set[int] = set()
        """Shards whose report failed or was not taken: checked again next time."""
        self.registered = asyncio.Event()
        self.routers: tuple[int, ...] = ()
        """Routers in this process (--router-node-id): each heartbeat names them,
        and placement hears them with it (their own heartbeats are rare)."""

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
        return self._descriptor_of(info), info.term, info.is_leader

    def _descriptor_of(self, info: ShardInfo) -> spb.ShardDescriptor:
        addresses = {n: self.node.address_of(n) for n in (*info.voters, *info.learners)}
        return convert.descriptor_to_pb(info, addresses)

    def _rates(self) -> dict[int, tuple[float, float]]:
        """Reads and writes per second (rounded: round_rate) since the last
        heartbeat, of the shards that had any (the others: none). A heartbeat
        sent right after another (a full one placement asked for) gives the
        last rates again: a few milliseconds are no window to measure a rate in."""
        now = time.monotonic()
        prev, then = self._prev_counts, self._prev_counts_at
        dt = now - then
        if dt < self.cfg.heartbeat_interval_s / 2:
            return dict(self._last_rates)
        self._prev_counts_at = now
        out: dict[int, tuple[float, float]] = {}
        for sid, (r, w) in self.node.request_counts.items():
            p = prev.get(sid)
            if p is not None and p[0] == r and p[1] == w:
                continue
            prev[sid] = (r, w)
            pr, pw = p if p is not None else (0, 0)
            out[sid] = (round_rate((r - pr) / dt), round_rate((w - pw) / dt))
        self._last_rates = out
        return out

    def _request(self) -> ppb.StoreHeartbeatRequest:
        """The next heartbeat: a full one when due, else a delta whose
        figures are built only for the shards that changed, had requests
        since the last heartbeat or the one before, or (every STATS_SWEEP_S) all."""
        rates = self._rates()
        changed = self.node.take_stats_changed()
        alarms = [int(a) for a in self.node.quota.active()]
        now = time.monotonic()
        rated, self._rated = self._rated, {sid for sid, r in rates.items() if r != (0.0, 0.0)}
        if self.deltas.want_full or now - self._full_at >= FULL_REPORT_S:
            self._full_at = self._swept = now
            return self.deltas.full({sid: self._shard_stats(sid, rates.get(sid, (0.0, 0.0))) for sid in self.node.shard_ids()}, alarms)
        touched = changed | rates.keys() | rated
        if now - self._swept >= STATS_SWEEP_S:
            self._swept = now
            touched |= {*self.node.shard_ids(), *self.deltas.acked}
        figures = {sid: self._shard_stats(sid, rates.get(sid, (0.0, 0.0))) if self.node.hosts(sid) else None for sid in touched}
        return self.deltas.delta(figures, alarms)

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
            req = self._request()
            req.routers.extend(self.routers)
            again = False
            try:
                resp = await self.client.call("StoreHeartbeat", req)
                # A delta placement did not take (a new leader, a lost
                # heartbeat): the full heartbeat it asks for goes at once.
                again = not self.deltas.answered(resp.acked_seq) and not req.full
                self.node.quota.peers_nospace = frozenset(n for n in resp.nospace_nodes if n != self.node.node_id)
                for step in resp.steps:
                    self._on_step(step)
            except grpc.aio.AioRpcError as exc:
                self.deltas.failed()
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    await self.register()  # placement does not know this node (yet): register again
                else:
                    log.debug("node=%d heartbeat refused (%s)", self.node.node_id, short(exc))
            except PlacementUnavailable as exc:
                self.deltas.failed()
                log.debug("node=%d heartbeat failed (%s)", self.node.node_id, short(exc))
            if not again:
                await asyncio.sleep(self.cfg.heartbeat_interval_s)

    async def report_loop(self) -> None:
        """Report a shard as soon as this node leads it with a new term, epoch
        or configuration. Each check looks at the shards that changed since
        the last one (StoreNode.take_changed), and every REPORT_SWEEP_S at
        all of them: an idle node with 1,000 shards does no work per shard."""
        swept = time.monotonic()
        while True:
            await asyncio.sleep(self.cfg.report_check_interval_s)  # the changes of one interval go together
            if not self._retry:
                # Until a shard changes or the sweep is due: an idle node's loop does not wake.
                await self.node.changes(timeout_s=max(0.0, REPORT_SWEEP_S - (time.monotonic() - swept)))
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
        # Not hosted (destroyed, or while an earlier report was in flight)
        # or not led here: nothing to report, found cheaply.
        if not self.node.hosts(sid) or not self.node.leads(sid):
            self._reported.pop(sid, None)
            return None
        info = self.node.shard_info(sid)
        if not info.is_leader:
            self._reported.pop(sid, None)
            return None
        sig = (info.term, info.epoch.conf_version, info.epoch.slot_version, info.voters, info.learners)
        if self._reported.get(sid) == sig:
            return None
        return sid, self._descriptor_of(info), info.term, sig

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
