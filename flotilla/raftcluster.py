"""Real `flotilla raftnode` processes on 127.0.0.1: the harness of the runtime's
integration tests and of `flotilla bench-raft`.

Each process binds port 0 and reports it through --ready-file; the harness
then tells every process the others' addresses (RaftAdmin.SetPeers). Every
wait is `wait_until(predicate, timeout)`: no sleeps. The harness kills only
the pids it started.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import grpc

from flotilla.procs import REPO, ManagedProcess, ProcessGroup, flotilla_argv, wait_until
from flotillapb import raftadmin_pb2 as pb
from flotillapb import raftadmin_pb2_grpc

__all__ = ["REPO", "RaftCluster", "RaftNodeProc", "wait_until"]


@dataclass
class RaftNodeProc(ManagedProcess):
    node_id: int
    data_dir: Path
    args: list[str]
    env: dict[str, str]
    stub: raftadmin_pb2_grpc.RaftAdminStub | None = None


@dataclass
class RaftCluster(ProcessGroup):
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
                name=f"node {nid}",
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
        n.spawn(flotilla_argv("raftnode", *n.args, "--ready-file", str(n.ready_file), verbose=self.verbose), cwd=self.tmp, env=n.env)
        n.await_ready(what=f"node {nid} ready")
        n.stub = raftadmin_pb2_grpc.RaftAdminStub(n.connect())
        return n

    def connect_all(self) -> None:
        peers = [pb.Peer(node_id=n.node_id, address=n.address) for n in self.nodes.values() if n.alive]
        for n in self.nodes.values():
            if n.alive:
                assert n.stub is not None
                n.stub.SetPeers(pb.SetPeersRequest(peers=peers), timeout=10)

    def restart(self, nid: int, *, env: dict[str, str] | None = None) -> None:
        self.start_node(nid, env=env)
        self.connect_all()

    def stub(self, nid: int) -> raftadmin_pb2_grpc.RaftAdminStub:
        s = self.nodes[nid].stub
        assert s is not None
        return s

    def status(self, nid: int, group_ids: list[int] | None = None) -> pb.StatusResponse:
        return self.stub(nid).Status(pb.StatusRequest(group_ids=group_ids or []), timeout=10)

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
