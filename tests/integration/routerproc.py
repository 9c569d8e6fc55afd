"""A router process joined to a test cluster's placement servers, with a
blocking etcd KV client (``Router``: the merge and failover tests), and a
whole cluster with a standalone router process (``cluster_with_router``:
the fixtures of the gateway, quota and client compatibility tests)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import grpc

from flotilla.cluster import Cluster
from flotilla.procs import ManagedProcess, flotilla_argv
from flotilla.router_main import RouterProcess
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc


class Router:
    """One router process joined to the cluster's placement servers."""

    def __init__(self, c: Cluster, tmp: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        join = ",".join(c.placement.nodes[n].address for n in c.placement_ids)
        self.proc = ManagedProcess(log_path=tmp / "router.log", name="router")
        argv = flotilla_argv(
            "server", "--router", "--node-id", "1001", "--join", join, "--slots", str(c.slot_count),
            "--router-listen", "127.0.0.1:0", "--router-name", "router1", "--ready-file", str(self.proc.ready_file),
        )
        self.proc.spawn(argv, cwd=tmp)
        self.proc.await_ready(timeout=90)
        self.channel = grpc.insecure_channel(self.proc.address)
        self.kv = rpc_pb2_grpc.KVStub(self.channel)

    def put(self, key: bytes, value: bytes) -> None:
        self.kv.Put(epb.PutRequest(key=key, value=value), timeout=30)

    def get(self, key: bytes) -> bytes | None:
        r = self.kv.Range(epb.RangeRequest(key=key), timeout=30)  # linearizable (etcd's default)
        return r.kvs[0].value if r.kvs else None

    def stop(self) -> None:
        self.channel.close()
        self.proc.stop()


@contextlib.contextmanager
def cluster_with_router(c: Cluster, tmp: Path, *router_args: str) -> Iterator[RouterProcess]:
    """c started and bootstrapped, and a router process (`flotilla.router_main`)
    following its placement servers with router_args; both logs printed if
    the body fails; both stopped."""
    router: RouterProcess | None = None
    try:
        c.start()
        c.wait_bootstrapped()
        paddr = ",".join(c.placement.nodes[n].address for n in c.placement_ids)
        (tmp / "router").mkdir(parents=True, exist_ok=True)
        router = RouterProcess(tmp / "router", ["--placement", paddr, *router_args])
        router.start(timeout_s=60)
        yield router
    except BaseException:
        print(c.logs())
        if router is not None:
            print(router.log_tail(60))
        raise
    finally:
        if router is not None:
            router.stop()
        c.stop()
