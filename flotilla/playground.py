"""`flotilla playground`: a whole local cluster with one command.

    flotilla playground [--placement 3] [--stores 3] [--routers 0] [--shards 4]
                        [--data-dir ./flotilla-data] [--client-port 2379] [--tls]

Starts, as real OS processes (`python -m flotilla server ...`) on 127.0.0.1:
--placement placement servers (`server --placement`, node ids 1..P) and
--stores store nodes (`server --store --listen-client-urls URL --join
<placement>`, node ids 101..). Every store serves etcd v3 clients itself (member ids 1001..): a
request for a shard it leads is a direct call into that shard, the rest are
forwarded to the leader's node. --routers adds standalone etcd routers
(`server --router --join <placement>`) after them. The first store listens
for clients on --client-port (0: any free port); every other client port is
any free one. The `endpoints:` line names them all (etcd clients balance
over the endpoints they are given), as does playground.json's `endpoints`. Each also serves etcd's HTTP/JSON
gateway (router/gateway/) on a free port, printed and recorded in
playground.json under `gateway_urls`. Every process serves Prometheus metrics on a free
port (`metrics_urls`), and the placement servers the web dashboard there
(`dashboard_url`: p1's, printed as `dashboard: URL`). The endpoints are printed, then a line `ready` once
an etcd Range over the whole key space succeeds through every router (every
shard has a leader). SIGINT or SIGTERM stops the routers, the stores, then
placement (SIGTERM to each pid, waited for) and exits 0.

The data directory holds the cluster: playground.json (its shape and the
ports of the placement servers and store nodes, chosen free on the first
run and kept: they are in the Raft groups' peer lists and the shard map), a
directory per process (p1/, s1/, ...), and logs/ (one log per process).
Running the playground again on the same directory restarts the same
cluster with its data, on the same ports; the shape options must then be
left out or match.

With --tls: a throw-away CA and certificates (flotilla/certs.py, made once,
kept in DATA_DIR/tls/: ca.crt, ca.key, server.crt/.key with SANs 127.0.0.1
and localhost, client.crt/.key), every process's internal port on mutual
TLS (--peer-* flags, server.crt as every process's peer certificate), the
routers' client ports and gateways on TLS requiring a client certificate
(--client-cert-auth); the etcdctl and curl flags to use are printed.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from flotilla.procs import ManagedProcess, ProcessExited, flotilla_argv, stop_all
from rpc import tls
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc

STATE_FILE = "playground.json"
STORE_ID_BASE = 100
ROUTER_ID_BASE = 1000
SLOTS = 1024
DEFAULTS = {"placement": 3, "stores": 3, "shards": 4}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--placement", type=int, default=None, help=f"placement servers (default {DEFAULTS['placement']})")
    p.add_argument("--stores", type=int, default=None, help=f"store nodes (default {DEFAULTS['stores']})")
    p.add_argument(
        "--routers", type=int, default=0,
        help="standalone etcd routers besides the stores, which serve etcd clients themselves (default 0)",
    )
    p.add_argument("--shards", type=int, default=None, help=f"initial shards (default {DEFAULTS['shards']})")
    p.add_argument("--data-dir", default="./flotilla-data", help="the cluster's data and logs (default ./flotilla-data)")
    p.add_argument("--client-port", type=int, default=2379, help="the first store's etcd port (default 2379; 0: any free port)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the cluster to serve before giving up")
    p.add_argument(
        "--tls", action="store_true",
        help="TLS everywhere: a throw-away CA and certificates in DATA_DIR/tls, mutual TLS between the processes, "
        "the client ports on TLS with client certificates (the etcdctl flags are printed)",
    )
    p.add_argument(
        "--quota-backend-bytes", type=int, default=0,
        help="each store's space quota (NOSPACE alarm over it; 0: 2 GiB, etcd's default; below 0: none)",
    )


@dataclass
class Child(ManagedProcess):
    """One process of the playground: argv, and whether its end was reported."""

    args: list[str]
    reported: bool = False


class PlaygroundError(Exception):
    pass


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _die_with_parent() -> None:
    """In the child: SIGTERM when the playground dies (even by SIGKILL)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def load_shape(data_dir: Path, args: argparse.Namespace) -> dict[str, object]:
    """The cluster of data_dir (playground.json), or a new one from args."""
    path = data_dir / STATE_FILE
    if path.exists():
        shape: dict[str, object] = json.loads(path.read_text())
        for key in DEFAULTS:
            given = getattr(args, key)
            if given is not None and given != shape[key]:
                raise PlaygroundError(
                    f"the cluster in {data_dir} has --{key} {shape[key]}; leave --{key} out to restart it "
                    f"(or use another --data-dir for a new cluster)"
                )
        shape["restarted"] = True
        return shape
    shape = {key: getattr(args, key) if getattr(args, key) is not None else d for key, d in DEFAULTS.items()}
    for key in DEFAULTS:
        if int(shape[key]) < 1:  # type: ignore[call-overload]
            raise PlaygroundError(f"--{key} must be at least 1")
    ports = _free_ports(int(shape["placement"]) + int(shape["stores"]))  # type: ignore[call-overload]
    shape["placement_ports"] = ports[: int(shape["placement"])]  # type: ignore[call-overload]
    shape["store_ports"] = ports[int(shape["placement"]) :]  # type: ignore[call-overload]
    shape["slots"] = SLOTS
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(shape, indent=2) + "\n")
    tmp.replace(path)
    shape["restarted"] = False
    return shape


def record_gateway_urls(
    data_dir: Path,
    urls: list[str],
    tls_dir: Path | None = None,
    metrics_urls: dict[str, str] | None = None,
    dashboard_url: str | None = None,
    endpoints: list[str] | None = None,
) -> None:
    """playground.json's `gateway_urls`: each router's HTTP/JSON gateway, this run's (ports chosen free at each start);
    `endpoints`: each router's etcd endpoint (host:port), this run's;
    `tls`: the certificates' directory with --tls, else null; `metrics_urls`: each process's
    Prometheus /metrics (and /health, /version) URL by name (p1, s1, r1, ...), this run's;
    `dashboard_url`: the web dashboard on p1's metrics listener (any placement server serves it)."""
    path = data_dir / STATE_FILE
    shape = json.loads(path.read_text())
    shape["gateway_urls"] = urls
    if endpoints is not None:
        shape["endpoints"] = endpoints
    if metrics_urls is not None:
        shape["metrics_urls"] = metrics_urls
    if dashboard_url is not None:
        shape["dashboard_url"] = dashboard_url
    shape["tls"] = str(tls_dir) if tls_dir is not None else None
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(shape, indent=2) + "\n")
    tmp.replace(path)


class Playground:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.data_dir = Path(args.data_dir).resolve()
        self.stop_requested = threading.Event()
        self.children: list[Child] = []
        self.tls_dir: Path | None = None
        self.client_tls = tls.Tls()
        """How the playground itself calls the routers (with --tls: the client certificate)."""

    # -- processes ---------------------------------------------------------------------------
    def _child(self, name: str, server_args: list[str]) -> Child:
        logs = self.data_dir / "logs"
        run = self.data_dir / "run"
        logs.mkdir(parents=True, exist_ok=True)
        run.mkdir(parents=True, exist_ok=True)
        ready = run / f"{name}.ready"
        ready.unlink(missing_ok=True)
        # Every process serves Prometheus metrics on a free port (ready file: metrics_urls).
        argv = flotilla_argv("server", *server_args, "--ready-file", str(ready), "--listen-metrics-urls", "http://127.0.0.1:0")
        c = Child(argv, name=name, log_path=logs / f"{name}.log", ready_file=ready)
        self.children.append(c)
        return c

    def _spawn(self, c: Child) -> None:
        with open(c.log_path, "ab") as logf:
            logf.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(c.args)}\n".encode())
        c.spawn(
            c.args,
            cwd=self.data_dir,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the playground only; it stops the children in order
            preexec_fn=_die_with_parent,
        )

    def _wait_ready(self, children: list[Child], deadline: float) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        while len(out) < len(children):
            for c in children:
                if c.name in out:
                    continue
                try:
                    info = c.read_ready()
                except ProcessExited:
                    raise PlaygroundError(f"{c.name} exited with {c.returncode} while starting; {c.log_path}:\n{c.log_tail(20)}") from None
                if info is not None:
                    out[c.name] = info
            if len(out) == len(children):
                break
            if time.monotonic() > deadline:
                missing = [c.name for c in children if c.name not in out]
                raise PlaygroundError(f"{', '.join(missing)} not serving within {self.args.timeout:.0f}s (logs in {self.data_dir / 'logs'})")
            if self.stop_requested.wait(0.05):
                raise KeyboardInterrupt
        return out

    def _wait_serving(self, endpoints: list[str], deadline: float, shards: int) -> None:
        """A linearizable etcd Range over the whole key space through the first
        endpoint (every shard has a leader), a serializable one through each
        other endpoint (it serves and knows the map; a linearizable one would
        wake every shard's group again for each), and every endpoint in every
        endpoint's MemberList (registered with placement). With many shards a
        probe gets more time and comes less often, so probing does not keep
        the new groups from settling."""
        probe_s = max(3.0, shards / 100)
        pause_s = max(0.2, shards / 1000)
        for i, ep in enumerate(endpoints):
            with self.client_tls.channel(ep) as ch:
                kv = rpc_pb2_grpc.KVStub(ch)
                cluster = rpc_pb2_grpc.ClusterStub(ch)
                whole = epb.RangeRequest(key=b"\0", range_end=b"\0", limit=1, keys_only=True, serializable=i > 0)
                last = ""
                while True:
                    try:
                        try:
                            kv.Range(whole, timeout=probe_s)
                        except grpc.RpcError as exc:  # auth on (a restart): the router checked and refused, so it serves
                            if exc.code() != grpc.StatusCode.PERMISSION_DENIED and exc.details() != "etcdserver: user name is empty":  # type: ignore[attr-defined]
                                raise
                        members = cluster.MemberList(epb.MemberListRequest(), timeout=probe_s).members
                        if len(members) >= len(endpoints):
                            break
                        last = f"MemberList lists {len(members)} of {len(endpoints)} endpoints"
                    except grpc.RpcError as exc:
                        last = f"{exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
                    for c in self.children:
                        if not c.alive:
                            raise PlaygroundError(f"{c.name} exited with {c.returncode}; {c.log_path}:\n{c.log_tail(20)}")
                    if time.monotonic() > deadline:
                        raise PlaygroundError(f"the endpoint {ep} did not serve a Range within {self.args.timeout:.0f}s (last: {last})")
                    if self.stop_requested.wait(pause_s):
                        raise KeyboardInterrupt

    def stop(self) -> None:
        """Routers, then stores, then placement: SIGTERM by pid, then wait."""
        for kind in ("r", "s", "p"):
            stop_all([c for c in self.children if c.name.startswith(kind)])

    def _tls_flags(self) -> tuple[list[str], list[str]]:
        """With --tls: the certificates (made once), and the flags of (every
        process's peer TLS, a router's client TLS)."""
        if not getattr(self.args, "tls", False):
            return [], []
        from flotilla import certs  # cryptography: only with --tls

        self.tls_dir = self.data_dir / "tls"
        p = {k: str(v) for k, v in certs.write_playground_pki(self.tls_dir).items()}
        self.client_tls = tls.Tls(tls.TlsConfig(p["client.crt"], p["client.key"], p["ca.crt"]))
        peer = [
            "--peer-cert-file", p["server.crt"], "--peer-key-file", p["server.key"],
            "--peer-trusted-ca-file", p["ca.crt"], "--peer-client-cert-auth",
        ]
        client = [
            "--router-cert-file", p["server.crt"], "--router-key-file", p["server.key"],
            "--router-trusted-ca-file", p["ca.crt"], "--router-client-cert-auth",
        ]
        return peer, client

    # -- the command -------------------------------------------------------------------------
    def run(self) -> int:
        args = self.args
        if args.routers < 0:
            raise PlaygroundError("--routers must not be negative")
        if args.client_port and not _port_free(args.client_port):
            raise PlaygroundError(f"port {args.client_port} is in use (an etcd running?); choose another with --client-port (0: any)")
        shape = load_shape(self.data_dir, args)
        pports = [int(p) for p in shape["placement_ports"]]  # type: ignore[attr-defined]
        sports = [int(p) for p in shape["store_ports"]]  # type: ignore[attr-defined]
        busy = [p for p in pports + sports if not _port_free(p)]
        if busy:
            raise PlaygroundError(
                f"ports {busy} of the cluster in {self.data_dir} are in use (is a playground already running on it?)"
            )
        n_p, n_s, shards = len(pports), len(sports), int(shape["shards"])  # type: ignore[call-overload]
        slots = int(shape["slots"])  # type: ignore[call-overload]
        join = ",".join(f"127.0.0.1:{p}" for p in pports)
        peers = ",".join(f"{i + 1}=127.0.0.1:{p}" for i, p in enumerate(pports))
        verb = "restarting" if shape["restarted"] else "starting"
        print(
            f"flotilla playground: {verb} {n_p} placement, {n_s} stores, {args.routers} standalone router(s), {shards} shards; "
            f"data in {self.data_dir}, logs in {self.data_dir / 'logs'}",
            flush=True,
        )
        deadline = time.monotonic() + args.timeout
        peer_tls, client_tls = self._tls_flags()
        placement = [
            self._child(
                f"p{i + 1}",
                [
                    "--placement", "--node-id", str(i + 1), "--data-dir", str(self.data_dir / f"p{i + 1}"),
                    "--listen", f"127.0.0.1:{port}", "--peers", peers, "--slots", str(slots),
                    "--bootstrap-stores", str(n_s), "--initial-shards", str(shards), "--replicas", str(min(3, n_s)),
                    *peer_tls,
                ],
            )
            for i, port in enumerate(pports)
        ]
        # Every process that serves etcd clients: the stores, then the standalone routers.
        gateway_urls = [f"{self.client_tls.scheme}://127.0.0.1:{p}" for p in _free_ports(n_s + args.routers)]
        stores = [
            self._child(
                f"s{i + 1}",
                [
                    "--store", "--node-id", str(STORE_ID_BASE + i + 1), "--data-dir", str(self.data_dir / f"s{i + 1}"),
                    "--listen", f"127.0.0.1:{port}", "--join", join, "--slots", str(slots),
                    "--quota-backend-bytes", str(getattr(args, "quota_backend_bytes", 0)),
                    # etcd's flag: the store serves etcd clients there (--router --router-listen)
                    "--listen-client-urls", f"{self.client_tls.scheme}://127.0.0.1:{args.client_port if i == 0 else 0}",
                    "--router-node-id", str(ROUTER_ID_BASE + i + 1), "--router-name", f"store{i + 1}",
                    "--router-listen-client-http-urls", gateway_urls[i],
                    *peer_tls, *client_tls,
                ],
            )
            for i, port in enumerate(sports)
        ]
        routers = [
            self._child(
                f"r{i + 1}",
                [
                    "--router", "--node-id", str(ROUTER_ID_BASE + n_s + i + 1), "--join", join, "--slots", str(slots),
                    "--router-listen", "127.0.0.1:0",
                    "--router-name", f"router{i + 1}",
                    "--router-listen-client-http-urls", gateway_urls[n_s + i],
                    *peer_tls, *client_tls,
                ],
            )
            for i in range(args.routers)
        ]
        try:
            for c in placement:
                self._spawn(c)
            ready = self._wait_ready(placement, deadline)
            for c in stores + routers:
                self._spawn(c)
            ready.update(self._wait_ready(stores + routers, deadline))
            metrics_urls = {c.name: str(ready[c.name]["metrics_urls"][0]) for c in self.children if ready[c.name].get("metrics_urls")}  # type: ignore[index]
            serving = stores + routers
            endpoints = [f"127.0.0.1:{ready[c.name].get('router_port', ready[c.name]['port'])}" for c in serving]
            for c, ep, gw in zip(serving, endpoints, gateway_urls, strict=True):
                print(f"{c.name}: etcd endpoint {ep}, HTTP/JSON gateway {gw}", flush=True)
            # The web dashboard: on every placement server's metrics listener (a follower shows the leader's).
            dashboard_url = f"{metrics_urls['p1']}/dashboard/" if "p1" in metrics_urls else None
            record_gateway_urls(self.data_dir, gateway_urls, self.tls_dir, metrics_urls, dashboard_url, endpoints)
            print(f"metrics: {', '.join(f'{n} {u}/metrics' for n, u in metrics_urls.items())}", flush=True)
            if dashboard_url is not None:
                print(f"dashboard: {dashboard_url}", flush=True)
            self._wait_serving(endpoints, deadline, shards)
            print(f"endpoints: {','.join(endpoints)}", flush=True)
            print(f"gateway: {','.join(gateway_urls)}", flush=True)
            if self.tls_dir is not None:
                d = self.tls_dir
                print(f"tls: certificates in {d} (mutual TLS between the processes; clients need a certificate)", flush=True)
                print(
                    f"try: etcdctl --endpoints https://{endpoints[0]} --cacert {d / 'ca.crt'} --cert {d / 'client.crt'} "
                    f"--key {d / 'client.key'} put hello world",
                    flush=True,
                )
                print(
                    f"  or: curl --cacert {d / 'ca.crt'} --cert {d / 'client.crt'} --key {d / 'client.key'} "
                    f"-X POST {gateway_urls[0]}/v3/kv/range -d '{{\"key\": \"aGVsbG8=\"}}'",
                    flush=True,
                )
            else:
                print(f"try: etcdctl --endpoints {','.join(endpoints)} put hello world", flush=True)
                print(f"  or: curl -X POST {gateway_urls[0]}/v3/kv/range -d '{{\"key\": \"aGVsbG8=\"}}'", flush=True)
            print("ready", flush=True)
            while not self.stop_requested.wait(0.5):
                for c in self.children:
                    if not c.alive and not c.reported:
                        c.reported = True
                        print(f"playground: {c.name} (pid {c.proc.pid if c.proc else '?'}) exited with {c.returncode}; see {c.log_path}", flush=True)
        except KeyboardInterrupt:
            pass
        finally:
            print("flotilla playground: stopping", flush=True)
            self.stop()
        print("flotilla playground: stopped", flush=True)
        return 0


def main(args: argparse.Namespace) -> int:
    pg = Playground(args)

    def on_signal(signum: int, frame: object) -> None:
        pg.stop_requested.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        return pg.run()
    except PlaygroundError as exc:
        print(f"flotilla playground: {exc}", file=sys.stderr, flush=True)
        pg.stop()
        return 1
