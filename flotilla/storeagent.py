"""StoreAgent: a store node's side of the conversation with placement
(`flotilla server --store --join ...`). Wiring between shard/ and placement/.

- registers the node (id, address, labels) until placement answers;
- heartbeats every `heartbeat_interval_s` (per hosted shard: leader or not,
  epoch, term; the shard's descriptor when this node leads it), and reports
  a shard (ReportShard) as soon as this node becomes its leader or its epoch
  or configuration changes;
- watches the map (WatchMap, from any placement server; again on error) and
  hosts every shard the map assigns to this node: one still at its initial
  epoch (1, 1) is bootstrapped with the map's replicas, exactly as every
  other initial replica does; any other joins empty and learns its state
  and configuration from the leader's snapshot;
- creates a replica on demand when a Raft message arrives for a group it
  does not host and the map says it should (GroupHost.on_unknown_group);
- destroys a replica (StoreNode.destroy_replica: its group, meta and the
  data of its slots) once BOTH the map no longer lists this node for the
  shard, at a conf_version at least the replica's own, AND the replica's
  own applied configuration no longer has this node as voter or learner,
  or (a replica removed while its store was down, which never hears of its
  removal) a linearizable map read shows the shard without this node at a
  newer conf_version than the replica's own, or (a replica left behind by
  a move before its shard was merged away) a linearizable map read lists
  the shard as retired and no shard hosted here owns any of its slots.
  The map alone could be stale (a lagging placement server's), and a
  replica still in its group's configuration may hold acknowledged entries;
  a destroyed replica leaves a tombstone with its conf_version, so only a
  map entry at a newer conf_version (a re-add) hosts it again;
- tells the node every store node's address from the map (Raft peers,
  NotLeader hints);
- is the node's LeaseRegistry: LeaseAttach on the placement leader;
- carries out the operator steps placement answers a heartbeat with, for
  the shards this node leads (`execute_step`): conf changes ADD_LEARNER,
  ADD_NODE (promote, once the learner has caught up), REMOVE_NODE, a leader
  transfer (only to a replica the leader hears from, and not again to the
  same target within ``transfer_retry_s``: see ``may_transfer``), a split, or a merge's freeze (PREPARE_MERGE, as the source's
  leader) and commit (COMMIT_MERGE, as the target's leader; heartbeats say
  which shards this replica is frozen for, ``merge_target``, which is how
  placement confirms a freeze on every replica). A step already in effect is skipped (placement
  sends a step again until the shard's report confirms it); one step per
  shard at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc.aio

from flotillapb import placement_pb2 as ppb
from flotillapb import store_pb2 as spb
from rpc.placementclient import PlacementClient, PlacementUnavailable
from raft.core import ConfChange, ConfChangeType, ProgressStatus, ProposalDropped, Status
from raft.runtime.host import GroupHost
from shard import convert, slots
from shard.leasekeys import LeaseChange, LeaseRegistryUnavailable
from shard.node import StoreNode

log = logging.getLogger(__name__)

_INITIAL_EPOCH = (1, 1)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    heartbeat_interval_s: float = 1.0
    report_check_interval_s: float = 0.2
    retry_s: float = 0.5
    destroy_check_interval_s: float = 1.0
    transfer_retry_s: float = 3.0
    """A leader transfer to the same node is not started again sooner: while
    one is pending the shard takes no writes (up to an election timeout,
    after which Raft gives it up), and placement repeats its step with every
    heartbeat answer."""


class PlacementLeases:
    """The node's LeaseRegistry over placement's LeaseAttach."""

    def __init__(self, client: PlacementClient) -> None:
        self._client = client

    async def attach(self, changes: Sequence[LeaseChange]) -> tuple[int, ...]:
        req = ppb.LeaseAttachRequest(changes=[ppb.LeaseKeyChange(lease_id=lid, key=key, detach=det) for lid, key, det in changes])
        try:
            resp = await self._client.call("LeaseAttach", req)
        except (PlacementUnavailable, grpc.aio.AioRpcError) as exc:
            raise LeaseRegistryUnavailable(str(exc).splitlines()[0]) from None
        return tuple(resp.lease_not_found)


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
        self.labels = tuple(labels)
        self._prev_counts: dict[int, tuple[int, int]] = {}
        self._prev_counts_at = time.monotonic()
        self.cfg = config or AgentConfig()
        self._transfers: dict[int, tuple[int, float]] = {}  # shard -> (target, monotonic time started)
        self.slot_count = 0
        self.map_version = 0
        self.nodes: dict[int, ppb.NodeInfo] = {}
        self.shards: dict[int, ppb.ShardInfo] = {}
        self.retired: set[int] = set()
        """Shards merged away, by the watched map."""
        self._wanted: asyncio.Queue[int] = asyncio.Queue()
        self._queued: set[int] = set()
        self._reported: dict[int, tuple[object, ...]] = {}
        self.registered = asyncio.Event()
        self._stepping: dict[int, asyncio.Task[None]] = {}
        self.steps_done = 0
        self.destroyed: list[int] = []
        """Shards whose replica this agent destroyed (in order; for tests and logs)."""
        self._hosting = asyncio.Lock()
        """Creating and destroying replicas never interleave."""
        host.on_unknown_group = self._on_unknown_group
        node.leases = PlacementLeases(client)

    # -- lifecycle ----------------------------------------------------------------------
    async def run(self) -> None:
        await self._register()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._watch_loop(), name="agent-watch-map")
            tg.create_task(self._create_loop(), name="agent-create-replicas")
            tg.create_task(self._heartbeat_loop(), name="agent-heartbeat")
            tg.create_task(self._report_loop(), name="agent-report")
            tg.create_task(self._destroy_loop(), name="agent-destroy-replicas")

    async def _register(self) -> None:
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
                log.warning("node=%d registering with placement failed (%s); retrying", self.node.node_id, _short(exc))
                await asyncio.sleep(self.cfg.retry_s)
                continue
            log.info("node=%d registered with placement at %s", self.node.node_id, self.node.address)
            self.registered.set()
            return

    # -- the map ---------------------------------------------------------------------------
    async def _watch_loop(self) -> None:
        while True:
            try:
                async for resp in self.client.watch_map():
                    self._on_map(resp)
            except grpc.aio.AioRpcError as exc:
                log.debug("node=%d map watch ended (%s); watching again", self.node.node_id, _short(exc))
            await asyncio.sleep(self.cfg.retry_s)

    def _on_map(self, resp: ppb.WatchMapResponse) -> None:
        if resp.HasField("full"):
            full = resp.full
            self.slot_count = full.slot_count
            self.nodes = {n.node_id: n for n in full.nodes}
            self.shards = {s.descriptor.shard_id: s for s in full.shards}
            self.retired = set(full.retired_shards)
        else:
            for n in resp.nodes:
                self.nodes[n.node_id] = n
            for s in resp.shards:
                self.shards[s.descriptor.shard_id] = s
            for sid in resp.removed_shards:
                self.shards.pop(sid, None)
                self.retired.add(sid)
        self.map_version = max(self.map_version, resp.map_version)
        for nid, n in self.nodes.items():
            if n.kind == ppb.STORE and n.address and nid != self.node.node_id and self.node.address_of(nid) != n.address:
                self.node.set_peer(nid, n.address)
        hosted = set(self.node.shard_ids())
        for sid, s in self.shards.items():
            if sid not in hosted and self._assigned(s):
                self._want(sid)

    def _assigned(self, s: ppb.ShardInfo) -> bool:
        return any(r.node_id == self.node.node_id for r in s.descriptor.replicas)

    def _want(self, shard_id: int) -> None:
        if shard_id not in self._queued:
            self._queued.add(shard_id)
            self._wanted.put_nowait(shard_id)

    def _on_unknown_group(self, group_id: int, from_node: int) -> None:
        s = self.shards.get(group_id)
        if s is not None and self._assigned(s) and group_id not in self.node.shard_ids():
            self._want(group_id)

    async def _create_loop(self) -> None:
        while True:
            sid = await self._wanted.get()
            self._queued.discard(sid)
            s = self.shards.get(sid)
            if s is None or not self._assigned(s) or sid in self.node.shard_ids() or not self.slot_count:
                continue
            d = s.descriptor
            epoch = (d.epoch.conf_version, d.epoch.slot_version)
            async with self._hosting:
                await self.node.host_shard(
                    sid,
                    slot_count=self.slot_count,
                    slot_ranges=tuple((r.start, r.end) for r in d.slots),
                    voters=[r.node_id for r in d.replicas if not r.learner],
                    learners=[r.node_id for r in d.replicas if r.learner],
                    bootstrap=epoch == _INITIAL_EPOCH,
                    conf_version=d.epoch.conf_version,
                )

    # -- destroying removed replicas -----------------------------------------------------
    def unwanted(self, shard_id: int) -> bool:
        """Whether this node's replica of shard_id is to be destroyed: the map
        (at the replica's conf_version or newer) does not list this node, and
        the replica's applied configuration, which it has (a snapshot or the
        bootstrap gave it one), does not have it either."""
        s = self.shards.get(shard_id)
        if s is None or self._assigned(s) or shard_id not in self.node.shard_ids():
            return False
        cs = self.host.status(shard_id).conf_state
        members = (*cs.voters, *cs.learners)
        if not members or self.node.node_id in members:
            return False
        return s.descriptor.epoch.conf_version >= self.node.shard_info(shard_id).epoch.conf_version

    def left_behind(self, shard_id: int, info: ppb.ShardInfo | None = None) -> bool:
        """Whether this node's replica of shard_id may have been removed while
        it could not hear of it (its store was down; the group no longer
        sends it anything, so its own configuration still has it): the map
        (the watched one, or `info` from another read) lists the shard
        without this node at a newer conf_version than the replica's. From
        the watched map only a hint: see _fresh_map."""
        s = self.shards.get(shard_id) if info is None else info
        if s is None or self._assigned(s) or shard_id not in self.node.shard_ids():
            return False
        return s.descriptor.epoch.conf_version > self.node.shard_info(shard_id).epoch.conf_version

    def stray_merged(self, shard_id: int, m: ppb.ClusterMap | None = None) -> bool:
        """Whether this node's replica of shard_id belongs to a shard merged
        away (by the watched map, or `m` from another read) that the merge
        did not destroy here: a replica left behind by a move before the
        merge, removed from the group while its node was up or down. The
        merge itself destroys the replicas on the target's nodes (once the
        target's CommitMerge is applied there, which gives it the slots), so
        a replica is a stray only if no other shard hosted here owns, in the
        map, any of its slots. From the watched map only a hint: see
        _fresh_map."""
        retired = self.retired if m is None else set(m.retired_shards)
        if shard_id not in retired or shard_id not in self.node.shard_ids():
            return False
        shards = self.shards if m is None else {x.descriptor.shard_id: x for x in m.shards}
        mine = self.node.shard_info(shard_id).slot_ranges
        for sid in self.node.shard_ids():
            s = shards.get(sid)
            if sid != shard_id and s is not None and slots.intersect(mine, slots.normalize((r.start, r.end) for r in s.descriptor.slots)):
                return False
        return True

    async def _fresh_map(self) -> ppb.ClusterMap | None:
        """A linearizable map read from the placement leader (None if none
        answers): left_behind and stray_merged are acted on only when this
        map confirms them, since the watched map may come from a lagging
        placement server. Safe to destroy then. Left behind: the group
        committed a configuration without this node after the replica's own,
        and a later re-add makes it a learner first, which placement promotes
        only after the map shows it (so a fresh map without it means it is no
        voter). Merged away: the shard's group is frozen for good and its
        slots belong to the target, which is not hosted here."""
        try:
            resp = await self.client.call("GetMap", ppb.GetMapRequest(linearizable=True))
        except (grpc.aio.AioRpcError, PlacementUnavailable):
            return None
        return resp.map

    async def _destroy_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.destroy_check_interval_s)
            if not any(self.unwanted(sid) or self.left_behind(sid) or self.stray_merged(sid) for sid in self.node.shard_ids()):
                continue
            async with self._hosting:
                fresh: ppb.ClusterMap | None = None  # read once per pass, when needed
                for sid in self.node.shard_ids():
                    if self.unwanted(sid):
                        why = "removed from the group and the map"
                    elif self.left_behind(sid) or self.stray_merged(sid):
                        if fresh is None:
                            fresh = await self._fresh_map()
                            if fresh is None:
                                break
                        info = next((x for x in fresh.shards if x.descriptor.shard_id == sid), None)
                        if info is not None and self.left_behind(sid, info):
                            why = "removed from the group while it could not hear of it"
                        elif self.stray_merged(sid, fresh):
                            why = "left behind by a move before its shard was merged away"
                        else:
                            continue
                    else:
                        continue
                    log.info("node=%d destroying its replica of shard %d: %s", self.node.node_id, sid, why)
                    await self.node.destroy_replica(sid)
                    self.destroyed.append(sid)

    # -- heartbeats and reports --------------------------------------------------------------
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
        out = []
        rates = self._rates()
        for sid in self.node.shard_ids():
            desc, term, leader = self._descriptor(sid)
            read_rate, write_rate = rates.get(sid, (0.0, 0.0))
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
            out.append(st)
        return out

    async def _heartbeat_loop(self) -> None:
        while True:
            req = ppb.StoreHeartbeatRequest(node_id=self.node.node_id, shards=self._stats(), alarms=[int(a) for a in self.node.quota.active()])
            try:
                resp = await self.client.call("StoreHeartbeat", req)
                self.node.quota.peers_nospace = frozenset(n for n in resp.nospace_nodes if n != self.node.node_id)
                for step in resp.steps:
                    self._start_step(step)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    await self._register()  # placement does not know this node (yet): register again
                else:
                    log.debug("node=%d heartbeat refused (%s)", self.node.node_id, _short(exc))
            except PlacementUnavailable as exc:
                log.debug("node=%d heartbeat failed (%s)", self.node.node_id, _short(exc))
            await asyncio.sleep(self.cfg.heartbeat_interval_s)

    # -- operator steps -----------------------------------------------------------------------
    def _start_step(self, step: ppb.OperatorStep) -> None:
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
                     self.node.node_id, step.shard_id, step.operator_id, ppb.StepKind.Name(step.kind), _short(exc))
        except Exception as exc:  # a refused step (split at a bad slot, not leader any more): placement retries or times it out
            log.warning("node=%d shard=%d operator %d step %s refused: %s",
                        self.node.node_id, step.shard_id, step.operator_id, ppb.StepKind.Name(step.kind), _short(exc))

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

    async def _report_loop(self) -> None:
        """Report a shard as soon as this node leads it with a new term, epoch or configuration."""
        while True:
            await asyncio.sleep(self.cfg.report_check_interval_s)
            for sid in self.node.shard_ids():
                if sid not in self.node.shard_ids():
                    continue  # destroyed while an earlier report was in flight
                desc, term, leader = self._descriptor(sid)
                if not leader:
                    self._reported.pop(sid, None)
                    continue
                sig = (term, desc.epoch.conf_version, desc.epoch.slot_version, tuple((r.node_id, r.learner) for r in desc.replicas))
                if self._reported.get(sid) == sig:
                    continue
                try:
                    resp = await self.client.call("ReportShard", ppb.ReportShardRequest(descriptor=desc, term=term))
                except (PlacementUnavailable, grpc.aio.AioRpcError) as exc:
                    log.debug("node=%d report of shard %d failed (%s)", self.node.node_id, sid, _short(exc))
                    continue
                if resp.outcome in (ppb.ReportShardResponse.ACCEPTED, ppb.ReportShardResponse.STALE):
                    self._reported[sid] = sig


TRANSFER_LAG_ENTRIES = 64
"""A transfer target at most this many entries behind the leader's log
catches up within a round trip or two: only then does a transfer start."""


def may_transfer(
    progress: ProgressStatus | None, last_index: int, quiet: bool, last: tuple[int, float] | None, target: int, now: float, retry_s: float
) -> bool:
    """May a leader start a transfer to `target` now (pure)? While a
    transfer is pending the shard takes no writes (Raft drops proposals,
    up to an election timeout), so only:
    - to a replica the leader hears from (Raft's recent_active: it answered
      within the last election timeout; a quiet group's progress is stale,
      so it is woken by the transfer and Raft aborts the transfer if the
      target stays silent),
    - that is caught up, or nearly (a store just restarted may need
      thousands of entries or a snapshot first: the transfer would time out
      with the writes stopped),
    - and not again to the same target within retry_s of the last start
      (`last`: target and time)."""
    if progress is None or (not progress.recent_active and not quiet):
        return False
    if progress.match + TRANSFER_LAG_ENTRIES < last_index:
        return False
    return last is None or last[0] != target or now - last[1] >= retry_s


def _short(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
