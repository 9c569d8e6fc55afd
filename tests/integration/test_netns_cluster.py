"""A cluster across hosts (issue #20): placement, four stores, a router and a
client each on its own "machine", a Linux network namespace with its own
address on a bridge (tests/integration/netns.py), talking only over that
network. Every process listens on its host's address (`--listen
10.77.N.x:7000`) and advertises that address: nothing reaches 127.0.0.1.

The client (tests/integration/netns_client.py, on its own host) puts, reads
linearizably and reads with a staleness bound (`max-staleness-ms`) through
the router while the test, from the root namespace (the operator's host,
with an address on the bridge), has `flotilla ctl` on the client's host
split a shard and move a replica, then cuts one store's host off (its link
down) and heals it. Checked with the campaign's checkers over the client's
recorded history: linearizable per key (no stale read), every acknowledged
write in the final reads (no lost write), no value applied twice, bounded-
staleness reads within their bound; and every replica of every shard has
the same MVCC hash (`flotilla ctl hashkv`) once the load stops.

The same scenario again with `tc netem` delay and loss on every host, the
cut being 100% loss: skipped, saying why, on a kernel without sch_netem.

Behind `slow` (about two minutes); skips where namespaces cannot be made
(not root, no `ip`). Every namespace, veth and the bridge are deleted and
every process stopped, also on failure.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from flotilla.campaign.checkers import check_acked_writes, check_double_apply, check_linearizable, check_staleness
from flotilla.campaign.history import History, OpKind, Outcome
from flotilla.procs import REPO, ManagedProcess, flotilla_argv, stop_all, wait_until
from flotillapb import placement_pb2 as ppb
from flotillapb import placement_pb2_grpc
from tests.integration.netns import Lab, LabUnavailable, lab_unavailable_reason

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PORT = 7000  # every host is a machine of its own: the same port on each
ROUTER_PORT = 2379
STORES = ("s1", "s2", "s3", "s4")
NETEM_BASE = "delay 10ms 3ms loss 1%"


def store_id(host: str) -> int:
    return 10 + int(host[1:])


@dataclass
class NetCluster:
    lab: Lab
    tmp: Path
    procs: dict[str, ManagedProcess] = field(default_factory=dict)

    def addr(self, host: str, port: int = PORT) -> str:
        return f"{self.lab.hosts[host].address}:{port}"

    @property
    def placement(self) -> str:
        return self.addr("p1")

    def host_of(self, node_id: int) -> str:
        return f"s{node_id - 10}"

    def spawn(self, host: str, args: list[str]) -> ManagedProcess:
        p = ManagedProcess(log_path=self.tmp / f"{host}.log", name=host)
        self.procs[host] = p
        argv = self.lab.argv(host, flotilla_argv(*args, "--ready-file", str(p.ready_file)))
        p.spawn(argv, cwd=REPO)
        return p

    def start(self) -> None:
        for h in ("p1", "r1", "c1", *STORES):
            self.lab.add_host(h)
        self.spawn("p1", [
            "server", "--placement", "--node-id", "1", "--data-dir", str(self.tmp / "p1"), "--listen", self.placement,
            "--peers", f"1={self.placement}", "--bootstrap-stores", str(len(STORES)), "--initial-shards", "2",
            "--replicas", "3", "--down-after", "30",
        ]).await_ready(timeout=60)
        for h in STORES:
            self.spawn(h, [
                "server", "--store", "--node-id", str(store_id(h)), "--data-dir", str(self.tmp / h), "--listen", self.addr(h),
                "--join", self.placement, "--heartbeat-ms", "300", "--seed", str(store_id(h) * 7919),
            ])
        for h in STORES:
            self.procs[h].await_ready(timeout=60)
        self.spawn("r1", ["server", "--router", "--join", self.placement, "--router-listen", self.addr("r1", ROUTER_PORT)])
        self.procs["r1"].await_ready(timeout=60)
        self.wait_map(lambda m: m.cluster_id and len(m.shards) == 2 and all(s.descriptor.leader_node_id for s in m.shards), "bootstrapped, every shard led")

    def stop(self) -> None:
        stop_all(self.procs.values())

    def logs(self) -> str:
        return "\n".join(f"--- {h} ---\n{p.log_tail(40)}" for h, p in self.procs.items())

    # -- the operator's view (from the root namespace, over the bridge) ----------------------
    def get_map(self) -> ppb.ClusterMap:
        with grpc.insecure_channel(self.placement) as ch:
            resp = placement_pb2_grpc.PlacementStub(ch).GetMap(ppb.GetMapRequest(linearizable=True), timeout=5)
        return resp.map

    def wait_map(self, pred: Callable[[ppb.ClusterMap], Any], what: str, timeout: float = 90) -> ppb.ClusterMap:
        def check() -> ppb.ClusterMap | None:
            for p in self.procs.values():
                if p.proc is not None and p.proc.poll() is not None and p.name != "c1":
                    raise AssertionError(f"{p.name} exited {p.proc.returncode}:\n{p.log_tail()}")
            m = self.get_map()
            return m if pred(m) else None

        return wait_until(check, timeout=timeout, what=what, interval=0.3)

    def operators(self) -> list[ppb.OperatorInfo]:
        with grpc.insecure_channel(self.placement) as ch:
            return list(placement_pb2_grpc.PlacementStub(ch).ListOperators(ppb.ListOperatorsRequest(), timeout=5).operators)

    def busy_shards(self) -> set[int]:
        """Shards an operator runs on (the scheduler's own, e.g. a balance move)."""
        return {o.shard_id for o in self.operators() if o.state == "running"}

    def wait_operator(self, op_id: int, what: str, timeout: float = 90) -> None:
        """Until operator op_id succeeded (fails at once if it ended otherwise)."""

        def done() -> bool:
            op = next((o for o in self.operators() if o.id == op_id), None)
            assert op is None or op.state in ("running", "success"), f"operator {op_id} ended {op.state}: {op}"
            return op is not None and op.state == "success"

        wait_until(done, timeout=timeout, what=what, interval=0.3)

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`flotilla ctl --endpoints <placement> -o json ARGS` run on the client's host."""
        argv = self.lab.argv("c1", flotilla_argv("ctl", "--endpoints", self.placement, "-o", "json", *args, verbose=False))
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetCluster]:
    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(f"no network namespaces: {reason}")
    lab = Lab()
    c = NetCluster(lab, tmp_path_factory.mktemp("netns"))
    try:
        try:
            lab.open()
            c.start()
        except LabUnavailable as exc:
            pytest.skip(f"cannot make network namespaces here: {exc}")
        except BaseException:
            print(c.logs())
            raise
        yield c
    finally:
        c.stop()
        left = lab.close()
        assert not left, f"left behind: {left}"


# -- the client -------------------------------------------------------------------------------


@dataclass
class ClientRun:
    c: NetCluster
    name: str
    proc: ManagedProcess = field(init=False)

    def __post_init__(self) -> None:
        d = self.c.tmp / self.name
        d.mkdir()
        self.status_path, self.stop_path, self.out_path = d / "status.json", d / "stop", d / "history.json"
        self.proc = ManagedProcess(log_path=d / "client.log", name=f"client {self.name}")
        argv = self.c.lab.argv("c1", [
            sys.executable, "-m", "tests.integration.netns_client",
            "--endpoint", self.c.addr("r1", ROUTER_PORT), "--prefix", f"{self.name}/",
            "--status", str(self.status_path), "--stop-file", str(self.stop_path), "--out", str(self.out_path),
        ])
        self.proc.spawn(argv, cwd=REPO)

    def status(self) -> dict[str, Any]:
        if self.proc.proc is not None and self.proc.proc.poll() is not None and not self.out_path.exists():
            raise AssertionError(f"the client exited {self.proc.proc.returncode}:\n{self.proc.log_tail()}")
        return json.loads(self.status_path.read_text()) if self.status_path.exists() else {"acked_puts": 0}

    def acked(self) -> int:
        return int(self.status()["acked_puts"])

    def wait_acked(self, more: int, what: str, timeout: float = 90) -> None:
        want = self.acked() + more
        wait_until(lambda: self.acked() >= want, timeout=timeout, what=f"{more} more acknowledged puts {what} (status {self.status()})", interval=0.2)

    def finish(self) -> History:
        self.stop_path.write_text("stop")
        assert self.proc.proc is not None
        self.proc.proc.wait(timeout=120)
        assert self.proc.proc.returncode == 0, f"client exited {self.proc.proc.returncode}:\n{self.proc.log_tail()}"
        st = self.status()
        assert st["done"] and not st["final_missing"], f"keys without a final read: {st}"
        return History.load(self.out_path.read_text())


def check_history(h: History) -> dict[str, int]:
    violations = [*check_linearizable(h), *check_acked_writes(h), *check_double_apply(h), *check_staleness(h)]
    assert not violations, "\n".join(f"{v.kind} {v.key!r}: {v.detail}" for v in violations[:20])
    count = {k.value: sum(1 for o in h.ops if o.kind is k and o.outcome is Outcome.OK) for k in (OpKind.PUT, OpKind.GET, OpKind.STALE_GET)}
    count["unknown"] = sum(1 for o in h.ops if o.outcome is Outcome.UNKNOWN)
    count["final_reads"] = len(h.final_reads)
    assert count["put"] >= 100 and count["get"] >= 50 and count["stale_get"] >= 50, count
    return count


def replicas_agree(c: NetCluster) -> dict[str, Any] | None:
    """`flotilla ctl hashkv`: every replica of every shard answered with one hash (None: not yet)."""
    out = c.ctl("hashkv")
    if not out.stdout.strip().startswith("{"):
        return None
    data = json.loads(out.stdout)
    if data["mismatched_shards"] or any("error" in r for r in data["replicas"]):
        return None
    return data


# -- the scenario ---------------------------------------------------------------------------------


def scenario(c: NetCluster, name: str, cut: Callable[[str], None], heal: Callable[[str], None]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    run = ClientRun(c, name)
    try:
        run.wait_acked(40, "at the start")

        # A split, by `flotilla ctl split` on the client's host.
        m = c.get_map()
        n = len(m.shards)
        busy = c.busy_shards()
        sid = max((s for s in m.shards if s.descriptor.shard_id not in busy), key=lambda s: sum(r.end - r.start for r in s.descriptor.slots)).descriptor.shard_id
        t0 = time.monotonic()
        out = c.ctl("split", str(sid))
        assert out.returncode == 0, out.stderr
        c.wait_operator(int(json.loads(out.stdout)["id"]), f"shard {sid} split")
        c.wait_map(lambda m: len(m.shards) == n + 1 and all(s.descriptor.leader_node_id for s in m.shards), f"shard {sid} split")
        figures["split_s"] = round(time.monotonic() - t0, 2)
        run.wait_acked(30, "after the split")

        # A replica move, by `flotilla ctl move`: a follower's replica to the store without one.
        m = c.get_map()
        ids = {store_id(h) for h in STORES}
        d = next(s.descriptor for s in m.shards if len(s.descriptor.replicas) == 3 and s.descriptor.shard_id not in c.busy_shards())
        have = {r.node_id for r in d.replicas}
        frm = min(r.node_id for r in d.replicas if r.node_id != d.leader_node_id)
        to = min(ids - have)
        t0 = time.monotonic()
        out = c.ctl("move", str(d.shard_id), str(frm), str(to))
        assert out.returncode == 0, out.stderr

        op_id = int(json.loads(out.stdout)["id"])
        c.wait_operator(op_id, f"shard {d.shard_id}'s replica moved from node {frm} to node {to}")
        figures["move_s"] = round(time.monotonic() - t0, 2)
        figures["moved"] = f"shard {d.shard_id}: node {frm} -> node {to}"
        run.wait_acked(30, "after the move")

        # A store's host cut off, then healed: the store leading the most shards.
        m = c.get_map()
        leads = {nid: sum(s.descriptor.leader_node_id == nid for s in m.shards) for nid in ids}
        victim = max(sorted(ids), key=lambda nid: leads[nid])
        host = c.host_of(victim)
        figures["cut"] = f"node {victim} ({c.lab.hosts[host].address}), leading {leads[victim]} shard(s)"
        t0 = time.monotonic()
        cut(host)
        try:
            c.wait_map(lambda m: all(s.descriptor.leader_node_id not in (0, victim) for s in m.shards), f"no shard led by the cut node {victim}")
            figures["leaders_moved_s"] = round(time.monotonic() - t0, 2)
            run.wait_acked(120, f"while node {victim} is cut off")
        finally:
            heal(host)
        figures["cut_s"] = round(time.monotonic() - t0, 2)
        run.wait_acked(40, f"after node {victim} is back")
    except BaseException:
        print(c.logs())
        print(f"--- client ---\n{run.proc.log_tail()}")
        raise
    finally:
        if run.proc.alive:
            run.stop_path.write_text("stop")
    h = run.finish()
    figures.update(check_history(h))
    figures["errors"] = run.status()["errors"]
    agree = wait_until(lambda: replicas_agree(c), timeout=90, what="every replica of every shard has the same hash (ctl hashkv)", interval=1.0)
    figures["replicas_hashed"] = len(agree["replicas"])
    m = c.get_map()
    figures["shards"] = len(m.shards)
    print(f"netns scenario {name}: {figures}")
    return figures


def test_cluster_across_namespaces(net: NetCluster) -> None:
    for h in net.lab.hosts.values():
        assert not h.address.startswith("127."), h
    m = net.get_map()
    assert {n.address for n in m.nodes if n.kind == ppb.STORE} == {net.addr(h) for h in STORES}, m.nodes
    scenario(net, "plain", net.lab.cut, net.lab.heal)


def test_cluster_across_namespaces_under_netem(net: NetCluster) -> None:
    why = net.lab.netem_available()
    if why:
        pytest.skip(f"the netem part ({NETEM_BASE} on every link, a cut by 100% loss): {why}")
    try:
        for h in net.lab.hosts:
            net.lab.netem(h, NETEM_BASE)
        scenario(net, "netem", lambda h: net.lab.netem(h, "loss 100%"), lambda h: net.lab.netem(h, NETEM_BASE))
    finally:
        for h in net.lab.hosts:
            net.lab.netem_clear(h)

