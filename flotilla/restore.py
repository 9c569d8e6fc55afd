"""`flotilla snapshot restore`: a new playground data directory holding the
keys of a backup (a Flotilla backup or an etcd 3.4/3.5 snapshot file).

How the directory is built, in a work directory next to the target (renamed
onto it only when everything succeeded, removed otherwise, so a failed
restore leaves nothing behind):

1. `flotilla playground --data-dir WORK --client-port 0` starts a new, empty
   cluster of the shape asked for; once it serves, every replica the map
   assigns is waited for until it hosts its shard and has applied what its
   leader committed.
2. The leases are granted through placement with their ids (the TTL: what
   was left when the backup was taken if it says, else the granted TTL: etcd's
   restore rule) and every key is attached to its lease (placement lists a
   lease's keys; a key naming a lease the file does not hold loses it, as
   etcd's restore fails to attach it).
3. The playground is stopped, and each store node's RocksDB gets the keys of
   the shards it hosts, written as the shard's apply step writes them
   (shard/keys.py: the MVCC record of each key at its own mod revision with
   its create revision, version, lease and value; the revision index entry;
   the shard's key count and size; its revision raised to at least R and its
   compact revision set to R). Every replica of a shard gets the same records
   in the same place of its applied state, so the replicas stay equal (as
   HashKV compares them); replicas created later copy them in snapshots.

Revisions. Flotilla's are HLC values below 2^53 (DESIGN.md, "Revisions and
time"); any such integer reads as one, and the restored cluster's clocks are
far above them. So revisions are kept as they are, a Flotilla backup's and
an etcd snapshot's alike (etcd's small integers read as moments of
2020-01-01): create/mod revision order, version and values are exactly the
file's, and new writes get revisions above all of them. R, the file's
revision, becomes the compact revision: the history before it is not in the
file, and reads below it answer "required revision has been compacted", as
the etcd restored from the same file does. A revision at or above 2^53 (a
pre-#17 Flotilla or a foreign file) is refused.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc.aio
import rocksdict

from flotilla.playground import STORE_ID_BASE
from flotillapb import placement_pb2 as ppb
from flotillapb import store_pb2 as spb
from flotillapb import store_pb2_grpc
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.mvccpb import kv_pb2 as mvccpb
from raft.storage.rocks import open_db
from router.etcdsnapshot import LeaseInfo
from rpc.placementclient import PlacementClient
from shard import keys, slots

MAX_REVISION = 1 << 53
ATTACH_BATCH = 512
STORE_DIR_PREFIX = "s"


class RestoreError(Exception):
    """A restore that cannot be done (said why); nothing was left behind."""


@dataclass(frozen=True, slots=True)
class Source:
    """What a backup file holds."""

    kind: str  # "etcd snapshot (bbolt)" or "Flotilla backup (format 1)"
    revision: int
    kvs: tuple[mvccpb.KeyValue, ...]
    leases: tuple[LeaseInfo, ...]


# -- the store nodes' RocksDB ----------------------------------------------------------------


@dataclass(slots=True)
class HostedShard:
    shard_id: int
    slot_count: int
    ranges: slots.SlotRanges
    state: keys.ShardState
    keys: int = 0
    size: int = 0
    max_revision: int = 0
    subs: dict[tuple[int, int], int] = field(default_factory=dict)


def _meta_records(db: rocksdict.Rdict) -> Iterable[tuple[bytes, bytes]]:
    it = db.iter()
    it.seek(keys.META_PREFIX)
    while it.valid():
        k = bytes(it.key())
        if not k.startswith(keys.META_PREFIX):
            return
        yield k, bytes(it.value())
        it.next()


def hosted_shards(db: rocksdict.Rdict) -> dict[int, HostedShard]:
    """The shards a store node's RocksDB holds a replica of (STATE and SLOTS)."""
    states: dict[int, keys.ShardState] = {}
    owned: dict[int, tuple[int, slots.SlotRanges]] = {}
    for k, v in _meta_records(db):
        shard_id, kind = keys.shard_of_meta_key(k)
        if kind == keys.MetaKind.STATE:
            states[shard_id] = keys.decode_state(v)
        elif kind == keys.MetaKind.SLOTS:
            owned[shard_id] = keys.decode_slots(v)
    return {
        sid: HostedShard(sid, owned[sid][0], tuple(owned[sid][1]), states[sid]) for sid in states if sid in owned
    }


def _has_user_data(db: rocksdict.Rdict) -> bool:
    it = db.iter()
    it.seek(keys.DATA_PREFIX)
    return bool(it.valid()) and bytes(it.key())[:1] in (keys.DATA_PREFIX, keys.REV_PREFIX)


def ingest(db_path: Path, kvs: Sequence[mvccpb.KeyValue], revision: int) -> dict[int, int]:
    """Write the keys of the shards this store node hosts into its RocksDB
    (the process stopped); shard id -> keys written, for every hosted shard."""
    db = open_db(db_path)
    try:
        hosted = hosted_shards(db)
        if not hosted:
            raise RestoreError(f"{db_path}: the store node hosts no shard")
        if _has_user_data(db):
            raise RestoreError(f"{db_path}: the new cluster already holds keys")
        slot_count = next(iter(hosted.values())).slot_count
        owner: dict[int, HostedShard] = {}
        for h in hosted.values():
            for lo, hi in h.ranges:
                for s in range(lo, hi):
                    owner[s] = h
        wb = rocksdict.WriteBatch(raw_mode=True)
        for kv in kvs:
            slot = slots.slot_of(kv.key, slot_count)
            h = owner.get(slot)
            if h is None:
                continue  # another store node's shard
            rec = keys.MvccRecord(kv.create_revision, kv.version, kv.lease, bytes(kv.value))
            wb.put(keys.mvcc_key(slot, kv.key, kv.mod_revision), keys.encode_mvcc(rec))
            sub = h.subs.get((slot, kv.mod_revision), 0)
            h.subs[(slot, kv.mod_revision)] = sub + 1
            wb.put(keys.rev_key(slot, kv.mod_revision, sub), bytes(kv.key))
            h.keys += 1
            h.size += len(kv.key) + len(kv.value)
            h.max_revision = max(h.max_revision, kv.mod_revision)
        for h in hosted.values():
            old = db.get(keys.stats_key(h.shard_id))
            count, size = keys.decode_stats(old) if old is not None else (0, 0)
            wb.put(keys.stats_key(h.shard_id), keys.encode_stats(count + h.keys, size + h.size))
            st = h.state
            new = keys.ShardState(
                st.applied, max(st.revision, h.max_revision, revision), max(st.compact_revision, revision), st.closed_ts
            )
            wb.put(keys.state_key(h.shard_id), keys.encode_state(new))
        opts = rocksdict.WriteOptions()
        opts.sync = True
        db.write(wb, opts)
        db.flush()
        return {h.shard_id: h.keys for h in hosted.values()}
    finally:
        db.close()


# -- the temporary cluster -------------------------------------------------------------------


def _playground_argv(work: Path, shape: dict[str, int | None]) -> list[str]:
    argv = [sys.executable, "-m", "flotilla", "playground", "--data-dir", str(work), "--client-port", "0"]
    for name, value in shape.items():
        if value is not None:
            argv += [f"--{name}", str(value)]
    return argv


class TempCluster:
    """`flotilla playground` on the work directory, started and stopped."""

    def __init__(self, work: Path, shape: dict[str, int | None], timeout_s: float) -> None:
        self.work = work
        self.shape = shape
        self.timeout_s = timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = work.parent / f"{work.name}.playground.log"

    def start(self) -> None:
        self.work.mkdir(parents=True)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            _playground_argv(self.work, self.shape), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + self.timeout_s
        while True:
            text = self.log_path.read_text(errors="replace")
            if "\nready\n" in text or text.startswith("ready\n"):
                return
            if self.proc.poll() is not None:
                raise RestoreError(f"the new cluster did not start (exit {self.proc.returncode}):\n{text[-2000:]}")
            if time.monotonic() > deadline:
                raise RestoreError(f"the new cluster did not serve within {self.timeout_s:.0f}s:\n{text[-2000:]}")
            time.sleep(0.1)  # sleep-ok: polling a child's output file against a deadline

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._log.close()
        self.proc = None
        if self.log_path.exists():
            self.log_path.unlink()

    def placement_endpoints(self) -> list[str]:
        shape = json.loads((self.work / "playground.json").read_text())
        return [f"127.0.0.1:{p}" for p in shape["placement_ports"]]


async def _settle(client: PlacementClient, deadline: float) -> ppb.ClusterMap:
    """The map once every replica it assigns is hosted by its store node and
    has applied all its leader committed."""
    loop = asyncio.get_running_loop()
    last = ""
    while loop.time() < deadline:
        m = (await client.call("GetMap", ppb.GetMapRequest(linearizable=True))).map
        addresses = {n.node_id: n.address for n in m.nodes}
        statuses: dict[int, dict[int, spb.ShardStatus]] = {}
        for nid in sorted({r.node_id for s in m.shards for r in s.descriptor.replicas}):
            try:
                st = await store_pb2_grpc.StoreAdminStub(client.channel(addresses[nid])).Status(spb.StoreStatusRequest(), timeout=5)
            except grpc.aio.AioRpcError as exc:
                last = f"store node {nid}: {exc.code().name}"
                break
            statuses[nid] = {s.descriptor.shard_id: s for s in st.shards}
        else:
            behind = []
            for s in m.shards:
                sid = s.descriptor.shard_id
                leader = statuses.get(s.descriptor.leader_node_id, {}).get(sid)
                for r in s.descriptor.replicas:
                    mine = statuses.get(r.node_id, {}).get(sid)
                    if leader is None or not leader.is_leader or mine is None or mine.applied_index < leader.commit_index:
                        behind.append(f"shard {sid} on node {r.node_id}")
            if not behind:
                return m
            last = f"not caught up: {', '.join(behind[:5])}"
        await asyncio.sleep(0.2)  # sleep-ok: polling the replicas' status against a deadline
    raise RestoreError(f"the new cluster's replicas did not settle in time ({last})")


async def _leases_and_map(endpoints: list[str], src: Source, timeout_s: float) -> ppb.ClusterMap:
    client = PlacementClient(endpoints, timeout_s=10.0)
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        lease_ids = {le.id for le in src.leases}
        for le in src.leases:
            ttl = le.remaining_ttl if le.remaining_ttl > 0 else le.ttl
            await client.call("LeaseGrant", epb.LeaseGrantRequest(ID=le.id, TTL=ttl))
        changes = [ppb.LeaseKeyChange(lease_id=kv.lease, key=kv.key) for kv in src.kvs if kv.lease and kv.lease in lease_ids]
        for i in range(0, len(changes), ATTACH_BATCH):
            resp = await client.call("LeaseAttach", ppb.LeaseAttachRequest(changes=changes[i : i + ATTACH_BATCH]))
            if resp.lease_not_found:
                raise RestoreError(f"placement lost {len(resp.lease_not_found)} leases while restoring")
        return await _settle(client, deadline)
    finally:
        await client.close()


# -- the command -------------------------------------------------------------------------------


def _without_missing_leases(src: Source) -> tuple[Source, int]:
    ids = {le.id for le in src.leases}
    dropped = 0
    kvs = []
    for kv in src.kvs:
        if kv.lease and kv.lease not in ids:
            kv = mvccpb.KeyValue(
                key=kv.key, value=kv.value, create_revision=kv.create_revision, mod_revision=kv.mod_revision, version=kv.version
            )
            dropped += 1
        kvs.append(kv)
    return Source(src.kind, src.revision, tuple(kvs), src.leases), dropped


def check_revisions(src: Source) -> None:
    for kv in src.kvs:
        if not 0 < kv.mod_revision < MAX_REVISION or not 0 < kv.create_revision <= kv.mod_revision or kv.version < 1:
            raise RestoreError(
                f"key {kv.key!r}: create revision {kv.create_revision}, mod revision {kv.mod_revision}, version "
                f"{kv.version}: revisions must be positive, below 2^53, create <= mod, version >= 1 (DESIGN.md, "
                "\"Revisions and time\")"
            )
    if src.revision >= MAX_REVISION:
        raise RestoreError(f"revision {src.revision} is not below 2^53 (a backup of a pre-#17 Flotilla?)")


def restore(src: Source, data_dir: Path, shape: dict[str, int | None], timeout_s: float, say: object = print) -> dict[str, int]:
    """Build data_dir from src; figures of what was restored."""
    check_revisions(src)
    target = data_dir.resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise RestoreError(f"data directory {target} exists and is not empty")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = target.parent / f".{target.name}.restoring-{os.getpid()}"
    if work.exists():
        shutil.rmtree(work)
    src, dropped = _without_missing_leases(src)
    log = say if callable(say) else print
    if dropped:
        log(f"{dropped} keys name a lease the file does not hold: restored without a lease (etcd's restore does not attach them either)")
    cluster = TempCluster(work, shape, timeout_s)
    try:
        log(f"starting a new cluster in {work}")
        cluster.start()
        cmap = asyncio.run(_leases_and_map(cluster.placement_endpoints(), src, timeout_s))
        cluster.stop()
        per_node: dict[int, dict[int, int]] = {}
        stores = sorted(p for p in work.iterdir() if p.is_dir() and p.name.startswith(STORE_DIR_PREFIX) and p.name[1:].isdigit())
        store_ids = {STORE_ID_BASE + int(p.name[1:]): p for p in stores}  # the playground's s1, s2, ...: 101, 102, ...
        for nid, path in sorted(store_ids.items()):
            per_node[nid] = ingest(path / "db", src.kvs, src.revision)
        for s in cmap.shards:
            sid = s.descriptor.shard_id
            counts = {r.node_id: per_node.get(r.node_id, {}).get(sid) for r in s.descriptor.replicas}
            if any(c is None for c in counts.values()) or len(set(counts.values())) != 1:
                raise RestoreError(f"shard {sid}: its replicas did not all receive the same keys ({counts})")
        if target.exists():
            target.rmdir()
        os.replace(work, target)
    except BaseException:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
        raise
    return {"keys": len(src.kvs), "leases": len(src.leases), "revision": src.revision, "shards": len(cmap.shards)}
