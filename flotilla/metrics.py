"""Prometheus metrics, /health and /version of any Flotilla process, on
etcd's `--listen-metrics-urls` (wiring only).

    registry = CollectorRegistry()
    registry.register(HostCollector(host, transport))     # a process with a Raft host
    registry.register(StoreCollector(node))                # --store
    registry.register(PlacementCollector(pnode))           # --placement
    registry.register(RouterCollector(router))             # --router
    server = MetricsServer(registry, health=...)
    urls = await server.start(["http://127.0.0.1:0"])     # port 0: any free port, reported

Every figure is read when Prometheus scrapes (custom collectors over the
counters the code keeps anyway: GroupHost.stats, the transport's stats, the
store node's replicas, placement's map and operator table, the router's
forwarder), so serving metrics adds no work to a request. Names follow
etcd's where the meaning matches (a Flotilla process hosts many Raft groups
where an etcd member hosts one: etcd's per-member figures are summed over
the groups, as said in each help text); Flotilla's own are `flotilla_*`,
per shard with a `shard` label.

/health answers as etcd's does (`{"health":"true","reason":""}`, or 503
with the reason): a router runs the gateway's check (router/gateway: the
alarms, then a Range through its own servicers); a store or placement
server is unhealthy while an alarm is active or a group it hosts has no
leader (etcd's "RAFT NO LEADER"). /version is etcd's.

A placement server serves its web dashboard on the same listener, under
/dashboard/ (flotilla/dashboard.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from raft.core import StateRole
from raft.runtime.group import DURATION_BUCKETS_S, Durations
from raft.transport.grpc_transport import RTT_BUCKETS_S
from router.gateway import codec, parse_listen_url
from router.maintenance import ETCD_VERSION
from shard import hlc

if TYPE_CHECKING:
    from placement.server import PlacementServer
    from raft.runtime.host import GroupHost
    from raft.transport.base import Transport
    from router.server import RouterServer
    from shard.node import StoreNode

log = logging.getLogger(__name__)

Health = Callable[[list[str]], Awaitable[tuple[bool, bytes]]]
"""(excluded alarms) -> (healthy, etcd's JSON body)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--listen-metrics-urls",
        default="",
        help="etcd's flag: serve Prometheus /metrics, /health and /version on these URLs, comma-separated, "
        "e.g. http://127.0.0.1:2381 (port 0: any free port, reported in the ready file as metrics_urls); default: none",
    )


def parse_urls(text: str, *, what: str = "flotilla") -> list[str]:
    urls = [u.strip() for u in text.split(",") if u.strip()]
    for u in urls:
        try:
            scheme, _, _ = parse_listen_url(u)
        except ValueError as exc:
            raise SystemExit(f"{what}: --listen-metrics-urls: {exc}") from None
        if scheme != "http":
            raise SystemExit(f"{what}: --listen-metrics-urls: {u}: only http:// is served")
    return urls


# -- collectors -------------------------------------------------------------------------------


def _histogram(name: str, doc: str, d: Durations) -> HistogramMetricFamily:
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, n in zip(DURATION_BUCKETS_S, d.counts):
        running += n
        buckets.append((repr(bound), running))
    running += d.counts[-1]
    buckets.append(("+Inf", running))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=d.total_s)


class HostCollector(Collector):
    """A process's Raft host: etcd's server, disk and network figures, summed over its groups."""

    def __init__(self, host: GroupHost, transport: Transport | None = None, *, groups: Callable[[], Iterable[int]] | None = None) -> None:
        self.host = host
        self.transport = transport
        self.groups = groups or host.group_ids

    def collect(self) -> Iterator[Metric]:
        host, st = self.host, self.host.stats
        statuses = []
        for gid in self.groups():
            try:
                statuses.append(host.status(gid))
            except Exception:  # noqa: BLE001 - removed between the listing and the read
                continue
        has_leader = bool(statuses) and all(s.soft_state.leader_id for s in statuses)
        yield GaugeMetricFamily(
            "etcd_server_has_leader", "1 if every Raft group hosted here has a leader (0 without groups)", value=int(has_leader)
        )
        leads = sum(s.soft_state.role == StateRole.LEADER for s in statuses)
        yield GaugeMetricFamily("etcd_server_is_leader", "1 if this process leads at least one Raft group", value=int(leads > 0))
        yield CounterMetricFamily(
            "etcd_server_leader_changes_seen", "Leader changes seen, summed over the hosted groups", value=st.leader_changes
        )
        yield GaugeMetricFamily(
            "etcd_server_proposals_committed_total", "Committed index, summed over the hosted groups",
            value=sum(s.hard_state.commit for s in statuses),
        )
        yield GaugeMetricFamily(
            "etcd_server_proposals_applied_total", "Applied index, summed over the hosted groups", value=sum(s.applied for s in statuses)
        )
        yield CounterMetricFamily("flotilla_raft_proposals", "Proposals made on this process", value=st.proposals)
        yield GaugeMetricFamily("flotilla_raft_groups", "Raft groups hosted", value=len(statuses))
        yield GaugeMetricFamily("flotilla_raft_groups_led", "Raft groups this process leads", value=leads)
        for name, doc, v in (
            ("flotilla_raft_ready_rounds", "Ready-loop rounds", st.rounds),
            ("flotilla_raft_syncs", "Synced log writes (group commits)", st.syncs),
            ("flotilla_raft_entries_persisted", "Log entries persisted", st.entries_persisted),
            ("flotilla_raft_entries_applied", "Log entries applied", st.entries_applied),
            ("flotilla_raft_messages_sent", "Raft messages handed to the transport", st.messages_sent),
            ("flotilla_raft_messages_dropped", "Raft messages the transport refused", st.messages_dropped),
            ("flotilla_raft_snapshots_created", "Snapshots taken", st.snapshots_created),
            ("flotilla_raft_snapshots_restored", "Snapshots installed", st.snapshots_restored),
            ("flotilla_raft_ticker_rounds", "Rounds of the Raft ticker (none while every group is quiet, but liveness)", st.ticks),
            ("flotilla_raft_group_ticks", "Ticks given to Raft groups (a quiet group gets none)", st.group_ticks),
            ("flotilla_raft_liveness_pings", "Node liveness pings sent for quiet groups", st.pings_sent),
        ):
            yield CounterMetricFamily(name, doc, value=v)
        yield _histogram("etcd_disk_wal_fsync_duration_seconds", "Synced writes of the Raft log (one per group commit)", st.sync_durations)
        yield _histogram("etcd_disk_backend_commit_duration_seconds", "Writes of applied entries", st.apply_durations)
        if self.transport is not None:
            ts = self.transport.stats()
            for name, doc, v in (
                ("flotilla_transport_messages_sent", "Messages written to peers", ts.sent),
                ("flotilla_transport_messages_received", "Messages received from peers", ts.received),
                ("flotilla_transport_messages_dropped", "Messages refused or lost", ts.dropped),
                ("flotilla_transport_batches_sent", "Batches written to peers", ts.batches),
                ("flotilla_transport_reconnects", "Reconnection attempts", ts.reconnects),
                ("flotilla_transport_snapshots_sent", "Snapshots sent", ts.snapshots_sent),
                ("flotilla_transport_snapshots_failed", "Snapshots that failed or were refused", ts.snapshots_failed),
                ("flotilla_transport_snapshots_received", "Snapshots received", ts.snapshots_received),
            ):
                yield CounterMetricFamily(name, doc, value=v)
            peer_rtt = getattr(self.transport, "peer_rtt", None)  # the gRPC transport probes its peers
            if peer_rtt is not None:
                yield _rtt_histogram(peer_rtt())


def _rtt_histogram(by_peer: dict[int, Any]) -> HistogramMetricFamily:
    """etcd's etcd_network_peer_round_trip_time_seconds, label To (the peer's id), from the transport's probes."""
    fam = HistogramMetricFamily(
        "etcd_network_peer_round_trip_time_seconds",
        "Round trip time of the probes of each peer's Raft connection (To: the peer's node id in hex, as etcd prints member ids)",
        labels=["To"],
    )
    for peer, h in sorted(by_peer.items()):
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip(RTT_BUCKETS_S, h.counts):
            running += n
            buckets.append((repr(bound), running))
        buckets.append(("+Inf", h.count))
        fam.add_metric([f"{peer:x}"], buckets, h.sum_s)
    return fam


class StoreCollector(Collector):
    """A store node's shards, one `shard` label each, and its space."""

    def __init__(self, node: StoreNode, *, wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> None:
        self.node = node
        self.wall_ms = wall_ms

    def collect(self) -> Iterator[Metric]:
        node = self.node
        families: dict[str, Any] = {
            "leader": GaugeMetricFamily("flotilla_shard_leader", "Node id of the shard's leader as this replica knows it (0: none)", labels=["shard"]),
            "is_leader": GaugeMetricFamily("flotilla_shard_is_leader", "1 if this node leads the shard", labels=["shard"]),
            "term": GaugeMetricFamily("flotilla_shard_term", "Raft term of the replica", labels=["shard"]),
            "commit": GaugeMetricFamily("flotilla_shard_commit_index", "Raft commit index of the replica", labels=["shard"]),
            "applied": GaugeMetricFamily("flotilla_shard_applied_index", "Raft applied index of the replica", labels=["shard"]),
            "revision": GaugeMetricFamily("flotilla_shard_revision", "The shard's revision as applied here", labels=["shard"]),
            "compact": GaugeMetricFamily("flotilla_shard_compact_revision", "The shard's compaction revision", labels=["shard"]),
            "keys": GaugeMetricFamily("flotilla_shard_keys", "Live keys of the shard", labels=["shard"]),
            "bytes": GaugeMetricFamily("flotilla_shard_bytes", "Approximate live bytes of the shard", labels=["shard"]),
            "watchers": GaugeMetricFamily("flotilla_shard_watchers", "Watches open on the replica", labels=["shard"]),
            "lag": GaugeMetricFamily(
                "flotilla_shard_closed_timestamp_lag_seconds", "Wall time minus the replica's closed timestamp", labels=["shard"]
            ),
            "reads": CounterMetricFamily("flotilla_shard_reads", "Reads served by the replica (rate(): reads/s)", labels=["shard"]),
            "writes": CounterMetricFamily("flotilla_shard_writes", "Writes served by the replica (rate(): writes/s)", labels=["shard"]),
        }
        now_ms = self.wall_ms()
        for sid in node.shard_ids():
            try:
                info = node.shard_info(sid)
                keys, size = node.shard_figures(sid)
            except Exception:  # noqa: BLE001 - destroyed between the listing and the read
                continue
            label = [str(sid)]
            families["leader"].add_metric(label, info.leader_node_id)
            families["is_leader"].add_metric(label, int(info.is_leader))
            families["term"].add_metric(label, info.term)
            families["commit"].add_metric(label, info.commit_index)
            families["applied"].add_metric(label, info.applied_index)
            families["revision"].add_metric(label, info.revision)
            families["compact"].add_metric(label, info.compact_revision)
            families["keys"].add_metric(label, keys)
            families["bytes"].add_metric(label, size)
            families["watchers"].add_metric(label, info.watchers)
            if info.closed_ts:
                families["lag"].add_metric(label, max(0.0, (now_ms - hlc.wall_ms_of(info.closed_ts)) / 1000))
            families["reads"].add_metric(label, info.reads)
            families["writes"].add_metric(label, info.writes)
        yield from families.values()
        quota = node.quota
        yield GaugeMetricFamily("etcd_mvcc_db_total_size_in_bytes", "Space the node's RocksDB uses, as last measured", value=quota.used_bytes)
        yield GaugeMetricFamily("etcd_server_quota_backend_bytes", "The node's space quota (0: none)", value=max(quota.quota_bytes, 0))
        alarms = GaugeMetricFamily("flotilla_alarm_active", "1 for each alarm active on the node", labels=["alarm"])
        for a in quota.active():
            alarms.add_metric([a.name], 1)
        yield alarms


class PlacementCollector(Collector):
    """A placement server: its map as it applied it, and (on the leader) the scheduler's operators."""

    def __init__(self, pnode: PlacementServer) -> None:
        self.p = pnode

    def collect(self) -> Iterator[Metric]:
        p = self.p
        st = p.state
        leader = p.group.is_leader()
        yield GaugeMetricFamily("flotilla_placement_is_leader", "1 if this server leads the placement group", value=int(leader))
        yield GaugeMetricFamily("flotilla_placement_map_version", "Version of the shard map applied here", value=st.map_version)
        nodes = GaugeMetricFamily("flotilla_placement_nodes", "Nodes in the map by kind and state", labels=["kind", "state"])
        counts: dict[tuple[str, str], int] = {}
        for n in st.nodes.values():
            key = (n.kind.name.lower(), n.state.name.lower())
            counts[key] = counts.get(key, 0) + 1
        for (kind, state), v in sorted(counts.items()):
            nodes.add_metric([kind, state], v)
        yield nodes
        yield GaugeMetricFamily("flotilla_placement_shards", "Shards in the map", value=len(st.shards))
        leaders = GaugeMetricFamily("flotilla_placement_shard_leader", "Leader node id of each shard in the map (0: none)", labels=["shard"])
        for sid, s in sorted(st.shards.items()):
            leaders.add_metric([str(sid)], s.leader_node_id)
        yield leaders
        if leader:
            suspects = p.rebalancer.suspects(p.clock.monotonic())
            yield GaugeMetricFamily("flotilla_placement_suspect_nodes", "Store nodes up but unheard for --suspect-after", value=len(suspects))
        ops = GaugeMetricFamily(
            "flotilla_placement_operators",
            "Operators in the leader's table by kind and state (running, or how a recent one ended: success, cancelled, timeout)",
            labels=["kind", "state"],
        )
        ended = CounterMetricFamily(
            "flotilla_placement_operators_ended", "Operators ended under this leader, by kind and outcome", labels=["kind", "outcome"]
        )
        if leader:
            by: dict[tuple[str, str], int] = {}
            for op in p.rebalancer.list():
                by[(op.kind, op.state)] = by.get((op.kind, op.state), 0) + 1
            for (kind, state), v in sorted(by.items()):
                ops.add_metric([kind, state], v)
            for (kind, outcome), v in sorted(p.rebalancer.table.ended.items()):
                ended.add_metric([kind, outcome], v)
        yield ops
        yield ended


class RouterCollector(Collector):
    """A router: its routing cache, forwarding retries, and the nodes it set aside."""

    def __init__(self, router: RouterServer) -> None:
        self.r = router

    def collect(self) -> Iterator[Metric]:
        r = self.r
        fw = r.forwarder
        retries = CounterMetricFamily(
            "flotilla_router_forward_retries", "Attempts at a store retried, by reason (unreachable, not_leader, epoch_not_match, ...)",
            labels=["reason"],
        )
        for reason, v in sorted(fw.retries.items()):
            retries.add_metric([reason], v)
        yield retries
        yield CounterMetricFamily(
            "flotilla_router_local_calls",
            "Attempts served by the store node of the router's own process, with no hop (flotilla server --store --router)",
            value=fw.local_calls,
        )
        yield GaugeMetricFamily("flotilla_router_suspect_nodes", "Store nodes the router skips until a probe answers", value=len(fw.health.suspects()))
        yield GaugeMetricFamily("flotilla_router_map_version", "Version of the shard map the router follows", value=r.cache.map_version)
        routes = r.cache.shards()
        yield GaugeMetricFamily("flotilla_router_shards", "Shards in the router's map", value=len(routes))
        leaders = GaugeMetricFamily("flotilla_router_shard_leader", "Leader node id of each shard as the router knows it", labels=["shard"])
        for route in routes:
            leaders.add_metric([str(route.shard_id)], route.leader)
        yield leaders
        yield GaugeMetricFamily("flotilla_router_last_revision", "The highest revision the router has seen", value=fw.last_revision)
        reads = CounterMetricFamily("flotilla_router_replica_reads", "Reads answered, by shard and replica", labels=["shard", "node"])
        for (sid, nid), v in sorted(fw.replica_counts.items()):
            reads.add_metric([str(sid), str(nid)], v)
        yield reads
        handled = CounterMetricFamily(
            "grpc_server_handled", "RPCs completed on the client port, by status code (go-grpc-prometheus's names)",
            labels=["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
        )
        for key, v in sorted(r.grpc_handled.handled.items()):
            handled.add_metric(list(key), v)
        yield handled


# -- health -----------------------------------------------------------------------------------


def raft_health(host: GroupHost, alarms: Callable[[], Iterable[int]] = tuple) -> Health:
    """/health of a store or placement server: an active alarm not excluded,
    else a hosted group without a leader ("RAFT NO LEADER"), makes it unhealthy."""

    async def check(excluded: list[str]) -> tuple[bool, bytes]:
        healthy, body = codec.health(list(alarms()), excluded)
        if not healthy:
            return healthy, body
        for gid in host.group_ids():
            try:
                if not host.status(gid).soft_state.leader_id:
                    return False, json.dumps({"health": "false", "reason": "RAFT NO LEADER"}, separators=(",", ":")).encode()
            except Exception:  # noqa: BLE001 - removed meanwhile
                continue
        return healthy, body

    return check


# -- the listener -----------------------------------------------------------------------------


class MetricsServer:
    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        health: Health | None = None,
        server_version: str = ETCD_VERSION,
        routes: Iterable[Callable[[web.Application], None]] = (),
    ) -> None:
        self.registry = registry
        self._health = health
        self._version = server_version
        self._routes = list(routes)
        """More pages on this listener (a placement server's /dashboard/: flotilla/dashboard.py)."""
        self._runner: web.AppRunner | None = None
        self.urls: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health_handler)
        app.router.add_get("/version", self._version_handler)
        for add in self._routes:
            add(app)
        return app

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _version_handler(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=codec.version_body(self._version), content_type=codec.JSON_CONTENT_TYPE)

    async def _health_handler(self, request: web.Request) -> web.StreamResponse:
        excluded = [v for v in request.query.getall("exclude", []) if v]
        if self._health is None:
            healthy, body = codec.health((), excluded)
        else:
            healthy, body = await self._health(excluded)
        return web.Response(status=200 if healthy else 503, body=body, content_type="text/plain", charset="utf-8")

    async def start(self, urls: Iterable[str]) -> list[str]:
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        self._runner = runner
        try:
            for url in urls:
                _, host, port = parse_listen_url(url)
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((host, port))
                    site = web.SockSite(runner, sock)
                    await site.start()
                except BaseException:
                    sock.close()
                    raise
                shown = f"[{host}]" if ":" in host else host
                self.urls.append(f"http://{shown}:{sock.getsockname()[1]}")
        except BaseException:
            await self.stop()
            raise
        log.info("serving metrics on %s", ", ".join(self.urls))
        return list(self.urls)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


async def serve(
    urls: list[str],
    *,
    host: GroupHost | None = None,
    transport: Transport | None = None,
    node: StoreNode | None = None,
    pnode: PlacementServer | None = None,
    router: RouterServer | None = None,
) -> MetricsServer | None:
    """Start the metrics listener of a process with these roles (None without URLs)."""
    if not urls:
        return None
    registry = CollectorRegistry(auto_describe=False)
    if host is not None:
        registry.register(HostCollector(host, transport))
    if node is not None:
        registry.register(StoreCollector(node))
    if pnode is not None:
        registry.register(PlacementCollector(pnode))
    if router is not None:
        registry.register(RouterCollector(router))
    health: Health | None = None
    if router is not None and host is None:
        from router.gateway import HttpGateway

        gateway = HttpGateway(router.servicers, server_version=ETCD_VERSION, request_timeout_s=router.cfg.request_timeout_s)

        async def router_health(excluded: list[str]) -> tuple[bool, bytes]:
            return await gateway.health(excluded)

        health = router_health
    elif host is not None:
        health = raft_health(host, (lambda: node.quota.active()) if node is not None else tuple)  # type: ignore[union-attr]
    routes = []
    if pnode is not None:
        from flotilla.dashboard import Dashboard

        routes.append(Dashboard(pnode).add_routes)
    server = MetricsServer(registry, health=health, routes=routes)
    await server.start(urls)
    return server

