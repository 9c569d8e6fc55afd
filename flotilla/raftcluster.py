"""Real `flotilla raftnode` processes on 127.0.0.1: the harness of the runtime's
integration tests and of `flotilla bench-raft`.

Each process binds port 0 and reports it through --ready-file; the harness
then tells every process the others' addresses (RaftAdmin.SetPeers). Every
wait is `wait_until(predicate, timeout)`: no sleeps. The harness kills only
the pids it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

import grpc

from flotillapb import raftadmin_pb2 as pb
from flotillapb import raftadmin_pb2_grpc

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]


def wait_until(predicate: Callable[[], T], *, timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll predicate until it returns a truthy value or the deadline passes;
    on timeout fail with the last value (or exception) observed."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except Exception as exc:  # noqa: BLE001 - reported on timeout
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last observed: {last!r}")
        time.sleep(interval)  # sleep-ok: polling interval of a deadline-bounded wait, not synchronization


@dataclass
class RaftNodeProc:
    node_id: int
    data_dir: Path
    log_path: Path
    args: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    channel: grpc.Channel | None = None
    stub: raftadmin_pb2_grpc.RaftAdminStub | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class RaftCluster:
    tmp: Path
    groups: int
    node_ids: tuple[int, ...] = (1, 2, 3)
    extra_args: list[str] = field(default_factory=list)
    verbose: bool = True
    nodes: dict[int, RaftNodeProc] = field(default_factory=dict)

    def start(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        for nid in self.node_ids:
            self.start_node(nid)
        self.connect_all()

    def start_node(self, nid: int, *, env: dict[str, str] | None = None) -> RaftNodeProc:
        n = self.nodes.get(nid)
        if n is None:
            data_dir = self.tmp / f"n{nid}"
            n = RaftNodeProc(
                node_id=nid,
                data_dir=data_dir,
                log_path=self.tmp / f"n{nid}.log",
                args=[
                    "--node-id", str(nid),
                    "--data-dir", str(data_dir),
                    "--groups", str(self.groups),
                    "--voters", ",".join(map(str, self.node_ids)),
                    "--seed", str(nid * 7919),
                    *self.extra_args,
                ],
                env={},
            )
            self.nodes[nid] = n
        n.env = dict(env or {})
        ready = self.tmp / f"n{nid}.ready"
        ready.unlink(missing_ok=True)
        full_env = {**os.environ, **n.env}
        full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        with open(n.log_path, "ab") as logf:
            n.proc = subprocess.Popen(
                [sys.executable, "-m", "flotilla", *(["-v"] if self.verbose else []), "raftnode", *n.args, "--ready-file", str(ready)],
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=str(self.tmp),
            )
        proc = n.proc

        def is_ready() -> dict[str, int] | None:
            if proc.poll() is not None:
                raise AssertionError(f"node {nid} exited with {proc.returncode}:\n{self.log_tail(nid)}")
            return json.loads(ready.read_text()) if ready.exists() else None

        info = wait_until(is_ready, timeout=60, what=f"node {nid} ready")
        n.port = int(info["port"])
        if n.channel is not None:
            n.channel.close()
        n.channel = grpc.insecure_channel(n.address)
        n.stub = raftadmin_pb2_grpc.RaftAdminStub(n.channel)
        return n

    def connect_all(self) -> None:
        peers = [pb.Peer(node_id=n.node_id, address=n.address) for n in self.nodes.values() if n.alive]
        for n in self.nodes.values():
            if n.alive:
                assert n.stub is not None
                n.stub.SetPeers(pb.SetPeersRequest(peers=peers), timeout=10)

    def kill(self, nid: int, sig: int = signal.SIGKILL) -> None:
        n = self.nodes[nid]
        assert n.proc is not None
        n.proc.send_signal(sig)
        n.proc.wait(timeout=30)

    def restart(self, nid: int, *, env: dict[str, str] | None = None) -> None:
        self.start_node(nid, env=env)
        self.connect_all()

    def stub(self, nid: int) -> raftadmin_pb2_grpc.RaftAdminStub:
        s = self.nodes[nid].stub
        assert s is not None
        return s

    def status(self, nid: int, group_ids: list[int] | None = None) -> pb.StatusResponse:
        return self.stub(nid).Status(pb.StatusRequest(group_ids=group_ids or []), timeout=10)

    def live(self) -> list[int]:
        return [nid for nid, n in self.nodes.items() if n.alive]

    def leaders(self) -> dict[int, int]:
        """group id -> node id of a live node that believes it leads it (highest term wins)."""
        best: dict[int, tuple[int, int]] = {}
        for nid in self.live():
            for g in self.status(nid).groups:
                if g.is_leader and (g.group_id not in best or g.term > best[g.group_id][0]):
                    best[g.group_id] = (g.term, nid)
        return {gid: nid for gid, (_, nid) in best.items()}

    def all_groups_led(self) -> dict[int, int] | None:
        leaders = self.leaders()
        return leaders if len(leaders) == self.groups else None

    def propose(self, gid: int, data: bytes, *, timeout: float = 20) -> int:
        """Propose through whichever node leads gid, following hints and
        retrying only when the proposal was certainly not appended."""

        def attempt() -> int | None:
            leaders = self.leaders()
            nid = leaders.get(gid)
            if nid is None:
                return None
            r = self.stub(nid).Propose(pb.ProposeRequest(group_id=gid, data=data, timeout_ms=5000), timeout=10)
            return None if r.not_leader else r.index

        return wait_until(attempt, timeout=timeout, what=f"proposal to group {gid}")

    def converged(self, gids: list[int] | None = None) -> bool:
        """Every live node applied the same entries (equal digests and counts) for gids."""
        per_node = {nid: {g.group_id: (g.applied_count, g.digest, g.applied) for g in self.status(nid, gids).groups} for nid in self.live()}
        first = next(iter(per_node.values()))
        return all(
            {gid: v[:2] for gid, v in states.items()} == {gid: v[:2] for gid, v in first.items()} for states in per_node.values()
        )

    def log_tail(self, nid: int, lines: int = 40) -> str:
        p = self.nodes[nid].log_path
        return "\n".join(p.read_text(errors="replace").splitlines()[-lines:]) if p.exists() else ""

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
