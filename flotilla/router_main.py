"""The router process: `python -m flotilla.router_main --listen 127.0.0.1:2379
--static-shards 4 --store-peers 1=host:port,2=...,3=...` (or `--placement
host:port,...`). Wiring only; the router itself is router/server.py. `flotilla
server --router` takes the same options prefixed `--router-` (start()).

With port 0 the bound port is reported on stdout (`ready port=...`) and in
--ready-file, as the store nodes do; so are the HTTP/JSON gateway's URLs
(--listen-client-http-urls, `gateway_urls` in the ready file).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

from flotilla import metrics
from flotilla.procs import (
    ManagedProcess,
    add_peer_tls_arguments,
    configure_peer_tls,
    crash_hook_from_env,
    flotilla_argv,
    parse_id_addresses,
    serve_until_signalled,
    write_ready_file,
)
from router.forward import LocalStore
from router.gateway import parse_listen_url
from router.server import RouterConfig, RouterServer
from router.watch import WatchConfig
from rpc import tls

log = logging.getLogger(__name__)


def parse_peers(text: str) -> dict[int, str]:
    return parse_id_addresses(text, complaint="flotilla router: --store-peers wants id=host:port,...")


def parse_http_urls(text: str, *, tls_on: bool = False) -> tuple[str, ...]:
    """--listen-client-http-urls: http://host:port,... (https:// needs the client TLS flags: --cert-file, --key-file)."""
    urls = tuple(u.strip() for u in text.split(",") if u.strip())
    for u in urls:
        try:
            scheme, _, _ = parse_listen_url(u)
        except ValueError as exc:
            raise SystemExit(f"flotilla router: --listen-client-http-urls: {exc}") from None
        if scheme == "https" and not tls_on:
            raise SystemExit(f"flotilla router: --listen-client-http-urls: {u}: https:// needs --cert-file and --key-file")
    return urls


def add_arguments(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """The router's options. `prefix` (e.g. "router-") lets another command
    (`flotilla server --router`) add them beside its own --listen etc.;
    config_from then reads them with the same prefix."""

    def arg(name: str, **kw: object) -> None:
        p.add_argument(f"--{prefix}{name}", **kw)  # type: ignore[arg-type]

    arg("listen", default="127.0.0.1:2379", help="host:port for etcd clients (port 0: any free port, reported)")
    arg(
        "listen-client-http-urls",
        default="",
        help="etcd's HTTP/JSON gateway (/v3/kv/range, /v3/watch, ..., /health, /version) on these URLs, "
        "comma-separated, e.g. http://127.0.0.1:2380 (port 0: any free port, reported); default: none",
    )
    arg("cert-file", default="", help="etcd's flag: TLS certificate of the client port (and of an https:// gateway)")
    arg("key-file", default="", help="its key; with both, plaintext connections are refused")
    arg("trusted-ca-file", default="", help="CA that signs client certificates")
    arg("client-cert-auth", action="store_true", help="require a client certificate signed by --trusted-ca-file")
    arg(
        "auth-token",
        default="simple",
        help="etcd's flag: simple (tokens logged in placement, valid at every router) or "
        "jwt,pub-key=FILE,priv-key=FILE,sign-method=RS256|ES256|...,ttl=5m",
    )
    arg("auth-token-ttl", type=int, default=300, help="etcd's flag: seconds a simple token is valid (default 300)")
    arg("bcrypt-cost", type=int, default=10, help="etcd's flag: bcrypt cost of stored password hashes (4..31, default 10)")
    arg("ready-file", help='write {"port":..,"pid":..,"router_id":..} here once serving')
    arg("static-shards", type=int, default=0, help="static map: the stores' --shards N layout")
    arg("store-peers", default="", help="static map: id=host:port,... of the store nodes")
    arg(
        "placement",
        default="",
        help="follow placement's shard map at host:port[,host:port...] (instead of a static map); "
        "the router registers there and leases go to the placement leader",
    )
    arg("slots", type=int, default=1024, help="slots of the cluster (as the stores' --slots)")
    arg("router-id", type=int, default=0, help="incarnation id of its writes (0: random, a new one each start; keep it so)")
    arg("node-id", type=int, default=0, help="member id, and node id in placement's map (0: the router id); keep it across restarts")
    arg("name", default="flotilla-router", help="member name in MemberList")
    arg("advertise", default="", help="host:port clients reach this router at (MemberList)")
    arg(
        "request-timeout-ms",
        type=int,
        default=7000,
        help="per request, unless the client sets a shorter deadline (etcd: 5 s + 2 election timeouts)",
    )
    arg("max-staleness-ms", type=int, default=0, help="default bound for reads without the metadata (0: linearizable)")
    arg("no-forward-stream", action="store_true", help="unary calls to store nodes instead of batched Forward streams")
    arg("progress-notify-interval-ms", type=int, default=600_000, help="watch progress_notify interval (etcd: 10 min)")
    arg("shard-progress-ms", type=int, default=100, help="progress interval asked of shard watch streams")
    arg("heartbeat-ms", type=int, default=1000, help="heartbeat interval to placement")
    arg(
        "election-timeout-ms",
        type=int,
        default=1000,
        help="the stores' election timeout (--tick-ms x --election-ticks); one attempt at a store takes at most twice this",
    )
    if not prefix:  # alone; under `flotilla server` the process's --peer-* flags apply
        add_peer_tls_arguments(p)


def _bcrypt_cost(cost: int) -> int:
    if not 4 <= cost <= 31:
        raise SystemExit(f"flotilla router: --bcrypt-cost {cost}: bcrypt takes 4..31 (etcd's default: 10)")
    return cost


def config_from(args: argparse.Namespace, prefix: str = "") -> RouterConfig:
    pre = prefix.replace("-", "_")

    def get(name: str) -> Any:
        return getattr(args, pre + name)

    client_tls = tls.TlsConfig(
        cert_file=get("cert_file"),
        key_file=get("key_file"),
        trusted_ca_file=get("trusted_ca_file"),
        client_cert_auth=get("client_cert_auth"),
    )
    try:
        client_tls.check(f"--{prefix}cert-file")
    except tls.TlsError as exc:
        raise SystemExit(f"flotilla router: {exc}") from None
    return RouterConfig(
        listen=get("listen"),
        client_tls=client_tls,
        auth_token=get("auth_token"),
        auth_token_ttl_s=get("auth_token_ttl"),
        bcrypt_cost=_bcrypt_cost(get("bcrypt_cost")),
        static_shards=get("static_shards"),
        store_peers=parse_peers(get("store_peers")),
        placement=get("placement"),
        slot_count=get("slots"),
        router_id=get("router_id"),
        name=get("name"),
        advertise=get("advertise"),
        node_id=get("node_id"),
        heartbeat_s=get("heartbeat_ms") / 1000,
        election_timeout_s=get("election_timeout_ms") / 1000,
        request_timeout_s=get("request_timeout_ms") / 1000,
        default_staleness_ms=get("max_staleness_ms"),
        use_forward_stream=not get("no_forward_stream"),
        client_http_urls=parse_http_urls(get("listen_client_http_urls"), tls_on=client_tls.enabled),
        watch=WatchConfig(
            progress_notify_interval_s=get("progress_notify_interval_ms") / 1000,
            shard_progress_ms=get("shard_progress_ms"),
        ),
    )


async def start(
    args: argparse.Namespace, prefix: str = "", *, ready: bool = True, local: LocalStore | None = None, **overrides: Any
) -> RouterServer:
    """Build and start the router of these options (overrides: RouterConfig
    fields, e.g. a placement list the caller knows); its ready file written
    unless ready=False (then the caller calls write_ready). `local`: the
    store node of this process (router/forward.py, Forwarder.local)."""
    cfg = config_from(args, prefix)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    try:
        router = RouterServer(cfg)
    except ValueError as exc:
        raise SystemExit(f"flotilla router: {exc}") from None
    router.forwarder.local = local
    router.kv.cross.crash_hook = crash_hook_from_env()  # txn_after_prepare, txn_after_decide, txn_during_commit
    await router.start()
    if ready:
        write_ready(args, prefix, router)
    return router


def write_ready(args: argparse.Namespace, prefix: str, router: RouterServer, **extra: Any) -> None:
    info = {
        "port": router.port,
        "pid": os.getpid(),
        "router_id": router.router_id,
        "member_id": router.member_id,
        "gateway_urls": router.gateway_urls,
        **extra,
    }
    write_ready_file(getattr(args, prefix.replace("-", "_") + "ready_file"), info)


async def serve(args: argparse.Namespace, prefix: str = "") -> None:
    if not prefix:
        configure_peer_tls(args, what="flotilla router")
    urls = metrics.parse_urls(getattr(args, "listen_metrics_urls", ""), what="flotilla router")
    router = await start(args, prefix, ready=False)
    mserver = await metrics.serve(urls, router=router)
    write_ready(args, prefix, router, **({"metrics_urls": mserver.urls} if mserver is not None else {}))
    gateway = f" gateway={','.join(router.gateway_urls)}" if router.gateway_urls else ""
    shown = f" metrics={','.join(mserver.urls)}" if mserver is not None else ""
    print(f"ready port={router.port} pid={os.getpid()} router={router.router_id}{gateway}{shown}", flush=True)

    async def stop() -> None:
        if mserver is not None:
            await mserver.stop()
        await router.stop()

    await serve_until_signalled(before_cancel=stop)


def main(args: argparse.Namespace, prefix: str = "") -> int:
    asyncio.run(serve(args, prefix))
    return 0


class RouterProcess(ManagedProcess):
    """A router in its own OS process, for tests and harnesses: started with
    port 0, its port read from --ready-file; stop() ends only this pid."""

    def __init__(self, tmp: Path, args: list[str], *, name: str = "router") -> None:
        super().__init__(log_path=tmp / f"{name}.log", name=name)
        self.tmp = tmp
        self.args = args

    def start(self, timeout_s: float = 30, *, port: int = 0) -> int:
        """Start on port (0: any; a restart passes its old port so clients reconnect)."""
        assert self.ready_file is not None
        argv = ["--listen", f"127.0.0.1:{port}", "--ready-file", str(self.ready_file), *self.args]
        self.spawn(flotilla_argv(*argv, module="flotilla.router_main", verbose=False), cwd=self.tmp)
        self.await_ready(timeout=timeout_s, what="router ready")
        return self.port


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="flotilla-router", description="Flotilla's etcd v3 router")
    parser.add_argument("-v", "--verbose", action="store_true")
    add_arguments(parser)
    metrics.add_arguments(parser)
    ns = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if ns.verbose:
        logging.getLogger("router").setLevel(logging.DEBUG)
    sys.exit(main(ns))
