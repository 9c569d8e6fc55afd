"""The etcd Maintenance service, as far as a router can answer it.

- Status: version "3.5.13" (the etcd API level served; Kubernetes checks it
  for watch progress requests); this router as leader, so `etcdctl endpoint
  status` shows a healthy member; header.revision the largest revision seen.
  StatusResponse.errors lists every store node's active alarms as etcd
  prints them ("memberID:<node id> alarm:NOSPACE "), and dbSize /
  dbSizeInUse the space the store nodes use, summed (their last
  measurement); a node that does not answer within a second is left out.
- Alarm: the store nodes' alarms (shard/quota.py, etcd's semantics: a node
  over its --quota-backend-bytes raises NOSPACE, and the leaders it hosts
  refuse writes that add data until the alarm is disarmed). The member id of
  a node's alarms is its node id. GET asks every store node (alarm NONE:
  every alarm); ACTIVATE arms an alarm on the node memberID names, and
  memberID 0 (etcd: this member) or the router's own member id (the one
  MemberList shows) on every store node, the router's member being the
  store nodes behind it (alarm_targets); the answer lists each node armed
  (etcd records any member id; here any other gets "etcdserver: member not
  found"). DEACTIVATE disarms the same way, answering the alarms it
  disarmed. A node still over its quota raises NOSPACE again at its next
  measurement (each --space-check-ms).
- Defragment: every store node flushes and compacts its RocksDB, so the
  space of deleted and compacted versions is given back and measured again
  (etcd defragments the member the client talks to; the router's members
  are all the store nodes).
- HashKV: one hash per shard, from the shard's leader (another replica if
  the leader cannot answer): shard/hashkv.py's CRC-32 of the shard's MVCC
  state at revision R (every version after the shard's compact revision,
  plus what compaction keeps). R is the request's revision, or the
  revision of a whole-key-space count read. The answer's hash is the CRC-32
  over, for each shard in slot order, its first slot and its hash (u32
  big-endian each): two answers compare equal only for the same shard
  layout at the same R. compact_revision is the highest over the shards;
  hash_revision (and header.revision) is R. `flotilla ctl hashkv` compares
  the replicas of every shard.
- Hash: etcd hashes a member's whole backend, and clients compare it
  across members. Here: HashKV's hash of the whole key space at the current
  revision R (a whole-key-space count read), header.revision R. Every router
  answers the same hash for the same R and shard layout (and for any R
  between the same two writes: the hash covers versions, not R).
- Snapshot: a backup of the whole key space at one revision R, taken while
  writes go on, as an etcd bbolt database (router/backup.py streams it,
  router/etcdsnapshot.py lays it out, router/bbolt.py writes the pages):
  every live key at R once, at its own mod revision, the leases, and R as
  the compaction marks. Streamed as etcd streams its db: SnapshotResponse.blob
  chunks of the database, then its SHA-256 as the last chunk, which
  `etcdctl snapshot save` appends to the file; `etcdctl snapshot status`
  and `restore` read it, and so does `flotilla snapshot status/restore`.
  remaining_bytes is always 0: the size is not known ahead (etcd sets the
  bytes left; clients ignore it).
- MoveLeader, Downgrade: UNIMPLEMENTED, saying why.

Before issue #19 Snapshot streamed Flotilla's own format, version 1 (all
integers big-endian); read_backup() still reads it, and `flotilla snapshot
restore` accepts it:

    b"FLOTILLA-BACKUP 1 <R>\n"     magic, format version, revision (ASCII)
    repeated: u32 n, n bytes         one mvccpb.KeyValue (n > 0), key order
    u32 0                            end of the key-values
    zero bytes (0..511)              padding to a multiple of 512 bytes
    32 bytes                         SHA-256 of every byte before it
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TypeVar

import grpc
import grpc.aio

from flotillapb import store_pb2 as spb
from flotillapb import store_pb2_grpc
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc
from flotillapb.etcd.mvccpb import kv_pb2 as mvccpb
from router import backup
from router.etcd_errors import EtcdError, abort_with, from_kv_error
from router.etcdsnapshot import LeaseInfo
from router.kv import KvRouter, deadline_of
from router.lease import PlacementLink

log = logging.getLogger(__name__)
T = TypeVar("T")

ETCD_VERSION = "3.5.13"

BACKUP_MAGIC = b"FLOTILLA-BACKUP"
BACKUP_VERSION = 1
BACKUP_ALIGN = 512  # the bytes before the SHA-256 trailer: a multiple of this
_U32 = struct.Struct(">I")
STATUS_FANOUT_TIMEOUT_S = 1.0  # Status asks every store node for its alarms; a slow one is left out
HASH_RETRY_S = 0.05


def alarm_text(member_id: int, alarm: int) -> str:
    """An alarm as etcd's StatusResponse.errors carries it (gogoproto's
    AlarmMember.String(), trailing space included)."""
    return f"memberID:{member_id} alarm:{epb.AlarmType.Name(alarm)} "


def combine_shard_hashes(shard_hashes: Iterable[tuple[int, int]]) -> int:
    """The HashKV answer: CRC-32 over (first slot, shard hash), u32 big-endian
    each, of every shard in slot order."""
    crc = 0
    for first_slot, h in sorted(shard_hashes):
        crc = zlib.crc32(_U32.pack(first_slot) + _U32.pack(h), crc)
    return crc


def alarm_targets(action: int, member_id: int, own_member_id: int, nodes: dict[int, str]) -> dict[int, str]:
    """The store nodes an AlarmRequest acts on (node id -> address).

    GET: every node. ACTIVATE / DEACTIVATE: the store node memberID names
    (a router inside a store process has that node's id: the node itself);
    memberID 0 ("this member", as etcd takes it) or this router's own member
    id (the one MemberList shows) when it is no store node's: every node,
    since the router's member is the store nodes behind it. ACTIVATE of any
    other member: "member not found"; DEACTIVATE of one: nothing (etcd:
    nothing active for that member)."""
    if action == epb.AlarmRequest.GET:
        return dict(nodes)
    if member_id in nodes:
        return {member_id: nodes[member_id]}
    if member_id in (0, own_member_id):
        return dict(nodes)
    if action == epb.AlarmRequest.ACTIVATE:
        raise EtcdError("member_not_found")
    return {}


class BackupError(ValueError):
    """A backup file that is not a complete, intact Flotilla backup."""


def backup_header(revision: int) -> bytes:
    return b"%s %d %d\n" % (BACKUP_MAGIC, BACKUP_VERSION, revision)


def encode_kvs(kvs: Iterable[mvccpb.KeyValue]) -> bytes:
    out = bytearray()
    for kv in kvs:
        b = kv.SerializeToString()
        if not b:  # cannot happen for a real key (never empty); would read as the end
            raise ValueError("an empty KeyValue cannot be backed up")
        out += _U32.pack(len(b))
        out += b
    return bytes(out)


def backup_end(length_so_far: int) -> bytes:
    """The end marker and the zero padding that make the length before the
    SHA-256 trailer a multiple of 512 (what etcdctl checks of a snapshot)."""
    n = length_so_far + 4
    return _U32.pack(0) + bytes(-n % BACKUP_ALIGN)


def encode_backup(revision: int, kvs: Iterable[mvccpb.KeyValue]) -> bytes:
    """A whole backup in memory (the hash included): for tests and tools."""
    body = backup_header(revision) + encode_kvs(kvs)
    body += backup_end(len(body))
    return body + hashlib.sha256(body).digest()


def decode_backup(data: bytes) -> tuple[int, list[mvccpb.KeyValue]]:
    """(revision, key-values) of a backup's bytes; BackupError unless intact."""
    if len(data) < 32:
        raise BackupError("too short to hold a SHA-256 trailer")
    body, digest = data[:-32], data[-32:]
    if hashlib.sha256(body).digest() != digest:
        raise BackupError("SHA-256 mismatch: the backup is corrupt or truncated")
    nl = body.find(b"\n")
    parts = body[:nl].split(b" ") if nl >= 0 else []
    if len(parts) != 3 or parts[0] != BACKUP_MAGIC:
        raise BackupError("not a Flotilla backup (no FLOTILLA-BACKUP header)")
    try:
        version, revision = int(parts[1]), int(parts[2])
    except ValueError:
        raise BackupError("malformed header line") from None
    if version != BACKUP_VERSION:
        raise BackupError(f"backup format version {version}; this reader knows {BACKUP_VERSION}")
    kvs: list[mvccpb.KeyValue] = []
    pos = nl + 1
    while True:
        if pos + 4 > len(body):
            raise BackupError("no end marker")
        (n,) = _U32.unpack_from(body, pos)
        pos += 4
        if n == 0:
            break
        if pos + n > len(body):
            raise BackupError("a key-value runs past the end")
        kv = mvccpb.KeyValue()
        kv.ParseFromString(body[pos : pos + n])
        kvs.append(kv)
        pos += n
    if len(body) % BACKUP_ALIGN or len(body) - pos >= BACKUP_ALIGN or body[pos:].count(0) != len(body) - pos:
        raise BackupError("bytes after the end marker other than its zero padding")
    return revision, kvs


def read_backup(path: str | os.PathLike[str]) -> tuple[int, list[mvccpb.KeyValue]]:
    """(revision, key-values in key order) of a backup file written from
    Maintenance.Snapshot (e.g. by `etcdctl snapshot save`), its SHA-256 checked."""
    with open(path, "rb") as f:
        return decode_backup(f.read())


class MaintenanceServicer(rpc_pb2_grpc.MaintenanceServicer):
    def __init__(
        self, kv: KvRouter, request_timeout_s: float, revision: Callable[[], int], leases: PlacementLink | None = None
    ) -> None:
        self._kv = kv
        self._timeout_s = request_timeout_s
        self._revision = revision
        self._leases = leases  # placement, for the leases a backup holds (None: a backup without leases)

    def _header(self, h: epb.ResponseHeader) -> None:
        self._kv.stamp(h, self._revision())

    # -- store nodes -----------------------------------------------------------------
    async def _store_nodes(self) -> dict[int, str]:
        """node id -> address of every store node hosting a replica in the map."""
        cache = self._kv.cache
        if not cache.shards():
            await cache.refresh()
        out: dict[int, str] = {}
        for route in cache.shards():
            for n in route.replicas:
                address = cache.address(n)
                if address:
                    out[n] = address
        return out

    def _admin(self, address: str) -> store_pb2_grpc.StoreAdminStub:
        return store_pb2_grpc.StoreAdminStub(self._kv.fwd.channels.channel(address))

    async def _fan_out(
        self, nodes: dict[int, str], call: Callable[[store_pb2_grpc.StoreAdminStub], Awaitable[T]], timeout_s: float
    ) -> dict[int, T | grpc.aio.AioRpcError | TimeoutError]:
        """call() on every node at once; each answer, or the error it ended with."""

        async def one(address: str) -> T | grpc.aio.AioRpcError | TimeoutError:
            try:
                async with asyncio.timeout(timeout_s):
                    return await call(self._admin(address))
            except (grpc.aio.AioRpcError, TimeoutError) as exc:
                return exc

        ids = sorted(nodes)
        answers = await asyncio.gather(*(one(nodes[n]) for n in ids))
        return dict(zip(ids, answers))

    async def Status(self, request: epb.StatusRequest, context: grpc.aio.ServicerContext) -> epb.StatusResponse:  # noqa: N802
        ident = self._kv.identity
        resp = epb.StatusResponse(
            version=ETCD_VERSION,
            leader=ident.member_id,
            raftTerm=ident.raft_term,
            raftIndex=1,
            raftAppliedIndex=1,
        )
        try:
            nodes = await self._store_nodes()
        except EtcdError:
            nodes = {}
        answers = await self._fan_out(
            nodes, lambda stub: stub.Alarm(spb.StoreAlarmRequest(action=epb.AlarmRequest.GET)), STATUS_FANOUT_TIMEOUT_S
        )
        for nid, a in answers.items():
            if isinstance(a, spb.StoreAlarmResponse):
                resp.errors.extend(alarm_text(nid, alarm) for alarm in a.alarms)
                resp.dbSize += a.used_bytes
                resp.dbSizeInUse += a.used_bytes
        self._header(resp.header)
        return resp

    async def Alarm(self, request: epb.AlarmRequest, context: grpc.aio.ServicerContext) -> epb.AlarmResponse:  # noqa: N802
        try:
            resp = await self._alarm(request, deadline_of(context, self._timeout_s))
        except EtcdError as err:
            await abort_with(context, err)
        self._header(resp.header)
        return resp

    async def _alarm(self, request: epb.AlarmRequest, deadline: float) -> epb.AlarmResponse:
        action = request.action
        if action == epb.AlarmRequest.ACTIVATE and request.alarm == epb.NONE:
            return epb.AlarmResponse()
        nodes = alarm_targets(action, request.memberID, self._kv.identity.member_id, await self._store_nodes())
        timeout_s = max(0.0, deadline - asyncio.get_running_loop().time())
        req = spb.StoreAlarmRequest(action=action, alarm=request.alarm)
        answers = await self._fan_out(nodes, lambda stub: stub.Alarm(req), timeout_s)
        resp = epb.AlarmResponse()
        for nid, a in answers.items():
            if not isinstance(a, spb.StoreAlarmResponse):
                if action != epb.AlarmRequest.GET:
                    raise EtcdError("timeout", f"store node {nid}: {a}")
                log.warning("alarm list: store node %d did not answer (%s); its alarms are left out", nid, a)
                continue
            if action == epb.AlarmRequest.GET:
                listed = list(a.alarms)
            elif action == epb.AlarmRequest.ACTIVATE:
                listed = [request.alarm]
            else:
                listed = list(a.changed)
            resp.alarms.extend(epb.AlarmMember(memberID=nid, alarm=alarm) for alarm in listed)
        return resp

    async def Defragment(self, request: epb.DefragmentRequest, context: grpc.aio.ServicerContext) -> epb.DefragmentResponse:  # noqa: N802
        try:
            nodes = await self._store_nodes()
        except EtcdError as err:
            await abort_with(context, err)
        left = context.time_remaining()
        answers = await self._fan_out(
            nodes, lambda stub: stub.Defragment(spb.StoreDefragmentRequest()), 300.0 if left is None else max(0.0, left)
        )
        for nid, a in answers.items():
            if not isinstance(a, spb.StoreDefragmentResponse):
                await abort_with(context, EtcdError("timeout", f"store node {nid} did not defragment: {a}"))
            log.info("store node %d defragmented: %d -> %d bytes used", nid, a.used_bytes_before, a.used_bytes_after)
        resp = epb.DefragmentResponse()
        self._header(resp.header)
        return resp

    async def HashKV(self, request: epb.HashKVRequest, context: grpc.aio.ServicerContext) -> epb.HashKVResponse:  # noqa: N802
        try:
            hash_, compact, revision = await self.keyspace_hash(request.revision, deadline_of(context, self._timeout_s))
        except EtcdError as err:
            await abort_with(context, err)
        resp = epb.HashKVResponse(hash=hash_, compact_revision=compact, hash_revision=revision)
        self._kv.stamp(resp.header, revision)
        return resp

    async def keyspace_hash(self, revision: int, deadline: float) -> tuple[int, int, int]:
        """(hash, compact revision, R) of the whole key space at revision R
        (revision, or if 0 the revision of a whole-key-space count read): the
        shards' hashes at R combined in slot order (combine_shard_hashes);
        compact revision the highest over the shards."""
        if revision <= 0:
            r = await self._kv.range(epb.RangeRequest(key=b"\x00", range_end=b"\x00", count_only=True), deadline)
            revision = r.header.revision
        routes = self._kv.cache.shards()
        answers = await asyncio.gather(*(self.shard_hash(route.shard_id, revision, deadline) for route in routes))
        firsts = [min((lo for lo, _ in route.slot_ranges), default=0) for route in routes]
        return (
            combine_shard_hashes((first, a.hash) for first, a in zip(firsts, answers)),
            max((a.compact_revision for a in answers), default=0),
            revision,
        )

    async def shard_hash(self, shard_id: int, revision: int, deadline: float) -> spb.ShardHashKVResponse:
        """One shard's HashKV at revision, from its leader, else another replica
        (a follower not caught up with revision yet answers StaleReadNotReady),
        retried until the deadline. KV errors (COMPACTED, FUTURE_REVISION) are
        final."""
        loop = asyncio.get_running_loop()
        turn = 0
        last = "no replica answered"
        while loop.time() < deadline:
            route = self._kv.cache.shard(shard_id)
            if route is None or not route.replicas:
                raise EtcdError("no_leader", f"shard {shard_id} is not in the map")
            order = ([route.leader] if route.leader else []) + [n for n in route.replicas if n != route.leader]
            node = order[turn % len(order)]
            turn += 1
            address = self._kv.cache.address(node)
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    a = await self._admin(address).HashKV(spb.ShardHashKVRequest(shard_id=shard_id, revision=revision))
            except (grpc.aio.AioRpcError, TimeoutError) as exc:
                last = f"node {node}: {exc}"
                continue
            if not a.header.HasField("error"):
                return a
            if a.header.error.HasField("kv"):
                if a.header.error.kv.code != spb.KvError.FUTURE_REVISION or turn > 3 * len(order):
                    raise from_kv_error(a.header.error.kv)
            last = f"node {node}: {a.header.error}"
            await asyncio.sleep(HASH_RETRY_S)  # sleep-ok: back off between replicas within the deadline
        raise EtcdError("timeout", f"HashKV of shard {shard_id}: {last}")

    async def Hash(self, request: epb.HashRequest, context: grpc.aio.ServicerContext) -> epb.HashResponse:  # noqa: N802
        try:
            hash_, _, revision = await self.keyspace_hash(0, deadline_of(context, self._timeout_s))
        except EtcdError as err:
            await abort_with(context, err)
        resp = epb.HashResponse(hash=hash_)
        self._kv.stamp(resp.header, revision)
        return resp

    async def Snapshot(  # noqa: N802
        self, request: epb.SnapshotRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[epb.SnapshotResponse]:
        try:
            async for revision, blob in self.backup_stream(lambda: deadline_of(context, self._timeout_s)):
                resp = epb.SnapshotResponse(remaining_bytes=0, blob=blob)
                self._kv.stamp(resp.header, revision)
                yield resp
        except EtcdError as err:
            await abort_with(context, err)

    async def _lease_infos(self) -> dict[int, LeaseInfo]:
        link = self._leases
        assert link is not None
        try:
            return await backup.list_leases(lambda method, req: link.call(method, req, timeout_s=self._timeout_s))
        except grpc.aio.AioRpcError as exc:
            raise EtcdError("timeout", f"listing the leases for the backup: {exc.code().name} {exc.details()}") from None

    def backup_stream(self, deadline: Callable[[], float] | None = None, **kw: int) -> AsyncIterator[tuple[int, bytes]]:
        """(R, chunk) pairs: the backup database at R, its SHA-256 as the last
        chunk (router/backup.py). Each page read has its own deadline (a backup
        may take longer than one request; never past the call's own)."""
        if deadline is None:
            loop = asyncio.get_running_loop()
            deadline = lambda: loop.time() + self._timeout_s  # noqa: E731
        return backup.backup_stream(self._kv, deadline, self._lease_infos if self._leases is not None else None, **kw)

    async def MoveLeader(self, request: epb.MoveLeaderRequest, context: grpc.aio.ServicerContext) -> epb.MoveLeaderResponse:  # noqa: N802
        await abort_with(context, EtcdError("unimplemented", "each shard has its own leader; use flotilla ctl"))
        raise AssertionError

    async def Downgrade(self, request: epb.DowngradeRequest, context: grpc.aio.ServicerContext) -> epb.DowngradeResponse:  # noqa: N802
        await abort_with(context, EtcdError("unimplemented", "downgrades are not supported"))
        raise AssertionError

