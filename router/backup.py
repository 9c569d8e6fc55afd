"""Maintenance.Snapshot's backup: the whole key space at one revision R as an
etcd bbolt database (router/etcdsnapshot.py's layout), streamed in chunks with
the SHA-256 of the database as the last chunk, as etcd streams its own.

How R is chosen and read: the first page is a whole-key-space range like any
client's (its answer's revision is R, one revision across every shard: the
router's merged ranges read every shard at one revision); every later page at
revision R, from just after the last key so far, so writers go on while the
backup pages (a compaction past R fails it with etcd's "required revision has
been compacted"). Leases are listed from placement before the first page and
again after the last, and both lists kept (a lease a key at R names was alive
at R: it is in one of them unless it was granted and revoked in between).

Memory stays bounded: etcd's key bucket is ordered by revision, the pages come
in key order, so the key-values go through an external sort (sorted runs of
at most ``sort_bytes`` spilled to temporary files, merged); the database's
pages are spooled (in memory up to ``spool_bytes``, then a temporary file)
while they are made, because the two meta pages in front name pages that come
last. Making the pages is CPU work proportional to the backup; it runs in a
worker thread (asyncio.to_thread) that touches no loop object, so the router
keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import struct
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import IO, Protocol

from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.mvccpb import kv_pb2 as mvccpb
from router.etcd_errors import EtcdError
from router.etcdsnapshot import LeaseInfo, write_snapshot

PAGE_KEYS = 512  # key-values per range while backing up
CHUNK_BYTES = 64 * 1024  # SnapshotResponse.blob size (the last may be smaller)
SORT_BYTES = 32 << 20  # key-values held in memory before a sorted run is spilled
SPOOL_BYTES = 32 << 20  # database pages held in memory before the spool goes to a file
LEASE_BATCH = 64  # LeaseTimeToLive calls at once

_RUN_HEAD = struct.Struct(">QII")  # mod_revision, key length, KeyValue length


class Ranger(Protocol):
    async def range(self, req: epb.RangeRequest, deadline: float) -> epb.RangeResponse: ...


class KvSorter:
    """KeyValues in (mod_revision, key) order, whatever order they are added in;
    above max_bytes the ones held are sorted and spilled as a run to a temporary file."""

    def __init__(self, max_bytes: int = SORT_BYTES) -> None:
        self.max_bytes = max_bytes
        self._held: list[tuple[int, bytes, bytes]] = []
        self._held_bytes = 0
        self._runs: list[IO[bytes]] = []
        self.count = 0

    @property
    def runs(self) -> int:
        return len(self._runs)

    def add(self, kv: mvccpb.KeyValue) -> None:
        value = kv.SerializeToString()
        self._held.append((kv.mod_revision, bytes(kv.key), value))
        self._held_bytes += len(value) + len(kv.key) + 64
        self.count += 1
        if self._held_bytes >= self.max_bytes:
            self._spill()

    def _spill(self) -> None:
        self._held.sort()
        f = tempfile.TemporaryFile()
        for rev, key, value in self._held:
            f.write(_RUN_HEAD.pack(rev, len(key), len(value)))
            f.write(key)
            f.write(value)
        f.flush()
        self._runs.append(f)
        self._held = []
        self._held_bytes = 0

    @staticmethod
    def _read_run(f: IO[bytes]) -> Iterator[tuple[int, bytes, bytes]]:
        f.seek(0)
        while True:
            head = f.read(_RUN_HEAD.size)
            if not head:
                return
            rev, klen, vlen = _RUN_HEAD.unpack(head)
            key = f.read(klen)
            yield rev, key, f.read(vlen)

    def ordered(self) -> Iterator[tuple[int, bytes]]:
        """(mod_revision, marshalled KeyValue) in (mod_revision, key) order."""
        self._held.sort()
        for rev, _, value in heapq.merge(self._held, *(self._read_run(f) for f in self._runs)):
            yield rev, value

    def close(self) -> None:
        for f in self._runs:
            f.close()
        self._runs = []
        self._held = []


def build_database(sorter: KvSorter, revision: int, leases: list[LeaseInfo], spool_bytes: int = SPOOL_BYTES) -> tuple[bytes, IO[bytes], bytes]:
    """(head, spooled middle pages rewound, tail) of the backup database."""
    spool = tempfile.SpooledTemporaryFile(max_size=spool_bytes)
    try:
        head, tail = write_snapshot(spool.write, revision, sorter.ordered(), leases)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return head, spool, tail  # type: ignore[return-value]


async def list_leases(call: Callable[[str, object], Awaitable[object]]) -> dict[int, LeaseInfo]:
    """Every lease placement holds: id, granted TTL and the seconds left now
    (a lease that already ran out is left out)."""
    listed = await call("LeaseLeases", epb.LeaseLeasesRequest())
    ids = [le.ID for le in listed.leases]  # type: ignore[attr-defined]
    out: dict[int, LeaseInfo] = {}
    for i in range(0, len(ids), LEASE_BATCH):
        answers = await asyncio.gather(
            *(call("LeaseTimeToLive", epb.LeaseTimeToLiveRequest(ID=lid)) for lid in ids[i : i + LEASE_BATCH]),
            return_exceptions=True,
        )
        for lid, a in zip(ids[i : i + LEASE_BATCH], answers):
            if isinstance(a, BaseException):
                if isinstance(a, EtcdError) or not isinstance(a, Exception):
                    raise a
                continue  # placement's own answer (the lease ended since it was listed): left out
            ttl, granted = a.TTL, a.grantedTTL  # type: ignore[attr-defined]
            if ttl > 0 and granted > 0:
                out[lid] = LeaseInfo(lid, granted, min(ttl, granted))
    return out


async def backup_stream(
    kv: Ranger,
    deadline: Callable[[], float],
    leases: Callable[[], Awaitable[dict[int, LeaseInfo]]] | None = None,
    *,
    page_keys: int = PAGE_KEYS,
    chunk_bytes: int = CHUNK_BYTES,
    sort_bytes: int = SORT_BYTES,
    spool_bytes: int = SPOOL_BYTES,
) -> AsyncIterator[tuple[int, bytes]]:
    """(R, chunk) pairs: the database at R, then its SHA-256 as the last chunk.
    ``deadline()`` is each page's deadline (a loop time)."""
    before = await leases() if leases is not None else {}
    sorter = KvSorter(sort_bytes)
    try:
        revision = 0
        key = b"\x00"
        while True:
            r = await kv.range(epb.RangeRequest(key=key, range_end=b"\x00", limit=page_keys, revision=revision), deadline())
            if revision == 0:
                revision = r.header.revision
            for one in r.kvs:
                sorter.add(one)
            if not r.more or not r.kvs:
                break
            key = r.kvs[-1].key + b"\x00"
        after = await leases() if leases is not None else {}
        known = {**before, **after}
        head, spool, tail = await asyncio.to_thread(build_database, sorter, revision, sorted(known.values(), key=lambda le: le.id), spool_bytes)
    finally:
        sorter.close()
    h = hashlib.sha256()
    try:
        pending = head
        while True:
            while len(pending) >= chunk_bytes:
                chunk, pending = pending[:chunk_bytes], pending[chunk_bytes:]
                h.update(chunk)
                yield revision, chunk
            more = spool.read(chunk_bytes)
            if not more:
                break
            pending += more
        pending += tail
        while pending:
            chunk, pending = pending[:chunk_bytes], pending[chunk_bytes:]
            h.update(chunk)
            yield revision, chunk
    finally:
        spool.close()
    yield revision, h.digest()
