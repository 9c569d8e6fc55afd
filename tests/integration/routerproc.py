"""A router process joined to a test cluster's placement servers, with a
blocking etcd KV client. Shared by the merge and failover tests."""

from __future__ import annotations

from pathlib import Path

import grpc

from flotilla.cluster import Cluster
from flotilla.procs import ManagedProcess, flotilla_argv
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
