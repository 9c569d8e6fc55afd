"""A whole Flotilla cluster of real processes on 127.0.0.1: placement servers
(`flotilla server --placement`) and store nodes (`flotilla server --store
--join ...`), the harness of tests/integration/test_cluster.py.

Every process binds port 0 and reports its port through --ready-file. The
placement servers start first and are told each other's addresses
(Placement.SetPeers); the store nodes then start with --join naming them,
register, and host what the map placement bootstraps assigns them. Every wait
is `wait_until(predicate, timeout)`: no sleeps. The harness kills only the
pids it started.

The placement side is flotilla/placementcluster.py's harness (`call` follows
the placement leader), the store side flotilla/storecluster.py's (requests to
shard leaders); the map placement bootstraps splits the slots as the static
store bootstrap does, so the store harness's slot arithmetic holds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flotilla.placementcluster import PlacementCluster, PlacementProc
from flotilla.procs import wait_until
from flotilla.storecluster import StoreCluster
from flotillapb import placement_pb2 as ppb

__all__ = ["Cluster", "running", "wait_until"]


@dataclass
class _PlacementServers(PlacementCluster):
    """Placement servers run as `flotilla server --placement`."""

    node_env: dict[int, dict[str, str]] = field(default_factory=dict)
    """Extra environment of each node's process (fault files, clock offsets)."""

    def _command(self, n: PlacementProc) -> tuple[str, list[str]]:
        # A restart keeps its port: the stores know it.
        return "flotilla", ["server", "--placement", "--listen", f"127.0.0.1:{n.port}"]

    def _spawn(self, nid: int) -> int:
        n = self._node(nid)
        n.spawn(self._argv(n), cwd=self.tmp, env=self.node_env.get(nid))
        return nid


@dataclass
class _StoreNodes(StoreCluster):
    """Store nodes run as `flotilla server --store --join <placement>`."""

    join: str = ""

    def _role_args(self, nid: int) -> list[str]:
        return ["--join", self.join, "--seed", str(nid * 7919), *self.extra_args]

    def start(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        for nid in [self._spawn(nid) for nid in self.node_ids]:
            self._await_ready(nid)


@dataclass
class Cluster:
    tmp: Path
    placement_ids: tuple[int, ...] = (1, 2, 3)
    store_ids: tuple[int, ...] = (11, 12, 13)
    initial_shards: int = 4
    slot_count: int = 1024
    down_after_s: float = 2.0
    placement_args: list[str] = field(default_factory=list)
    store_args: list[str] = field(default_factory=list)
    faults: bool = False
    """Every process reads fault rules from faults_file(node_id) (raft/transport/faults.py)."""
    placement: _PlacementServers = field(init=False)
    stores: _StoreNodes = field(init=False)

    def __post_init__(self) -> None:
        self.placement = _PlacementServers(
            self.tmp / "placement",
            node_ids=self.placement_ids,
            extra_args=[
                "--down-after", str(self.down_after_s),
                "--bootstrap-stores", str(len(self.store_ids)),
                "--initial-shards", str(self.initial_shards),
                "--slots", str(self.slot_count),
                *self.placement_args,
            ],
        )
        self.stores = _StoreNodes(
            self.tmp / "stores",
            shards=self.initial_shards,
            slot_count=self.slot_count,
            node_ids=self.store_ids,
            extra_args=["--heartbeat-ms", "300", *self.store_args],
        )
        if self.faults:
            (self.tmp / "faults").mkdir(parents=True, exist_ok=True)
            for nid in (*self.placement_ids, *self.store_ids):
                group = self.placement if nid in self.placement_ids else self.stores
                group.node_env[nid] = {"FLOTILLA_FAULTS_FILE": str(self.faults_file(nid))}

    def faults_file(self, node_id: int) -> Path:
        """The rule file of a node's process (written by the nemesis)."""
        return self.tmp / "faults" / f"{node_id}.json"

    def start(self) -> None:
        self.placement.start()
        self.stores.join = ",".join(self.placement.nodes[n].address for n in self.placement_ids)
        self.stores.start()

    def stop(self) -> None:
        self.stores.stop()
        self.placement.stop()

    # -- queries ---------------------------------------------------------------------------
    def call(self, method: str, request: Any, *, timeout: float = 30) -> Any:
        """Placement.<method> on the placement leader (retried while unavailable)."""
        return self.placement.call(method, request, timeout=timeout)

    def get_map(self, *, linearizable: bool = True) -> ppb.ClusterMap:
        out: ppb.GetMapResponse = self.call("GetMap", ppb.GetMapRequest(linearizable=linearizable))
        return out.map

    def wait_bootstrapped(self, timeout: float = 60) -> ppb.ClusterMap:
        """The map once placement bootstrapped it and every shard's leader reported."""

        def ready() -> ppb.ClusterMap | None:
            m = self.get_map()
            if not m.cluster_id or len(m.shards) != self.initial_shards:
                return None
            return m if all(s.descriptor.leader_node_id for s in m.shards) else None

        return wait_until(ready, timeout=timeout, what="the cluster bootstrapped with every shard led")

    def node_state(self, node_id: int) -> int:
        m = self.get_map()
        return next(n.state for n in m.nodes if n.node_id == node_id)

    def logs(self) -> str:
        return self.placement.all_logs() + "\n" + "\n".join(
            f"--- store {nid} ---\n{self.stores.log_tail(nid, 60)}" for nid in self.stores.nodes
        )


@contextlib.contextmanager
def running(c: Cluster) -> Iterator[Cluster]:
    """Start c and wait until its map is bootstrapped with every shard led;
    print every process's log if that (or the body) fails; always stop it.
    A test fixture's `with running(Cluster(...)) as c: yield c`."""
    try:
        c.start()
        c.wait_bootstrapped()
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()
