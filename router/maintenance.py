"""The etcd Maintenance service, as far as a router can answer it.

- Status: version "3.5.13" (the etcd API level served; Kubernetes checks it
  for watch progress requests); this router as leader, so `etcdctl endpoint
  status` shows a healthy member; header.revision the largest revision seen.
- Alarm: no alarms yet (NOSPACE is not raised by store nodes yet).
- Defragment: nothing to do (RocksDB compacts by itself): success.
- HashKV: a CRC-32 over every key, value and mod revision of the whole key
  space at one revision (read through the router like any range). It is
  Flotilla's own hash, comparable only between Flotilla answers.
- Snapshot, Hash, MoveLeader, Downgrade: UNIMPLEMENTED, saying why. A
  snapshot etcdctl accepts is a bbolt database with etcd's bucket layout and
  a SHA-256 trailer; Flotilla's backups are per shard (not written yet).
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Callable

import grpc
import grpc.aio

from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc
from router.etcd_errors import EtcdError, abort_with
from router.kv import KvRouter, deadline_of

ETCD_VERSION = "3.5.13"


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
        await abort_with(
            context,
            EtcdError("unimplemented", "a Flotilla cluster has no single etcd backend file to snapshot; per-shard backups are not written yet"),
        )
        yield epb.SnapshotResponse()  # pragma: no cover - makes this an async generator

    async def MoveLeader(self, request: epb.MoveLeaderRequest, context: grpc.aio.ServicerContext) -> epb.MoveLeaderResponse:  # noqa: N802
        await abort_with(context, EtcdError("unimplemented", "each shard has its own leader; use flotilla ctl"))
        raise AssertionError

    async def Downgrade(self, request: epb.DowngradeRequest, context: grpc.aio.ServicerContext) -> epb.DowngradeResponse:  # noqa: N802
        await abort_with(context, EtcdError("unimplemented", "downgrades are not supported"))
        raise AssertionError

