"""Backups. Maintenance.Snapshot (router/backup.py) pages the whole key space
at the first page's revision and streams an etcd bbolt database holding it
(sorted by revision through spilled runs when large, leases listed before and
after), then the SHA-256 of the database; the pre-#19 format still
round-trips through read_backup, which refuses a corrupt, truncated or
foreign file."""

from __future__ import annotations

import asyncio
import hashlib
import random
from pathlib import Path
from typing import Any

import grpc
import pytest

from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.mvccpb import kv_pb2 as mvccpb
from router import backup as bk
from router import etcdsnapshot as es
from router import maintenance as m
from router.etcd_errors import EtcdError


def _kv(i: int, value: bytes | None = None) -> mvccpb.KeyValue:
    return mvccpb.KeyValue(
        key=f"k/{i:04d}".encode(),
        value=value if value is not None else b"v" * (i % 7) + bytes([i % 256]),
        create_revision=i + 1,
        mod_revision=i + 2,
        version=1 + i % 3,
        lease=i % 2 * 1234,
    )


def test_round_trip_through_a_file(tmp_path: Path) -> None:
    kvs = [_kv(i) for i in range(20)] + [mvccpb.KeyValue(key=b"\x00\xff", value=b"")]
    data = m.encode_backup(77, kvs)
    assert data.startswith(b"FLOTILLA-BACKUP 1 77\n")
    assert data[-32:] == hashlib.sha256(data[:-32]).digest()
    assert len(data) % 512 == 32  # etcdctl's hasChecksum
    p = tmp_path / "snap.db"
    p.write_bytes(data)
    assert m.read_backup(p) == (77, kvs)
    assert m.read_backup(str(p)) == (77, kvs)


def test_empty_backup() -> None:
    assert m.decode_backup(m.encode_backup(5, [])) == (5, [])


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b[:-1],  # truncated trailer
        lambda b: b[:10] + bytes([b[10] ^ 1]) + b[11:],  # a flipped bit
        lambda b: b[:-40] + b[-32:],  # bytes lost before the trailer
        lambda b: b"",
    ],
)
def test_corruption_is_refused(mangle: Any) -> None:
    with pytest.raises(m.BackupError):
        m.decode_backup(mangle(m.encode_backup(9, [_kv(i) for i in range(5)])))


def test_foreign_or_malformed_files_are_refused() -> None:
    def sealed(body: bytes) -> bytes:
        return body + hashlib.sha256(body).digest()

    def ended(body: bytes) -> bytes:
        return body + m.backup_end(len(body))

    good = ended(m.backup_header(3) + m.encode_kvs([_kv(1)]))
    for body, why in [
        (b"SQLite format 3\x00" + good, "not a Flotilla backup"),
        (good.replace(b"BACKUP 1 ", b"BACKUP 2 "), "version 2"),
        (m.backup_header(3) + m.encode_kvs([_kv(1)]), "no end marker"),
        (good[:-1] + b"x", "after the end marker"),
        (good + bytes(512), "after the end marker"),  # more padding than needed
        (good[:-1], "after the end marker"),  # not aligned
        (ended(m.backup_header(3) + b"\x00\x01\x00\x00abc"), "past the end"),
    ]:
        with pytest.raises(m.BackupError, match=why):
            m.decode_backup(sealed(body))


class FakeKv:
    """A KvRouter ranging a sorted key space at revision REV, recording requests."""

    REV = 4242

    def __init__(self, kvs: list[mvccpb.KeyValue], fail_on_page: int | None = None) -> None:
        self.kvs = sorted(kvs, key=lambda kv: kv.key)
        self.requests: list[epb.RangeRequest] = []
        self.fail_on_page = fail_on_page

    async def range(self, req: epb.RangeRequest, deadline: float) -> epb.RangeResponse:
        assert deadline > asyncio.get_running_loop().time()
        self.requests.append(req)
        if self.fail_on_page is not None and len(self.requests) > self.fail_on_page:
            raise EtcdError("compacted")
        assert req.range_end == b"\x00" and req.revision in (0, self.REV)
        match = [kv for kv in self.kvs if kv.key >= req.key]
        page = match[: req.limit] if req.limit else match
        out = epb.RangeResponse(more=len(page) < len(match), count=len(match))
        out.kvs.extend(page)
        out.header.revision = self.REV
        return out

    def stamp(self, header: epb.ResponseHeader, revision: int | None = None) -> None:
        header.cluster_id = 1
        header.member_id = 2
        if revision is not None:
            header.revision = revision


class Aborted(Exception):
    pass


class FakeContext:
    def __init__(self) -> None:
        self.aborted: tuple[Any, str] | None = None

    def time_remaining(self) -> float | None:
        return None

    async def abort(self, code: Any, message: str) -> None:
        self.aborted = (code, message)
        raise Aborted


def _servicer(kv: FakeKv) -> m.MaintenanceServicer:
    return m.MaintenanceServicer(kv, 5.0, lambda: 1)  # type: ignore[arg-type]


def _decoded(data: bytes) -> es.SnapshotState:
    assert data[-32:] == hashlib.sha256(data[:-32]).digest()
    assert len(data) % 512 == 32  # etcdctl's hasChecksum
    return es.read_state(es.open_db(data))


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 100])
def test_stream_pages_at_one_revision_and_ends_with_the_sha256(n: int) -> None:
    kvs = [_kv(i) for i in range(n)]
    kv = FakeKv(kvs)

    async def body() -> list[tuple[int, bytes]]:
        return [c async for c in _servicer(kv).backup_stream(page_keys=8, chunk_bytes=500)]

    chunks = asyncio.run(body())
    assert {rev for rev, _ in chunks} == {FakeKv.REV}
    data = b"".join(c for _, c in chunks)
    assert chunks[-1][1] == hashlib.sha256(data[:-32]).digest()
    assert all(len(c) <= 500 for _, c in chunks[:-1])
    state = _decoded(data)
    assert state.revision == FakeKv.REV and state.compact_revision == FakeKv.REV
    assert list(state.kvs) == kvs
    assert data == es.snapshot_bytes(FakeKv.REV, kvs)
    # The first page as the client would range; every later one at R, after the last key.
    assert kv.requests[0].revision == 0 and kv.requests[0].key == b"\x00"
    assert all(r.revision == FakeKv.REV for r in kv.requests[1:])
    assert [r.key for r in kv.requests[1:]] == [kvs[i].key + b"\x00" for i in range(7, n - 1, 8)]


def test_large_backups_sort_through_spilled_runs_and_a_file_spool() -> None:
    rng = random.Random(3)
    revs = rng.sample(range(1, 10**9), 3000)
    kvs = [
        mvccpb.KeyValue(key=b"k%05d" % i, value=rng.randbytes(rng.randint(0, 300)), create_revision=r, mod_revision=r, version=1)
        for i, r in enumerate(revs)
    ]
    kvs.append(mvccpb.KeyValue(key=b"twin1", value=b"a", create_revision=5, mod_revision=revs[0], version=2))
    sorter = bk.KvSorter(max_bytes=20_000)
    for one in kvs:
        sorter.add(one)
    assert sorter.runs >= 10
    ordered = list(sorter.ordered())
    assert [r for r, _ in ordered] == sorted(kv.mod_revision for kv in kvs)
    sorter.close()

    async def body() -> bytes:
        stream = bk.backup_stream(FakeKv(kvs), _far, None, page_keys=100, sort_bytes=20_000, spool_bytes=10_000)
        return b"".join([c async for _, c in stream])

    data = asyncio.run(body())
    state = _decoded(data)
    assert list(state.kvs) == sorted(kvs, key=lambda kv: kv.key)
    assert data == es.snapshot_bytes(FakeKv.REV, kvs)


def _far() -> float:
    return asyncio.get_running_loop().time() + 30


def test_leases_listed_before_and_after_are_kept() -> None:
    calls: list[str] = []
    rounds = [{1: (60, 50), 2: (10, 9)}, {2: (10, 8), 3: (30, 30)}]

    async def call(method: str, req: object) -> object:
        calls.append(method)
        table = rounds[0] if calls.count("LeaseLeases") == 1 else rounds[1]
        if method == "LeaseLeases":
            return epb.LeaseLeasesResponse(leases=[epb.LeaseStatus(ID=i) for i in table])
        granted, left = table[req.ID]  # type: ignore[attr-defined]
        return epb.LeaseTimeToLiveResponse(ID=req.ID, TTL=left, grantedTTL=granted)  # type: ignore[attr-defined]

    async def body() -> bytes:
        stream = bk.backup_stream(FakeKv([_kv(1)]), _far, lambda: bk.list_leases(call))
        return b"".join([c async for _, c in stream])

    state = _decoded(asyncio.run(body()))
    assert state.leases == (es.LeaseInfo(1, 60, 50), es.LeaseInfo(2, 10, 8), es.LeaseInfo(3, 30, 30))


def test_snapshot_rpc_responses(tmp_path: Path) -> None:
    kvs = [_kv(i) for i in range(30)]

    async def body() -> list[epb.SnapshotResponse]:
        return [r async for r in _servicer(FakeKv(kvs)).Snapshot(epb.SnapshotRequest(), FakeContext())]  # type: ignore[arg-type]

    resps = asyncio.run(body())
    assert all(r.header.revision == FakeKv.REV and r.header.member_id == 2 for r in resps)
    assert all(r.remaining_bytes == 0 for r in resps)
    assert len(resps[-1].blob) == 32
    p = tmp_path / "snap.db"
    p.write_bytes(b"".join(r.blob for r in resps))
    assert list(_decoded(p.read_bytes()).kvs) == kvs


def test_snapshot_rpc_fails_as_etcd_when_a_page_fails() -> None:
    ctx = FakeContext()

    async def body() -> None:
        async for _ in _servicer(FakeKv([_kv(i) for i in range(2000)], fail_on_page=2)).Snapshot(epb.SnapshotRequest(), ctx):  # type: ignore[arg-type]
            pass

    with pytest.raises(Aborted):
        asyncio.run(body())
    assert ctx.aborted is not None and ctx.aborted[0] == grpc.StatusCode.OUT_OF_RANGE
