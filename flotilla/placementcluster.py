"""Real placement server processes on 127.0.0.1: the harness of placement's
integration tests.

Each process binds port 0 and reports it through --ready-file; the harness
then tells every process the others' addresses (Placement.SetPeers). Every
wait is `wait_until(predicate, timeout)`: no sleeps. The harness kills only
the pids it started. `call` sends an RPC to the leader, following the
`placement-leader` hint and retrying while no leader is ready.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import grpc

from flotilla.procs import ManagedProcess, ProcessGroup, flotilla_argv, wait_until
from flotillapb import placement_pb2 as ppb
from flotillapb import placement_pb2_grpc
from flotillapb import store_pb2 as spb

__all__ = ["PlacementCluster", "PlacementProc", "eventually", "wait_until"]

_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@dataclass
class PlacementProc(ManagedProcess):
    node_id: int
    data_dir: Path
    stub: placement_pb2_grpc.PlacementStub | None = None


@dataclass
class PlacementCluster(ProcessGroup):
    tmp: Path
    node_ids: tuple[int, ...] = (1, 2, 3)
    extra_args: list[str] = field(default_factory=list)
    verbose: bool = True
    nodes: dict[int, PlacementProc] = field(default_factory=dict)

    def start(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        pending = [self._spawn(nid) for nid in self.node_ids]  # start all, then wait: they boot in parallel
        for nid in pending:
            self._await_ready(nid)
        self.connect_all()

    def _node(self, nid: int) -> PlacementProc:
        n = self.nodes.get(nid)
        if n is None:
            n = PlacementProc(nid, self.tmp / f"p{nid}", log_path=self.tmp / f"p{nid}.log", name=f"placement {nid}")
            self.nodes[nid] = n
        return n

    def _spawn(self, nid: int) -> int:
        n = self._node(nid)
        n.spawn(self._argv(n), cwd=self.tmp)
        return nid

    def _argv(self, n: PlacementProc) -> list[str]:
        module, command = self._command(n)
        return flotilla_argv(
            *command,
            "--node-id", str(n.node_id),
            "--data-dir", str(n.data_dir),
            "--placement-voters", ",".join(map(str, self.node_ids)),
            "--seed", str(n.node_id * 7919),
            "--ready-file", str(n.ready_file),
            *self.extra_args,
            module=module,
            verbose=self.verbose,
        )

    def _command(self, n: PlacementProc) -> tuple[str, list[str]]:
        """The module to run and its first arguments."""
        return "flotilla.placement_main", []

    def _await_ready(self, nid: int) -> None:
        n = self.nodes[nid]
        n.await_ready(what=f"placement {nid} ready")
        n.stub = placement_pb2_grpc.PlacementStub(n.connect())

    def connect_all(self) -> None:
        peers = [spb.NodeAddress(node_id=n.node_id, address=n.address) for n in self.nodes.values() if n.alive]
        for n in self.nodes.values():
            if n.alive:
                self.stub(n.node_id).SetPeers(ppb.SetPeersRequest(peers=peers), timeout=10)

    def restart(self, nid: int) -> None:
        self._spawn(nid)
        self._await_ready(nid)
        self.connect_all()

    # -- queries ------------------------------------------------------------------------
    def stub(self, nid: int) -> placement_pb2_grpc.PlacementStub:
        s = self.nodes[nid].stub
        assert s is not None
        return s

    def status(self, nid: int) -> ppb.StatusResponse:
        return self.stub(nid).Status(ppb.StatusRequest(), timeout=10)

    def leader(self) -> int | None:
        """A live node that leads (highest term wins), or None."""
        best: tuple[int, int] | None = None
        for nid in self.live():
            st = self.status(nid)
            if st.is_leader and (best is None or st.term > best[0]):
                best = (st.term, nid)
        return None if best is None else best[1]

    def wait_leader(self, timeout: float = 30) -> int:
        return wait_until(self.leader, timeout=timeout, what="a placement leader")

    def call(self, method: str, request: Any, *, timeout: float = 30) -> Any:
        """Call method on the leader; retry (on any live node, leader first)
        while the answer is UNAVAILABLE: no leader, not leader, not ready."""

        def attempt() -> Any:
            order = sorted(self.live(), key=lambda nid: nid != self.leader())
            last: grpc.RpcError | None = None
            for nid in order:
                try:
                    return (getattr(self.stub(nid), method)(request, timeout=10),)
                except grpc.RpcError as exc:
                    if exc.code() not in _RETRYABLE:  # type: ignore[attr-defined]
                        return (exc,)  # final: raised below, not retried
                    last = exc
            raise last or AssertionError("no live placement server")

        (out,) = wait_until(attempt, timeout=timeout, what=f"Placement.{method}")
        if isinstance(out, grpc.RpcError):
            raise out
        return out

    def call_raw(self, method: str, request: Any) -> Any:
        """Call method on the leader once, errors raised (to check error codes)."""
        nid = self.wait_leader()
        return getattr(self.stub(nid), method)(request, timeout=10)

    def get_map(self, nid: int, *, linearizable: bool = False) -> ppb.ClusterMap:
        return self.stub(nid).GetMap(ppb.GetMapRequest(linearizable=linearizable), timeout=10).map

    def all_logs(self) -> str:
        return "\n".join(f"--- placement {nid} ---\n{self.log_tail(nid, 80)}" for nid in self.nodes)


def eventually(pred: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    return wait_until(pred, timeout=timeout, what=what)
