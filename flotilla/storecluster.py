"""Real `flotilla server --store` processes on 127.0.0.1: the harness of the
store node's integration tests (its processes are flotilla/procs.py's
ManagedProcess, as flotilla/raftcluster.py's are).

Each process binds port 0 and reports it through --ready-file; the harness
then tells every process everyone's address (StoreAdmin.SetPeers). No sleeps:
every wait is `wait_until(predicate, timeout)`. It kills only the pids it
started.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from flotilla.procs import ManagedProcess, ProcessGroup, flotilla_argv, wait_until
from flotillapb import store_pb2 as spb
from flotillapb import store_pb2_grpc
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from shard import slots

__all__ = ["StoreCluster", "StoreNodeProc", "wait_until"]


@dataclass
class StoreNodeProc(ManagedProcess):
    node_id: int
    data_dir: Path
    args: list[str]
    store: store_pb2_grpc.StoreStub | None = None
    admin: store_pb2_grpc.StoreAdminStub | None = None


@dataclass
class StoreCluster(ProcessGroup):
    tmp: Path
    shards: int
    slot_count: int = 1024
    node_ids: tuple[int, ...] = (1, 2, 3)
    extra_args: list[str] = field(default_factory=list)
    nodes: dict[int, StoreNodeProc] = field(default_factory=dict)
    router_id: int = 7
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    splits: dict[int, tuple[tuple[tuple[int, int], ...], tuple[int, int]]] = field(default_factory=dict)
    """The harness's shard map after splits: shard id -> (slot ranges, epoch);
    shards not named here have their bootstrap slots and epoch (1, 1)."""
    merged: set[int] = field(default_factory=set)
    """Shards merged into others (gone from the map)."""
    node_env: dict[int, dict[str, str]] = field(default_factory=dict)
    """Extra environment of each node's process (fault files, clock offsets, crash points)."""

    # -- processes ------------------------------------------------------------------------
    def start(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        procs = [self._spawn(nid) for nid in self.node_ids]
        for nid in procs:
            self._await_ready(nid)
        self.connect_all()

    def _spawn(self, nid: int) -> int:
        n = self.nodes.get(nid)
        if n is None:
            data_dir = self.tmp / f"n{nid}"
            n = StoreNodeProc(
                node_id=nid,
                data_dir=data_dir,
                log_path=self.tmp / f"n{nid}.log",
                name=f"store node {nid}",
                args=["--store", "--node-id", str(nid), "--data-dir", str(data_dir), "--listen", "127.0.0.1:0", *self._role_args(nid)],
            )
            self.nodes[nid] = n
        n.spawn(flotilla_argv("server", *n.args, "--ready-file", str(n.ready_file)), cwd=self.tmp, env=self.node_env.get(nid))
        return nid

    def _role_args(self, nid: int) -> list[str]:
        """The arguments of a new node after --store, --node-id, --data-dir, --listen."""
        return [
            "--shards", str(self.shards),
            "--slots", str(self.slot_count),
            "--voters", ",".join(map(str, self.node_ids)),
            "--seed", str(nid * 7919),
            *self.extra_args,
        ]

    def _await_ready(self, nid: int) -> None:
        n = self.nodes[nid]
        n.await_ready(what=f"store node {nid} ready")
        channel = n.connect()
        n.store = store_pb2_grpc.StoreStub(channel)
        n.admin = store_pb2_grpc.StoreAdminStub(channel)

    def connect_all(self) -> None:
        peers = [spb.NodeAddress(node_id=n.node_id, address=n.address) for n in self.nodes.values() if n.alive]
        for n in self.nodes.values():
            if n.alive:
                assert n.admin is not None
                n.admin.SetPeers(spb.SetPeersRequest(peers=peers), timeout=10)

    def restart(self, nid: int) -> None:
        self._spawn(nid)
        self._await_ready(nid)
        self.connect_all()

    # -- stubs and status ------------------------------------------------------------------
    def store(self, nid: int) -> store_pb2_grpc.StoreStub:
        s = self.nodes[nid].store
        assert s is not None
        return s

    def status(self, nid: int) -> spb.StoreStatusResponse:
        a = self.nodes[nid].admin
        assert a is not None
        return a.Status(spb.StoreStatusRequest(), timeout=10)

    def shard_status(self, nid: int, shard_id: int) -> spb.ShardStatus:
        return next(s for s in self.status(nid).shards if s.descriptor.shard_id == shard_id)

    def leaders(self) -> dict[int, int]:
        """shard id -> live node that believes it leads it (highest term wins)."""
        best: dict[int, tuple[int, int]] = {}
        for nid in self.live():
            for s in self.status(nid).shards:
                sid = s.descriptor.shard_id
                if s.is_leader and (sid not in best or s.term > best[sid][0]):
                    best[sid] = (s.term, nid)
        return {sid: nid for sid, (_, nid) in best.items()}

    def all_shards_led(self) -> dict[int, int] | None:
        leaders = self.leaders()
        return leaders if all(s in leaders for s in self.shard_ids()) else None

    def shard_ids(self) -> list[int]:
        return sorted({*range(1, self.shards + 1), *self.splits} - self.merged)

    def epoch(self, shard_id: int) -> tuple[int, int]:
        return self.splits[shard_id][1] if shard_id in self.splits else (1, 1)

    def split(
        self, shard_id: int, new_shard_id: int, split_slot: int, *, leader: int | None = None, timeout: float = 30
    ) -> spb.SplitShardResponse:
        """SplitShard on the shard's leader (found by asking every live node,
        or the given one); updates the harness's map from the answer."""
        req = spb.SplitShardRequest(shard_id=shard_id, new_shard_id=new_shard_id, split_slot=split_slot)

        def attempt() -> spb.SplitShardResponse | None:
            nid = leader if leader is not None else self.leaders().get(shard_id)
            if nid is None:
                return None
            a = self.nodes[nid].admin
            assert a is not None
            r = a.SplitShard(req, timeout=15)
            if r.header.HasField("error"):
                if r.header.error.HasField("routing") and r.header.error.routing.WhichOneof("error") == "not_leader":
                    return None
                raise AssertionError(f"split failed: {r.header.error}")
            return r

        r = wait_until(attempt, timeout=timeout, what=f"split of shard {shard_id}")
        for d in (r.left, r.right):
            self.splits[d.shard_id] = (
                tuple((x.start, x.end) for x in d.slots),
                (d.epoch.conf_version, d.epoch.slot_version),
            )
        return r

    # -- requests --------------------------------------------------------------------------
    def slot_ranges(self, shard_id: int) -> tuple[tuple[int, int], ...]:
        if shard_id in self.splits:
            return self.splits[shard_id][0]
        i = shard_id - 1
        return ((i * self.slot_count // self.shards, (i + 1) * self.slot_count // self.shards),)

    def key_in(self, shard_id: int, prefix: str = "k") -> bytes:
        """The first key `<prefix><n>` whose slot shard_id owns."""
        ranges = self.slot_ranges(shard_id)
        for n in itertools.count():
            key = f"{prefix}{n}".encode()
            if slots.contains(ranges, slots.slot_of(key, self.slot_count)):
                return key
        raise AssertionError("unreachable")

    def shard_of(self, key: bytes) -> int:
        slot = slots.slot_of(key, self.slot_count)
        return next(s for s in self.shard_ids() if slots.contains(self.slot_ranges(s), slot))

    def header(
        self, shard_id: int, *, seq: int | None = None, write: bool = False, epoch: tuple[int, int] | None = None
    ) -> spb.RequestHeader:
        if epoch is None:
            epoch = self.epoch(shard_id)
        h = spb.RequestHeader(shard_id=shard_id, epoch=spb.ShardEpoch(conf_version=epoch[0], slot_version=epoch[1]))
        if write:
            h.router_id = self.router_id
            h.seq = seq if seq is not None else next(self._seq)
        return h

    def put(self, key: bytes, value: bytes, *, seq: int | None = None, timeout: float = 30) -> spb.ShardPutResponse:
        """Put through the shard's leader, following NotLeader hints; a retry
        keeps its seq, so it never applies twice."""
        sid = self.shard_of(key)
        header = self.header(sid, seq=seq, write=True)
        req = spb.ShardPutRequest(header=header, request=epb.PutRequest(key=key, value=value))

        def attempt() -> spb.ShardPutResponse | None:
            nid = self.leaders().get(sid)
            if nid is None:
                return None
            r = self.store(nid).Put(req, timeout=10)
            return None if r.header.HasField("error") else r

        return wait_until(attempt, timeout=timeout, what=f"put {key!r} to shard {sid}")

    def get(
        self,
        nid: int,
        key: bytes,
        *,
        consistency: int = spb.READ_SERIALIZABLE,
        revision: int = 0,
        max_staleness_ms: int = 0,
    ) -> spb.ShardRangeResponse:
        sid = self.shard_of(key)
        return self.store(nid).Range(
            spb.ShardRangeRequest(
                header=self.header(sid),
                consistency=consistency,
                max_staleness_ms=max_staleness_ms,
                request=epb.RangeRequest(key=key, revision=revision),
            ),
            timeout=10,
        )
