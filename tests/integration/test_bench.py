"""`python -m flotilla.bench` as a user runs it: against a router started by
the harness (3 store nodes, 2 shards), and, where Debian's etcd-server is
installed, against a single etcd member (flotilla/bench/etcd.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.bench.compare import read_spread, replica_reads
from flotilla.bench.etcd import DEFAULT_ETCD_BIN, EtcdCluster
from flotilla.cluster import Cluster
from flotilla.router_main import RouterProcess
from flotilla.storecluster import StoreCluster, wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SHARDS = 2


def bench(*args: str, timeout: float = 60) -> dict:  # type: ignore[type-arg]
    rc, out, p = bench_run(*args, timeout=timeout)
    assert rc == 0, f"bench exited {rc}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr[-3000:]}"
    return out


def bench_run(*args: str, timeout: float = 60) -> tuple[int, dict, subprocess.CompletedProcess[str]]:  # type: ignore[type-arg]
    """(exit code, the JSON result, the process): exit 1 when no request succeeded, still with a result."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    p = subprocess.run(
        [sys.executable, "-m", "flotilla.bench", *args, "-o", "json", "--progress", "off"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=str(REPO),
    )
    assert p.returncode in (0, 1) and p.stdout.startswith("{"), f"bench exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr[-3000:]}"
    return p.returncode, json.loads(p.stdout), p


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, StoreCluster]]:
    tmp = tmp_path_factory.mktemp("bench")
    stores = StoreCluster(tmp, shards=SHARDS)
    r: RouterProcess | None = None
    try:
        stores.start()
        wait_until(stores.all_shards_led, timeout=30, what="a leader for every shard")
        peers = ",".join(f"{n}={stores.nodes[n].address}" for n in stores.nodes)
        r = RouterProcess(tmp, ["--static-shards", str(SHARDS), "--store-peers", peers])
        r.start()
        yield r.address, stores
    finally:
        if r is not None:
            r.stop()
        stores.stop()


@pytest.fixture(scope="module")
def router(cluster: tuple[str, StoreCluster]) -> str:
    return cluster[0]


@pytest.fixture(scope="module")
def placement_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Cluster]]:
    """A router that follows placement's map (as in the playground), over 3 stores and 2 shards."""
    tmp = tmp_path_factory.mktemp("bench-placement")
    c = Cluster(tmp / "c", initial_shards=SHARDS)
    r: RouterProcess | None = None
    try:
        c.start()
        c.wait_bootstrapped()
        join = ",".join(c.placement.nodes[n].address for n in c.placement_ids)
        r = RouterProcess(tmp, ["--placement", join])
        r.start()
        yield r.address, c
    finally:
        if r is not None:
            r.stop()
        c.stop()


def test_put_total_against_the_router(router: str) -> None:
    out = bench("put", "--endpoints", router, "--total", "200", "--clients", "8", "--conns", "2", "--key-space", "50")
    assert out["workload"] == "put"
    assert out["ops"] == 200 and out["latency"]["count"] == 200
    assert out["error_count"] == 0 and out["errors"] == {}
    assert out["clients"] == 8 and out["conns"] == 2 and out["procs"] == 1
    lat = out["latency"]
    assert 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert out["throughput"] > 0


def test_reads_txn_and_watch_over_two_client_processes(router: str) -> None:
    common = ["--endpoints", router, "--clients", "4", "--conns", "2", "--procs", "2", "--key-space", "20"]
    lin = bench("range", *common, "--total", "100", "--prefill")
    ser = bench("range", *common, "--total", "100", "--consistency", "s", "--max-staleness-ms", "500")
    txn = bench("txn-put", *common, "--total", "60")
    watch = bench("watch", *common, "--total", "40")
    for out, n in ((lin, 100), (ser, 100), (txn, 60), (watch, 40)):
        assert (out["ops"], out["error_count"], out["procs"]) == (n, 0, 2), out
    assert lin["consistency"] == "l" and ser["consistency"] == "s" and ser["max_staleness_ms"] == 500


def test_duration_mode_stops_on_time(router: str) -> None:
    out = bench("put", "--endpoints", router, "--duration", "1", "--clients", "2")
    assert out["error_count"] == 0 and out["ops"] > 0
    assert 0.9 <= out["elapsed_s"] < 5


def test_bounded_staleness_reads_spread_over_every_replica(cluster: tuple[str, StoreCluster]) -> None:
    """The comparison's per-replica count (each store's Status) after 600
    bounded-staleness reads: every replica of both shards served some, none
    more than 40% of its shard's (the router takes the replicas whose closed
    timestamp is recent enough in turn). A bound of 5 s keeps followers
    eligible on a loaded machine; the leader alone would take 100%."""
    address, stores = cluster
    names = {f"store-{n}": p.address for n, p in stores.nodes.items()}
    common = ["--endpoints", address, "--clients", "4", "--key-space", "40"]
    bench("range", *common, "--total", "40", "--prefill")
    before = replica_reads(names)
    out = bench("range", *common, "--total", "600", "--max-staleness-ms", "5000")
    assert (out["ops"], out["error_count"]) == (600, 0)
    after = replica_reads(names)
    spread = read_spread(before, after)
    assert spread["reads"] >= 600, spread
    served = {k for k, v in after.items() if v > before.get(k, 0)}
    assert served == set(after) and len(served) == 3 * SHARDS, (served, spread)
    assert spread["max_replica_share_of_its_shard"] <= 0.40, spread


def test_bounded_staleness_reads_spread_with_a_router_that_follows_placement(placement_cluster: tuple[str, Cluster]) -> None:
    """The same through a router that follows placement's map (as in the
    playground), which learns a replica's closed timestamp only from its
    answers: the followers are probed now and then, so after 600 reads
    every replica served some and none more than 40% of its shard's.
    (Before the probe, the leader served all of them.)"""
    address, c = placement_cluster
    names = {f"store-{n}": p.address for n, p in c.stores.nodes.items()}
    common = ["--endpoints", address, "--clients", "4", "--key-space", "40"]
    bench("range", *common, "--total", "40", "--prefill")
    before = replica_reads(names)
    out = bench("range", *common, "--total", "600", "--max-staleness-ms", "5000")
    assert (out["ops"], out["error_count"]) == (600, 0)
    after = replica_reads(names)
    spread = read_spread(before, after)
    served = {k for k, v in after.items() if v > before.get(k, 0)}
    assert served == set(after) and len(served) == 3 * SHARDS, (served, spread)
    assert spread["max_replica_share_of_its_shard"] <= 0.40, spread


def test_txn_pair_pairs_keys_by_the_maps_shards(placement_cluster: tuple[str, Cluster]) -> None:
    """txn-pair (two keys of one shard: compare both mod revisions, put
    both) through a router that follows placement: keys paired by the map's
    shards, every txn answered, the failed compares within them."""
    address, _ = placement_cluster
    out = bench("txn-pair", "--endpoints", address, "--total", "60", "--clients", "4", "--key-space", "40")
    assert (out["ops"], out["error_count"]) == (60, 0), out
    assert out["pairing"] == f"shard (the map of {SHARDS} shards)" and 0 <= out["compare_failed"] < 60, out


def test_txn_cross_reports_what_each_txn_got(placement_cluster: tuple[str, Cluster]) -> None:
    """txn-cross (two keys on different shards) runs to its end whatever
    the cluster answers: every request is a success or an error counted by
    gRPC code with its text (a refused cross-shard txn names the shards),
    and the exit code says whether any succeeded."""
    address, _ = placement_cluster
    rc, out, p = bench_run("txn-cross", "--endpoints", address, "--total", "40", "--clients", "4", "--key-space", "40")
    assert out["workload"] == "txn-cross" and out["pairing"] == f"shard (the map of {SHARDS} shards)", out
    assert out["ops"] + out["error_count"] == 40 and rc == (0 if out["ops"] else 1), out
    assert all(e.split(":")[0] in out["errors"] for e in out["first_errors"]), out
    if out["errors"]:
        assert out["first_errors"] and all(e.strip() for e in out["first_errors"]), out
    text = subprocess.run(
        [sys.executable, "-m", "flotilla.bench", "txn-cross", "--endpoints", address, "--total", "4", "--key-space", "40", "--progress", "off"],
        capture_output=True, text=True, timeout=60, cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert "keys paired by shard" in text.stdout and "Traceback" not in text.stderr, text


def test_txn_cross_commits_txns_over_two_shards(placement_cluster: tuple[str, Cluster]) -> None:
    """Every txn of two keys on different shards answered, on a key space
    large enough that they seldom meet (how they fare when they contend is
    what the figures of `flotilla bench txn-cross` are for); a deadline of
    30 s per txn leaves room for a loaded machine."""
    address, _ = placement_cluster
    out = bench("txn-cross", "--endpoints", address, "--total", "60", "--clients", "4", "--key-space", "1000", "--timeout", "30", timeout=180)
    assert (out["ops"], out["error_count"]) == (60, 0), out
    assert out["compare_failed"] < 60, out


def test_txn_pair_without_a_map_pairs_by_slot_quarters(router: str) -> None:
    """Through a router with a static map (no placement to ask): keys paired
    by slot quarters, which stay in one shard of the 2."""
    out = bench("txn-pair", "--endpoints", router, "--total", "30", "--clients", "2", "--key-space", "40")
    assert (out["ops"], out["error_count"]) == (30, 0), out
    assert out["pairing"].startswith("slot quarters of 1024 slots (no shard map:"), out


@pytest.mark.skipif(not os.access(DEFAULT_ETCD_BIN, os.X_OK), reason=f"no {DEFAULT_ETCD_BIN}: run scripts/install_bench_deps.sh")
def test_the_same_bench_drives_a_real_etcd_member(tmp_path: Path) -> None:
    with EtcdCluster(tmp_path, size=1) as etcd:
        ep = etcd.endpoints[0]
        put = bench("put", "--endpoints", ep, "--total", "100", "--clients", "4")
        rng = bench("range", "--endpoints", ep, "--total", "50", "--clients", "4", "--consistency", "s")
    assert (put["ops"], put["error_count"]) == (100, 0)
    assert (rng["ops"], rng["error_count"]) == (50, 0)


def _handled(metrics_url: str, method: str) -> int:
    """grpc_server_handled_total of one KV method answered OK by a router."""
    with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=10) as resp:
        body = resp.read().decode()
    wanted = f'grpc_method="{method}"'
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in body.splitlines()
        if line.startswith("grpc_server_handled_total{") and wanted in line and 'grpc_code="OK"' in line
    )


def test_one_client_goes_through_every_endpoint_in_turn(placement_cluster: tuple[str, Cluster], tmp_path: Path) -> None:
    """--endpoints spreading: one client's puts go to each endpoint in turn
    (clientv3's round robin), counted by each router's own handled counter."""
    _, c = placement_cluster
    join = ",".join(c.placement.nodes[n].address for n in c.placement_ids)
    routers: list[RouterProcess] = []
    try:
        for i in range(2):
            (tmp_path / f"r{i}").mkdir()
            r = RouterProcess(tmp_path / f"r{i}", ["--placement", join, "--listen-metrics-urls", "http://127.0.0.1:0"], name=f"spread{i}")
            routers.append(r)
            r.start()
        urls = [str(r.read_ready()["metrics_urls"][0]) for r in routers]  # type: ignore[index]
        before = [_handled(u, "Put") for u in urls]
        out = bench("put", "--endpoints", ",".join(r.address for r in routers), "--total", "40", "--clients", "1", "--key-space", "50")
        assert (out["ops"], out["error_count"]) == (40, 0), out
        assert [_handled(u, "Put") - b for u, b in zip(urls, before, strict=True)] == [20, 20]
    finally:
        for r in routers:
            r.stop()
