"""The etcd Maintenance service, as far as a router can answer it.

- Status: version "3.5.13" (the etcd API level served; Kubernetes checks it
  for watch progress requests); this router as leader, so `etcdctl endpoint
  status` shows a healthy member; header.revision the largest revision seen.
- Alarm: no alarms yet (NOSPACE is not raised by store nodes yet).
- Defragment: nothing to do (RocksDB compacts by itself): success.
- HashKV: a CRC-32 over every key, value and mod revision of the whole key
  space at one revision (read through the router like any range). It is
  Flotilla's own hash, comparable only between Flotilla answers.
- Snapshot: a backup of the whole key space at one revision R, in
  Flotilla's own format (below), streamed as etcd streams its db: in
  SnapshotResponse.blob chunks, the SHA-256 of all the bytes before it as the
  last 32 bytes. `etcdctl snapshot save` copies the stream to a file without
  reading remaining_bytes or checking the hash itself; it only checks that
  the size is 32 more than a multiple of 512 (a bbolt db is page-aligned:
  etcd's hasChecksum), hence the zero padding below. It is NOT a bbolt
  file: `etcdctl snapshot status/restore` cannot read it; read_backup() does.
- Hash, MoveLeader, Downgrade: UNIMPLEMENTED, saying why.

Backup format, version 1 (all integers big-endian):

    b"FLOTILLA-BACKUP 1 <R>\n"     magic, format version, revision (ASCII)
    repeated: u32 n, n bytes         one mvccpb.KeyValue (n > 0), key order
    u32 0                            end of the key-values
    zero bytes (0..511)              padding to a multiple of 512 bytes
    32 bytes                         SHA-256 of every byte before it

The key-values are the state at R of every key (every shard, read through the
router like any range, paged by key), one version each: key, value,
create_revision, mod_revision, version, lease. remaining_bytes is always 0:
the size is not known ahead (etcd sets the bytes left; clients ignore it).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import struct
import zlib
from collections.abc import AsyncIterator, Callable, Iterable

import grpc
import grpc.aio

from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc
from flotillapb.etcd.mvccpb import kv_pb2 as mvccpb
from router.etcd_errors import EtcdError, abort_with
from router.kv import KvRouter, deadline_of

ETCD_VERSION = "3.5.13"

BACKUP_MAGIC = b"FLOTILLA-BACKUP"
BACKUP_VERSION = 1
BACKUP_PAGE_KEYS = 512  # key-values per range while backing up
BACKUP_CHUNK_BYTES = 64 * 1024  # SnapshotResponse.blob size (the last may be smaller)
BACKUP_ALIGN = 512  # the bytes before the SHA-256 trailer: a multiple of this
_U32 = struct.Struct(">I")


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
    def __init__(self, kv: KvRouter, request_timeout_s: float, revision: Callable[[], int]) -> None:
        self._kv = kv
        self._timeout_s = request_timeout_s
        self._revision = revision

    def _header(self, h: epb.ResponseHeader) -> None:
        self._kv.stamp(h, self._revision())

    async def Status(self, request: epb.StatusRequest, context: grpc.aio.ServicerContext) -> epb.StatusResponse:  # noqa: N802
        ident = self._kv.identity
        resp = epb.StatusResponse(
            version=ETCD_VERSION,
            leader=ident.member_id,
            raftTerm=ident.raft_term,
            raftIndex=1,
            raftAppliedIndex=1,
        )
        self._header(resp.header)
        return resp

    async def Alarm(self, request: epb.AlarmRequest, context: grpc.aio.ServicerContext) -> epb.AlarmResponse:  # noqa: N802
        resp = epb.AlarmResponse()
        self._header(resp.header)
        return resp

    async def Defragment(self, request: epb.DefragmentRequest, context: grpc.aio.ServicerContext) -> epb.DefragmentResponse:  # noqa: N802
        resp = epb.DefragmentResponse()
        self._header(resp.header)
        return resp

    async def HashKV(self, request: epb.HashKVRequest, context: grpc.aio.ServicerContext) -> epb.HashKVResponse:  # noqa: N802
        try:
            r = await self._kv.range(
                epb.RangeRequest(key=b"\x00", range_end=b"\x00", revision=request.revision),
                deadline_of(context, self._timeout_s),
            )
        except EtcdError as err:
            await abort_with(context, err)
        crc = 0
        for kv in r.kvs:
            crc = zlib.crc32(kv.key, crc)
            crc = zlib.crc32(kv.value, crc)
            crc = zlib.crc32(kv.mod_revision.to_bytes(8, "big"), crc)
        resp = epb.HashKVResponse(hash=crc)
        self._kv.stamp(resp.header, r.header.revision)
        return resp

    async def Hash(self, request: epb.HashRequest, context: grpc.aio.ServicerContext) -> epb.HashResponse:  # noqa: N802
        await abort_with(context, EtcdError("unimplemented", "Hash covers one etcd backend; use HashKV"))
        raise AssertionError

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

    async def backup_stream(
        self,
        deadline: Callable[[], float] | None = None,
        *,
        page_keys: int = BACKUP_PAGE_KEYS,
        chunk_bytes: int = BACKUP_CHUNK_BYTES,
    ) -> AsyncIterator[tuple[int, bytes]]:
        """(R, chunk) pairs: the backup at R, the SHA-256 trailer as the last chunk.

        The first page is read like any whole-key-space range (its answer's
        revision is R); every later page at revision R, from just after the
        last key so far. Each page has its own deadline (a backup may take
        longer than one request; never past the call's own). A compaction
        past R while paging fails the stream (etcd's "required revision has
        been compacted")."""
        h = hashlib.sha256()
        sent = 0
        buf = bytearray()
        revision = 0
        key = b"\x00"
        while True:
            req = epb.RangeRequest(key=key, range_end=b"\x00", limit=page_keys, revision=revision)
            if deadline is not None:
                page_deadline = deadline()
            else:
                page_deadline = asyncio.get_running_loop().time() + self._timeout_s
            r = await self._kv.range(req, page_deadline)
            if revision == 0:
                revision = r.header.revision
                buf += backup_header(revision)
            buf += encode_kvs(r.kvs)
            while len(buf) >= chunk_bytes:
                chunk = bytes(buf[:chunk_bytes])
                del buf[:chunk_bytes]
                h.update(chunk)
                sent += len(chunk)
                yield revision, chunk
            if not r.more or not r.kvs:
                break
            key = r.kvs[-1].key + b"\x00"
        buf += backup_end(sent + len(buf))
        while buf:
            chunk = bytes(buf[:chunk_bytes])
            del buf[:chunk_bytes]
            h.update(chunk)
            yield revision, chunk
        yield revision, h.digest()

    async def MoveLeader(self, request: epb.MoveLeaderRequest, context: grpc.aio.ServicerContext) -> epb.MoveLeaderResponse:  # noqa: N802
        await abort_with(context, EtcdError("unimplemented", "each shard has its own leader; use flotilla ctl"))
        raise AssertionError

    async def Downgrade(self, request: epb.DowngradeRequest, context: grpc.aio.ServicerContext) -> epb.DowngradeResponse:  # noqa: N802
        await abort_with(context, EtcdError("unimplemented", "downgrades are not supported"))
        raise AssertionError

