"""Real placement server processes on 127.0.0.1: the harness of placement's
integration tests.

Each process binds port 0 and reports it through --ready-file; the harness
then tells every process the others' addresses (Placement.SetPeers). Every
wait is `wait_until(predicate, timeout)`: no sleeps. The harness kills only
the pids it started. `call` sends an RPC to the leader, following the
`placement-leader` hint and retrying while no leader is ready.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import grpc

from flotilla.raftcluster import REPO, wait_until
from flotillapb import placement_pb2 as ppb
from flotillapb import placement_pb2_grpc
from flotillapb import store_pb2 as spb

_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@dataclass
class PlacementProc:
    node_id: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    channel: grpc.Channel | None = None
    stub: placement_pb2_grpc.PlacementStub | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class PlacementCluster:
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

    def _spawn(self, nid: int) -> int:
        n = self.nodes.get(nid)
        if n is None:
            n = PlacementProc(nid, self.tmp / f"p{nid}", self.tmp / f"p{nid}.log")
            self.nodes[nid] = n
        ready = self.tmp / f"p{nid}.ready"
        ready.unlink(missing_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        args = [
            sys.executable, "-m", "flotilla.placement_main", *(["-v"] if self.verbose else []),
            "--node-id", str(nid),
            "--data-dir", str(n.data_dir),
            "--placement-voters", ",".join(map(str, self.node_ids)),
            "--seed", str(nid * 7919),
            "--ready-file", str(ready),
            *self.extra_args,
        ]
        with open(n.log_path, "ab") as logf:
            n.proc = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=str(self.tmp))
        return nid

    def _await_ready(self, nid: int) -> None:
        n = self.nodes[nid]
        proc = n.proc
        assert proc is not None
        ready = self.tmp / f"p{nid}.ready"

        def is_ready() -> dict[str, int] | None:
            if proc.poll() is not None:
                raise AssertionError(f"placement {nid} exited with {proc.returncode}:\n{self.log_tail(nid)}")
            return json.loads(ready.read_text()) if ready.exists() else None

        info = wait_until(is_ready, timeout=60, what=f"placement {nid} ready")
        n.port = int(info["port"])
        if n.channel is not None:
            n.channel.close()
        n.channel = grpc.insecure_channel(n.address)
        n.stub = placement_pb2_grpc.PlacementStub(n.channel)

    def connect_all(self) -> None:
        peers = [spb.NodeAddress(node_id=n.node_id, address=n.address) for n in self.nodes.values() if n.alive]
        for n in self.nodes.values():
            if n.alive:
                self.stub(n.node_id).SetPeers(ppb.SetPeersRequest(peers=peers), timeout=10)

    def restart(self, nid: int) -> None:
        self._spawn(nid)
        self._await_ready(nid)
        self.connect_all()

    def kill(self, nid: int, sig: int = signal.SIGKILL) -> None:
        n = self.nodes[nid]
        assert n.proc is not None
        n.proc.send_signal(sig)
        n.proc.wait(timeout=30)

    def stop(self) -> None:
        for n in self.nodes.values():
            if n.channel is not None:
                n.channel.close()
            if n.proc is not None and n.proc.poll() is None:
                n.proc.send_signal(signal.SIGTERM)
        for n in self.nodes.values():
            if n.proc is not None and n.proc.poll() is None:
                try:
                    n.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    n.proc.kill()
                    n.proc.wait(timeout=15)

    # -- queries ------------------------------------------------------------------------
    def stub(self, nid: int) -> placement_pb2_grpc.PlacementStub:
        s = self.nodes[nid].stub
        assert s is not None
        return s

    def live(self) -> list[int]:
        return [nid for nid, n in self.nodes.items() if n.alive]

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

    def log_tail(self, nid: int, lines: int = 40) -> str:
        p = self.nodes[nid].log_path
        return "\n".join(p.read_text(errors="replace").splitlines()[-lines:]) if p.exists() else ""

    def all_logs(self) -> str:
        return "\n".join(f"--- placement {nid} ---\n{self.log_tail(nid, 80)}" for nid in self.nodes)


def eventually(pred: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    return wait_until(pred, timeout=timeout, what=what)
