"""Operating a real cluster (issue #19): `flotilla ctl` given a router's etcd
endpoint, `-o json` after the command, `ctl status`; every role's
Prometheus endpoint (--listen-metrics-urls) scraped over HTTP, with /health
and /version beside it.

One cluster for the module: 3 placement servers, 3 store nodes and a router,
each with `--listen-metrics-urls http://127.0.0.1:0`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flotilla.cluster import Cluster, running, wait_until
from flotilla.procs import ManagedProcess, flotilla_argv
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc

pytestmark = pytest.mark.integration

METRICS = ["--listen-metrics-urls", "http://127.0.0.1:0"]


class Env:
    def __init__(self, c: Cluster, tmp: Path) -> None:
        self.c = c
        tmp.mkdir(parents=True, exist_ok=True)
        join = ",".join(c.placement.nodes[n].address for n in c.placement_ids)
        self.router = ManagedProcess(log_path=tmp / "router.log", name="router")
        argv = flotilla_argv(
            "server", "--router", "--node-id", "1001", "--join", join, "--slots", str(c.slot_count),
            "--router-listen", "127.0.0.1:0", "--router-name", "router1", "--ready-file", str(self.router.ready_file), *METRICS,
        )
        self.router.spawn(argv, cwd=tmp)
        self.router_info = self.router.await_ready(timeout=90)
        self.channel = grpc.insecure_channel(self.router.address)
        self.kv = rpc_pb2_grpc.KVStub(self.channel)

    def put(self, key: bytes, value: bytes) -> None:
        self.kv.Put(epb.PutRequest(key=key, value=value), timeout=30)

    def metrics_url(self, proc: ManagedProcess) -> str:
        info = proc.read_ready()
        assert info is not None and info.get("metrics_urls"), info
        return str(info["metrics_urls"][0])

    def stop(self) -> None:
        self.channel.close()
        self.router.stop()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("ops")
    c = Cluster(tmp, placement_args=METRICS, store_args=METRICS)
    with running(c):
        e = Env(c, tmp / "router")
        try:
            yield e
        finally:
            print(e.router.log_tail())
            e.stop()


def ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flotilla", "ctl", *args], capture_output=True, text=True, timeout=60, check=False)


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """name -> [(labels, value)] of every sample at url/metrics."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def value(m: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    got = [v for lb, v in m.get(name, []) if all(lb.get(k) == x for k, x in labels.items())]
    assert got, f"{name}{labels} not exposed; have {sorted(m)}"
    return got[0]


# -- ctl ---------------------------------------------------------------------------------------


def test_ctl_through_a_router_endpoint_with_json_after_the_command(env: Env) -> None:
    out = ctl("--endpoints", env.router.address, "shards", "-o", "json")
    assert out.returncode == 0, out.stderr
    shards = json.loads(out.stdout)
    assert len(shards) == env.c.initial_shards
    assert sorted(int(s["descriptor"]["shardId"]) for s in shards) == list(range(1, env.c.initial_shards + 1))
    # The table through the router too, and -o json before the command still works.
    table = ctl("--endpoints", env.router.address, "nodes")
    assert table.returncode == 0, table.stderr
    assert "router" in table.stdout and "store" in table.stdout
    before = ctl("--endpoints", env.router.address, "-o", "json", "operators")
    assert before.returncode == 0, before.stderr
    assert isinstance(json.loads(before.stdout), list)


def test_ctl_status_overview(env: Env) -> None:
    endpoints = ",".join(env.c.placement.nodes[n].address for n in env.c.placement_ids)

    def healthy() -> subprocess.CompletedProcess[str] | None:
        out = ctl("--endpoints", env.router.address, "status", "-o", "json")
        return out if out.returncode == 0 else None

    out = wait_until(healthy, timeout=60, what="ctl status healthy")
    data = json.loads(out.stdout)
    assert sorted(data["nodes"]["up"]) == sorted([*env.c.store_ids, 1001])
    assert data["nodes"]["down"] == [] and data["nodes"]["suspect"] == []
    assert data["shards"] == env.c.initial_shards and data["replicas_per_shard"] == 3
    assert data["shards_without_leader"] == [] and data["under_replicated_shards"] == []
    assert data["healthy"] is True and data["routers"] == [1001]
    text = ctl("--endpoints", endpoints, "status")
    assert text.returncode == 0, text.stderr
    assert "stores: 3: up 11,12,13, suspect -, down -" in text.stdout, text.stdout
    assert "without a leader -, under-replicated -" in text.stdout and text.stdout.rstrip().endswith("healthy")


def test_ctl_status_reports_a_dead_store(tmp_path: Path) -> None:
    """A killed store is suspect within seconds, then down: status says so and exits 1."""
    c = Cluster(tmp_path, down_after_s=30.0, placement_args=["--suspect-after", "1"])
    with running(c):
        endpoints = ",".join(c.placement.nodes[n].address for n in c.placement_ids)
        c.stores.kill(13)

        def reported() -> dict[str, object] | None:
            out = ctl("--endpoints", endpoints, "status", "-o", "json")
            if out.returncode != 1:
                return None
            data: dict[str, object] = json.loads(out.stdout)
            return data if data["nodes"]["suspect"] == [13] else None  # type: ignore[index]

        data = wait_until(reported, timeout=60, what="status shows node 13 suspect")
        assert data["healthy"] is False
        assert data["under_replicated_shards"], data


# -- metrics -----------------------------------------------------------------------------------


def test_store_metrics(env: Env) -> None:
    m0 = env.c.get_map()
    leads = {nid: [s.descriptor.shard_id for s in m0.shards if s.descriptor.leader_node_id == nid] for nid in env.c.store_ids}
    nid = next(n for n, shards in leads.items() if shards)
    url = env.metrics_url(env.c.stores.nodes[nid])
    before = scrape(url)
    assert value(before, "etcd_server_has_leader") == 1
    assert value(before, "etcd_server_is_leader") == 1
    for name in (
        "etcd_disk_wal_fsync_duration_seconds_count",
        "etcd_disk_backend_commit_duration_seconds_count",
        "etcd_server_leader_changes_seen_total",
        "etcd_mvcc_db_total_size_in_bytes",
        "flotilla_transport_messages_sent_total",
    ):
        assert value(before, name) > 0, name
    committed = value(before, "etcd_server_proposals_committed_total")
    for i in range(20):
        env.put(f"metrics-{i}".encode(), b"v" * 100)

    def grown() -> dict[str, list[tuple[dict[str, str], float]]] | None:
        after = scrape(url)
        return after if value(after, "etcd_server_proposals_committed_total") > committed else None

    after = wait_until(grown, timeout=30, what="proposals_committed grows after puts")
    # Every store: its shard-labelled leader gauge matches the map; keys and writes counted.
    m = env.c.get_map()
    shard_writes = 0.0
    keys = 0.0
    for store in env.c.store_ids:
        got = scrape(env.metrics_url(env.c.stores.nodes[store]))
        for s in m.shards:
            sid = str(s.descriptor.shard_id)
            assert value(got, "flotilla_shard_leader", shard=sid) == s.descriptor.leader_node_id
            assert value(got, "flotilla_shard_is_leader", shard=sid) == int(s.descriptor.leader_node_id == store)
            assert value(got, "flotilla_shard_applied_index", shard=sid) > 0
            assert 0 <= value(got, "flotilla_shard_closed_timestamp_lag_seconds", shard=sid) < 30
            if s.descriptor.leader_node_id == store:
                shard_writes += value(got, "flotilla_shard_writes_total", shard=sid)
                keys += value(got, "flotilla_shard_keys", shard=sid)
    assert shard_writes >= 20 and keys >= 20
    assert value(after, "etcd_disk_wal_fsync_duration_seconds_count") > value(before, "etcd_disk_wal_fsync_duration_seconds_count")


def test_placement_and_router_metrics(env: Env) -> None:
    m = env.c.get_map()
    leaders = 0.0
    for nid in env.c.placement_ids:
        got = scrape(env.metrics_url(env.c.placement.nodes[nid]))
        leaders += value(got, "flotilla_placement_is_leader")
        assert value(got, "etcd_server_has_leader") == 1
        assert value(got, "flotilla_placement_nodes", kind="store", state="up") == 3
        assert value(got, "flotilla_placement_shards") == len(m.shards)
    assert leaders == 1
    env.put(b"router-metrics", b"x")
    got = scrape(env.metrics_url(env.router))
    assert value(got, "flotilla_router_shards") == len(m.shards)
    assert value(got, "flotilla_router_map_version") > 0
    assert value(got, "flotilla_router_last_revision") > 0
    assert "flotilla_router_forward_retries_total" in got or "flotilla_router_suspect_nodes" in got
    assert value(got, "flotilla_router_suspect_nodes") == 0


def test_health_and_version_on_every_metrics_listener(env: Env) -> None:
    procs = [env.router, *env.c.placement.nodes.values(), *env.c.stores.nodes.values()]
    for p in procs:
        url = env.metrics_url(p)
        with urllib.request.urlopen(f"{url}/health", timeout=10) as resp:
            assert resp.status == 200
            assert json.loads(resp.read()) == {"health": "true", "reason": ""}
        with urllib.request.urlopen(f"{url}/version", timeout=10) as resp:
            assert json.loads(resp.read())["etcdserver"].startswith("3.")


def test_peer_round_trip_time(env: Env) -> None:
    """etcd_network_peer_round_trip_time_seconds{To=<peer id in hex>}: a
    transport probes each peer it has a Raft connection to, at connect and
    every 4 s. Connections exist between each group's leader and its
    followers (both ways: appends one way, answers the other), so those
    pairs are checked: the placement group's, and each shard's."""
    pairs: set[tuple[int, int]] = set()
    lead = env.c.placement.wait_leader()
    pairs.update(p for f in env.c.placement_ids if f != lead for p in ((lead, f), (f, lead)))
    for s in env.c.get_map().shards:
        leader = s.descriptor.leader_node_id
        pairs.update(p for r in s.descriptor.replicas if r.node_id != leader for p in ((leader, r.node_id), (r.node_id, leader)))
    assert len(pairs) >= 8, pairs
    procs = {**env.c.placement.nodes, **env.c.stores.nodes}
    name = "etcd_network_peer_round_trip_time_seconds_count"

    def probed() -> dict[int, dict[str, list[tuple[dict[str, str], float]]]] | None:
        """Every process's scrape once each pair has a probe (a connection
        that came up a moment ago has its first probe in flight)."""
        got = {nid: scrape(env.metrics_url(procs[nid])) for nid in {a for a, _ in pairs}}
        have = {(nid, int(lb["To"], 16)) for nid, m in got.items() for lb, _ in m.get(name, [])}
        return got if pairs <= have else None

    scraped = wait_until(probed, timeout=30, what="a probe of every leader-follower connection")
    for nid, peer in sorted(pairs):
        got, to = scraped[nid], f"{peer:x}"
        count = value(got, "etcd_network_peer_round_trip_time_seconds_count", To=to)
        total = value(got, "etcd_network_peer_round_trip_time_seconds_sum", To=to)
        assert count >= 1, (nid, peer)
        assert 0 < total / count < 1.0, (nid, peer, total, count)  # loopback: well under a second
        buckets = sorted((float(lb["le"]), v) for lb, v in got["etcd_network_peer_round_trip_time_seconds_bucket"] if lb.get("To") == to)
        assert [v for _, v in buckets] == sorted(v for _, v in buckets) and buckets[-1] == (float("inf"), count)


def test_grpc_server_handled_total(env: Env) -> None:
    """grpc_server_handled_total on the router's client port, with
    go-grpc-prometheus's labels and grpc-go's code names."""
    url = env.metrics_url(env.router)
    put = {"grpc_type": "unary", "grpc_service": "etcdserverpb.KV", "grpc_method": "Put", "grpc_code": "OK"}
    bad = {**put, "grpc_method": "Range", "grpc_code": "InvalidArgument"}

    def count(m: dict[str, list[tuple[dict[str, str], float]]], labels: dict[str, str]) -> float:
        return sum(v for lb, v in m.get("grpc_server_handled_total", []) if lb == labels)

    before = scrape(url)
    for i in range(7):
        env.put(f"handled-{i}".encode(), b"v")
    with pytest.raises(grpc.RpcError) as err:
        env.kv.Range(epb.RangeRequest(key=b""), timeout=30)  # etcd: "key is not provided"
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    after = scrape(url)
    assert count(after, put) - count(before, put) == 7
    # An aborted call's status leaves (context.abort awaits sending it) before
    # the handler's accounting runs: the client may see the error, and its
    # scrape be served, a moment before the count.
    bad_after = wait_until(
        lambda: (n := count(scrape(url), bad) - count(before, bad)) >= 1 and n, timeout=10, what="the InvalidArgument Range counted"
    )
    assert bad_after == 1
