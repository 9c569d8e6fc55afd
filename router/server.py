"""The router process, embeddable: ``RouterServer`` serves the etcd v3
services (KV, Watch, Lease, Cluster, Maintenance, Lock, Election, Auth) on one
grpc.aio server, and with ``client_http_urls`` (etcd's
--listen-client-http-urls) the same servicer objects over HTTP/JSON
(router/gateway/, etcd's grpc-gateway paths and shapes) in the same loop.

    server = RouterServer(RouterConfig(listen="127.0.0.1:0", static_shards=4,
                                       store_peers={1: "127.0.0.1:7001", ...}))
    port = await server.start()
    ...
    await server.stop()

Two map sources (router/cache.py): the static layout of `flotilla server
--shards N` with `static_shards` and `store_peers`, or placement's WatchMap
with `placement` (one placement server or several, `host:port,host:port`).
With placement the router also registers there as a ROUTER node and
heartbeats (router/membership.py), MemberList lists every router up in the
map, Lease RPCs go to the placement leader (router/lease.py), and so do
Auth RPCs: users and roles live in placement, every request is checked
against them (router/auth.py, router/authstore.py). flotilla/router_main.py is the command line around it; a
playground can start it in its own event loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc.aio

from flotillapb import discovery_pb2_grpc
from flotillapb import placement_pb2 as ppb
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc
from flotillapb.etcd.v3electionpb import v3election_pb2_grpc
from flotillapb.etcd.v3lockpb import v3lock_pb2_grpc
from router.cache import MapSource, PlacementSource, RoutingCache, StaticSource
from router.cluster import ClusterServicer, RouterMember
from router.coordination import ElectionServicer, LockServicer
from router.discovery import DiscoveryServicer
from router.forward import Channels, Forwarder
from router.gateway import HttpGateway
from router.auth import AuthServicer
from router.auth import guard as guard_servicers
from router.authstore import AuthCache, AuthGuard
from router.authtoken import DEFAULT_SIMPLE_TTL_S, provider
from router.grpc_handlers import add_servicer
from router.grpcstats import HandledCounter
from router.kv import MAX_REQUEST_BYTES, Identity, KvRouter, KvServicer
from router.lease import LeaseServicer, PlacementLeases, PlacementLink
from router.membership import Registration
from router.maintenance import ETCD_VERSION, MaintenanceServicer
from router.recipes import Recipes
from router.watch import WatchConfig, WatchServicer, WatchSession
from rpc import tls

log = logging.getLogger(__name__)

GRPC_OVERHEAD_BYTES = 512 * 1024  # room above etcd's request limit, so we can answer "too large" ourselves
DEFAULT_CLUSTER_ID = 0xF1077A11A


@dataclass
class RouterConfig:
    listen: str = "127.0.0.1:0"
    static_shards: int = 0
    store_peers: dict[int, str] = field(default_factory=dict)
    placement: str = ""
    slot_count: int = 1024
    router_id: int = 0  # 0: random (a new incarnation each start)
    name: str = "flotilla-router"
    cluster_id: int = DEFAULT_CLUSTER_ID
    request_timeout_s: float = 7.0  # etcd: 5 s + 2 election timeouts
    default_staleness_ms: int = 0
    use_forward_stream: bool = True
    static_poll_interval_s: float = 1.0
    watch: WatchConfig = field(default_factory=WatchConfig)
    advertise: str = ""  # host:port clients reach this router at; default: the bound address
    node_id: int = 0  # its member id, and its node id in placement's map; 0: router_id
    heartbeat_s: float = 1.0  # to placement
    election_timeout_s: float = 1.0  # the stores' (--tick-ms x --election-ticks): one attempt at a node takes at most two
    client_http_urls: tuple[str, ...] = ()  # etcd's --listen-client-http-urls: the HTTP/JSON gateway (router/gateway/)
    http_ssl_context: ssl.SSLContext | None = None  # the gateway's TLS for https:// URLs; default: client_tls's pair
    client_tls: tls.TlsConfig = field(default_factory=tls.TlsConfig)
    """etcd's --cert-file, --key-file, --trusted-ca-file, --client-cert-auth: the
    client port (and an https:// gateway) serves TLS with it; no files: plaintext."""
    auth_token: str = "simple"
    """etcd's --auth-token: simple, or jwt,pub-key=...,priv-key=...,sign-method=...,ttl=... (router/authtoken.py)."""
    auth_token_ttl_s: int = DEFAULT_SIMPLE_TTL_S  # etcd's --auth-token-ttl (simple tokens)
    bcrypt_cost: int = 10  # etcd's --bcrypt-cost
    auth_poll_interval_s: float = 0.5
    auth_max_staleness_s: float = 2.0
    """A request is checked against users and roles at most this old (router/authstore.py)."""


class RouterServer:
    def __init__(self, cfg: RouterConfig) -> None:
        if bool(cfg.static_shards) == bool(cfg.placement):
            raise ValueError("give exactly one map source: static_shards (with store_peers) or placement")
        if cfg.static_shards and not cfg.store_peers:
            raise ValueError("static_shards needs store_peers")
        self.cfg = cfg
        self.router_id = cfg.router_id or random.SystemRandom().getrandbits(40) | 1
        self.cache = RoutingCache(cfg.slot_count)
        self.grpc_handled = HandledCounter()
        self.channels = Channels()
        self.forwarder = Forwarder(
            self.cache,
            self.channels,
            router_id=self.router_id,
            use_forward_stream=cfg.use_forward_stream,
            attempt_timeout_s=2 * cfg.election_timeout_s,
        )
        self.member_id = cfg.node_id or self.router_id
        self.identity = Identity(cfg.cluster_id, self.member_id)
        self.source: MapSource
        self.link: PlacementLink | None = None
        self.placement_source: PlacementSource | None = None
        if cfg.placement:
            self.placement_source = PlacementSource(self.cache, cfg.placement, channel_for=self.channels.channel)
            self.link = PlacementLink(self.placement_source.addresses)
            self.source = self.placement_source
        else:
            self.source = StaticSource(
                self.cache,
                cfg.static_shards,
                cfg.store_peers,
                poll_interval_s=cfg.static_poll_interval_s,
                channel_for=self.channels.channel,
            )
        self.cache.source = self.source
        self.kv = KvRouter(
            self.forwarder,
            self.cache,
            self.identity,
            default_staleness_ms=cfg.default_staleness_ms,
            leases=PlacementLeases(self.link) if self.link is not None else None,
        )
        self.registration: Registration | None = None
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._source_task: asyncio.Task[None] | None = None
        self._registration_task: asyncio.Task[None] | None = None
        self.servicers: dict[str, object] = {}
        """The etcd services by full name (etcdserverpb.KV, ...): the gRPC server and the HTTP gateway call the same objects."""
        self.gateway: HttpGateway | None = None
        self.gateway_urls: list[str] = []
        self.client_tls = tls.Tls(cfg.client_tls)
        self.tokens = provider(cfg.auth_token, cfg.auth_token_ttl_s)  # AuthTokenError (a ValueError) on a bad option
        self.auth: AuthGuard | None = None
        self._auth_task: asyncio.Task[None] | None = None
        if self.link is not None:
            cache = AuthCache(self.link.client, poll_interval_s=cfg.auth_poll_interval_s, max_staleness_s=cfg.auth_max_staleness_s)
            self.auth = AuthGuard(cache, self.tokens, client_cert_auth=cfg.client_tls.client_cert_auth, default_timeout_s=cfg.request_timeout_s)

    @property
    def address(self) -> str:
        return self.cfg.advertise or f"{self.cfg.listen.rpartition(':')[0]}:{self.port}"

    def members(self) -> list[RouterMember]:
        """This router, then every other router placement's map has up."""
        scheme = self.client_tls.scheme
        url = f"{scheme}://{self.address}"
        out = [RouterMember(self.member_id, self.cfg.name, (url,), (url,))]
        if self.placement_source is not None:
            for nid, n in sorted(self.placement_source.routers.items()):
                if nid == self.member_id or n.state != ppb.UP:
                    continue
                other = f"{scheme}://{n.address}"
                name = next((lb.value for lb in n.labels if lb.key == "name"), f"router-{nid}")
                out.append(RouterMember(nid, name, (other,), (other,)))
        return out

    def _stamp(self, header: epb.ResponseHeader, revision: int | None = None) -> None:
        self.kv.stamp(header, revision)

    async def _watch(self, create: epb.WatchCreateRequest) -> AsyncIterator[epb.WatchResponse]:
        """One watch of the router's own (the Lock and Election recipes):
        its responses after the created one, until the caller closes it."""
        session = WatchSession(self.forwarder, self.cache, self.cfg.watch, self._stamp)
        closed = asyncio.Event()

        async def requests() -> AsyncIterator[epb.WatchRequest]:
            yield epb.WatchRequest(create_request=create)
            await closed.wait()

        stream = session.run(requests())
        try:
            async for resp in stream:
                if resp.created and not resp.canceled:
                    continue
                yield resp
        finally:
            closed.set()
            await stream.aclose()

    async def _grant(self, ttl_s: int, deadline: float) -> int:
        assert self.link is not None
        left = deadline - asyncio.get_running_loop().time()
        resp = await self.link.call("LeaseGrant", epb.LeaseGrantRequest(TTL=ttl_s), timeout_s=left)
        return int(resp.ID)

    async def start(self) -> int:
        cfg = self.cfg
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_REQUEST_BYTES + GRPC_OVERHEAD_BYTES),
                ("grpc.max_send_message_length", 64 << 20),
            ],
        )
        self.watch_servicer = WatchServicer(self.forwarder, self.cache, cfg.watch, self._stamp)
        recipes = Recipes(self.kv, self._watch, self._grant if self.link is not None else None, timeout_s=cfg.request_timeout_s)
        self.servicers = {
            "etcdserverpb.KV": KvServicer(self.kv, cfg.request_timeout_s),
            "etcdserverpb.Watch": self.watch_servicer,
            "etcdserverpb.Lease": LeaseServicer(self.link, self._stamp),
            "etcdserverpb.Cluster": ClusterServicer(self.members, self._stamp),
            "etcdserverpb.Maintenance": MaintenanceServicer(
                self.kv, cfg.request_timeout_s, lambda: self.forwarder.last_revision, leases=self.link
            ),
            "v3lockpb.Lock": LockServicer(recipes),
            "v3electionpb.Election": ElectionServicer(recipes),
        }
        if self.auth is not None:  # every call checked against placement's users and roles first
            self.servicers = guard_servicers(self.servicers, self.auth, self.link.call if self.link is not None else None)
        self.servicers["etcdserverpb.Auth"] = AuthServicer(
            self.auth, self.link.call if self.link is not None else None, self._stamp,
            bcrypt_cost=cfg.bcrypt_cost, timeout_s=cfg.request_timeout_s,
        )
        # Through add_servicer: an undecodable request gets grpc-go's INTERNAL "grpc: error unmarshalling request".
        for add_to_server, name in (
            (rpc_pb2_grpc.add_KVServicer_to_server, "etcdserverpb.KV"),
            (rpc_pb2_grpc.add_WatchServicer_to_server, "etcdserverpb.Watch"),
            (rpc_pb2_grpc.add_LeaseServicer_to_server, "etcdserverpb.Lease"),
            (rpc_pb2_grpc.add_ClusterServicer_to_server, "etcdserverpb.Cluster"),
            (rpc_pb2_grpc.add_MaintenanceServicer_to_server, "etcdserverpb.Maintenance"),
            (v3lock_pb2_grpc.add_LockServicer_to_server, "v3lockpb.Lock"),
            (v3election_pb2_grpc.add_ElectionServicer_to_server, "v3electionpb.Election"),
            (rpc_pb2_grpc.add_AuthServicer_to_server, "etcdserverpb.Auth"),
        ):
            add_servicer(server, add_to_server, self.servicers[name], handled=self.grpc_handled)  # grpc_server_handled_total
        # Flotilla's own read-only Discovery (not an etcd service, not on the gateway): the placement
        # servers this router follows, for `flotilla ctl --endpoints <this router>`.
        placement = self.placement_source
        discovery = DiscoveryServicer((lambda: placement.addresses) if placement is not None else list, self.member_id)
        add_servicer(server, discovery_pb2_grpc.add_DiscoveryServicer_to_server, discovery, handled=self.grpc_handled)
        self.port = self.client_tls.add_port(server, cfg.listen)  # TLS: a plaintext connection is refused
        if not self.port:
            raise OSError(f"router: cannot listen on {cfg.listen}")
        await server.start()
        self._server = server
        if cfg.client_http_urls:
            self.gateway = HttpGateway(
                self.servicers,
                server_version=ETCD_VERSION,
                request_timeout_s=cfg.request_timeout_s,
                ssl_context=cfg.http_ssl_context or (self.client_tls.server_ssl_context() if self.client_tls.enabled else None),
            )
            try:
                self.gateway_urls = await self.gateway.start(cfg.client_http_urls)
            except BaseException:
                await server.stop(0)
                raise
        self._source_task = asyncio.create_task(self.source.run(), name="router-map-source")
        if self.auth is not None:
            self._auth_task = asyncio.create_task(self.auth.cache.run(), name="router-auth-state")
        if self.link is not None:
            self.registration = Registration(self.link.client, self.member_id, self.address, cfg.name, interval_s=cfg.heartbeat_s)
            self._registration_task = asyncio.create_task(self.registration.run(), name="router-registration")
        log.info("router=%d serving etcd v3 on %s", self.router_id, self.address)
        return self.port

    async def wait_for_map(self, timeout_s: float = 10.0) -> None:
        """Until one refresh of the map source has been tried (leaders known)."""
        async with asyncio.timeout(timeout_s):
            await self.source.refresh()

    async def stop(self, grace_s: float = 0.5) -> None:
        if self.gateway is not None:
            await self.gateway.stop()
        if self._server is not None:
            await self._server.stop(grace_s)
        tasks = [t for t in (self._source_task, self._registration_task, self._auth_task) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.link is not None:
            await self.link.close()
        await self.forwarder.close()
        await self.channels.close()
