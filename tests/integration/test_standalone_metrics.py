"""`--listen-metrics-urls` on the standalone mains too (issue #19: metrics on
every process): a placement server run as `python -m flotilla.placement_main`
and a router as `python -m flotilla.router_main` serve Prometheus /metrics
and name the URL in their ready files."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from flotilla.placementcluster import PlacementCluster
from flotilla.procs import wait_until
from flotilla.router_main import RouterProcess
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc

pytestmark = pytest.mark.integration


def scrape(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:  # noqa: S310 - a local test server
        return r.read().decode()


@pytest.fixture(scope="module")
def placement(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlacementCluster]:
    c = PlacementCluster(tmp_path_factory.mktemp("pmetrics"), node_ids=(1,), extra_args=["--listen-metrics-urls", "http://127.0.0.1:0"])
    try:
        c.start()
        yield c
    finally:
        c.stop()


def test_a_standalone_placement_server_serves_metrics(placement: PlacementCluster) -> None:
    info = placement.nodes[1].read_ready()
    assert info is not None and info.get("metrics_urls"), info
    url = info["metrics_urls"][0]
    wait_until(lambda: "etcd_server_has_leader 1.0" in scrape(url), timeout=30, what="placement's metrics show a leader")


def test_a_standalone_router_serves_metrics(placement: PlacementCluster, tmp_path: Path) -> None:
    router = RouterProcess(tmp_path, ["--placement", placement.nodes[1].address, "--listen-metrics-urls", "http://127.0.0.1:0"])
    try:
        router.start(timeout_s=60)
        info = router.read_ready()
        assert info is not None and info.get("metrics_urls"), info
        url = info["metrics_urls"][0]
        with grpc.insecure_channel(router.address) as ch:
            with pytest.raises(grpc.RpcError):
                rpc_pb2_grpc.KVStub(ch).Range(epb.RangeRequest(key=b""), timeout=10)  # empty key: InvalidArgument
        # context.abort sends the status before the handler's accounting
        # runs, so the client can scrape before the call is counted: wait.
        counted = 'grpc_server_handled_total{grpc_code="InvalidArgument",grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 1.0'
        wait_until(lambda: counted in scrape(url), timeout=10, what="the refused Range counted")
    finally:
        router.stop()
