"""etcd's layout inside its bbolt file, written and read (PURE).

What etcd 3.4/3.5 keep in the backend a snapshot copies, and so what
`etcdctl snapshot status/restore` and etcd itself read:

- bucket ``key``: one item per change, keyed by its revision: ``u64 main
  (big-endian) | '_' | u64 sub`` (17 bytes), with a trailing ``'t'`` for a
  tombstone (a delete); the value is the marshalled ``mvccpb.KeyValue``
  (for a tombstone, just its key). Items sort by revision.
- bucket ``meta``: ``consistent_index`` and ``term`` (u64 big-endian; term
  from 3.5 on), ``scheduledCompactRev`` / ``finishedCompactRev`` (a 17-byte
  revision, sub 0) once etcd compacted.
- bucket ``lease``: per lease, key the id (u64 big-endian), value the
  marshalled ``leasepb.Lease`` (ID, TTL, RemainingTTL).
- buckets ``members``, ``members_removed``, ``cluster``, ``alarm``, ``auth``,
  ``authUsers``, ``authRoles``: empty here (`etcdctl snapshot restore`
  replaces the membership anyway).

A Flotilla backup is such a file holding the state at one revision R: every
live key once, at its mod revision (revisions kept as they are: HLC values
below 2^53, sparse, which etcd accepts), sub-revisions numbering the keys
that share a mod revision, no tombstones, and R as both compaction marks:
etcd's restore then starts at revision R (it takes the larger of its last
key and the finished compaction) and refuses reads below R, the history a
backup does not hold. ``etcdctl snapshot status`` reports the last key's
revision (the newest mod revision at or below R), the CRC-32C hash over
bucket names, keys and values, and the item count of every bucket, as
``status()`` computes them here.

The file ``etcdctl snapshot save`` writes is the database followed by the
SHA-256 of it (the server sends it last); ``split_trailer`` checks it.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from flotillapb.etcd.leasepb import lease_pb2
from flotillapb.etcd.mvccpb import kv_pb2 as mvccpb
from router.bbolt import BoltError, BoltReader, BoltWriter, BucketRef

KEY_BUCKET = b"key"
META_BUCKET = b"meta"
LEASE_BUCKET = b"lease"
EMPTY_BUCKETS = (b"alarm", b"auth", b"authRoles", b"authUsers", b"cluster", b"members", b"members_removed")

CONSISTENT_INDEX = b"consistent_index"
TERM = b"term"
SCHEDULED_COMPACT = b"scheduledCompactRev"
FINISHED_COMPACT = b"finishedCompactRev"

_REV = struct.Struct(">QcQ")
REV_BYTES = _REV.size  # 17
_U64 = struct.Struct(">Q")
SHA256_SIZE = 32


class SnapshotError(ValueError):
    """A file that is not an intact etcd snapshot (or Flotilla backup)."""


def rev_bytes(main: int, sub: int = 0, tombstone: bool = False) -> bytes:
    return _REV.pack(main, b"_", sub) + (b"t" if tombstone else b"")


def parse_rev(raw: bytes) -> tuple[int, int, bool]:
    """(main, sub, tombstone) of a key-bucket key."""
    if len(raw) not in (REV_BYTES, REV_BYTES + 1) or raw[8:9] != b"_" or (len(raw) > REV_BYTES and raw[-1:] != b"t"):
        raise SnapshotError(f"a key-bucket key that is not a revision: {raw.hex()}")
    main, _, sub = _REV.unpack_from(raw)
    return main, sub, len(raw) > REV_BYTES


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    id: int
    ttl: int
    remaining_ttl: int = 0


def key_items(kvs: Iterable[tuple[int, bytes]]) -> Iterator[tuple[bytes, bytes]]:
    """The key bucket of live key-values, given as (mod_revision, marshalled
    mvccpb.KeyValue) in (mod_revision, key) order: keys sharing a mod
    revision get sub-revisions 0, 1, ... in key order."""
    prev_rev = -1
    sub = 0
    for mod_revision, value in kvs:
        if mod_revision < prev_rev:
            raise ValueError(f"key-values out of revision order: {mod_revision} after {prev_rev}")
        sub = sub + 1 if mod_revision == prev_rev else 0
        prev_rev = mod_revision
        yield rev_bytes(mod_revision, sub), value


def meta_items(revision: int, consistent_index: int = 1, term: int = 1) -> list[tuple[bytes, bytes]]:
    """The meta bucket of a backup at revision: compacted at it."""
    items = [
        (CONSISTENT_INDEX, _U64.pack(consistent_index)),
        (FINISHED_COMPACT, rev_bytes(revision)),
        (SCHEDULED_COMPACT, rev_bytes(revision)),
        (TERM, _U64.pack(term)),
    ]
    return sorted(items)


def lease_items(leases: Iterable[LeaseInfo]) -> list[tuple[bytes, bytes]]:
    out = []
    for le in leases:
        if le.id <= 0:
            raise ValueError(f"lease id {le.id} cannot be stored")
        value = lease_pb2.Lease(ID=le.id, TTL=le.ttl, RemainingTTL=le.remaining_ttl).SerializeToString()
        out.append((_U64.pack(le.id), value))
    return sorted(out)


def small_buckets(revision: int, leases: Iterable[LeaseInfo]) -> dict[bytes, list[tuple[bytes, bytes]]]:
    """Every bucket but ``key``, by name."""
    out: dict[bytes, list[tuple[bytes, bytes]]] = {name: [] for name in EMPTY_BUCKETS}
    out[META_BUCKET] = meta_items(revision)
    out[LEASE_BUCKET] = lease_items(leases)
    return out


def write_snapshot(
    emit: Callable[[bytes], None], revision: int, kvs: Iterable[tuple[int, bytes]], leases: Iterable[LeaseInfo]
) -> tuple[bytes, bytes]:
    """A backup at revision as a bbolt database: the key bucket's pages (and
    every other page but the first two and the last few) through emit, as
    they are made; answers (head, tail), the pages before and after them.
    kvs: (mod_revision, marshalled KeyValue) in (mod_revision, key) order."""
    w = BoltWriter(emit)
    refs: dict[bytes, BucketRef] = {KEY_BUCKET: w.bucket(key_items(kvs))}
    for name, items in small_buckets(revision, leases).items():
        refs[name] = w.bucket(items)
    return w.finish(sorted(refs.items()))


def snapshot_bytes(revision: int, kvs: Iterable[mvccpb.KeyValue], leases: Iterable[LeaseInfo] = ()) -> bytes:
    """A whole backup file in memory (the SHA-256 trailer included): for tests and tools."""
    body: list[bytes] = []
    ordered = sorted(kvs, key=lambda kv: (kv.mod_revision, kv.key))
    head, tail = write_snapshot(body.append, revision, ((kv.mod_revision, kv.SerializeToString()) for kv in ordered), leases)
    db = head + b"".join(body) + tail
    return db + hashlib.sha256(db).digest()


# -- reading ---------------------------------------------------------------------------


def split_trailer(data: bytes | memoryview) -> tuple[memoryview, bool]:
    """(the database, whether a SHA-256 trailer was there and matched).

    etcd's rule (hasChecksum): a file whose size is 32 more than a multiple of
    512 ends with the SHA-256 of the bytes before it. A mismatch raises."""
    view = memoryview(data)
    if len(view) % 512 != SHA256_SIZE:
        return view, False
    body, digest = view[:-SHA256_SIZE], bytes(view[-SHA256_SIZE:])
    if hashlib.sha256(body).digest() != digest:
        raise SnapshotError("SHA-256 mismatch: the snapshot file is corrupt or truncated")
    return body, True


def open_db(data: bytes | memoryview) -> BoltReader:
    """The database of a snapshot file's bytes, hash and structure checked."""
    body, _ = split_trailer(data)
    try:
        reader = BoltReader(body)
        errors = reader.check()
    except BoltError as exc:
        raise SnapshotError(f"invalid database: {exc}") from None
    if errors:
        shown = "; ".join(errors[:5])
        raise SnapshotError(f"snapshot file integrity check failed: {len(errors)} errors found: {shown}")
    if reader.bucket(KEY_BUCKET) is None or reader.bucket(META_BUCKET) is None:
        raise SnapshotError("not an etcd database: no key or meta bucket")
    return reader


_CRC32C_TABLE: list[int] = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC32C_TABLE.append(_c)


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C (Castagnoli), as Go's crc32.Update with the Castagnoli table."""
    table = _CRC32C_TABLE
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class SnapshotStatus:
    hash: int
    revision: int
    total_key: int
    total_size: int

    def as_json(self) -> dict[str, int]:
        """etcdctl's `snapshot status -w json` fields."""
        return {"hash": self.hash, "revision": self.revision, "totalKey": self.total_key, "totalSize": self.total_size}


def status(reader: BoltReader) -> SnapshotStatus:
    """etcdctl snapshot status's figures: CRC-32C over every top-level
    bucket's name and items (key, value), the last key-bucket revision, the
    item count of every bucket, the database size."""
    crc = 0
    revision = 0
    total = 0
    root = reader.root()
    for name in root.names():
        b = root.bucket(name)
        assert b is not None
        crc = crc32c(name, crc)
        for k, v, _ in b.entries():
            crc = crc32c(v, crc32c(k, crc))
            if name == KEY_BUCKET:
                revision = parse_rev(k)[0]
            total += 1
    return SnapshotStatus(crc, revision, total, reader.size)


@dataclass(frozen=True, slots=True)
class SnapshotState:
    """The key space a snapshot holds at its revision."""

    revision: int
    compact_revision: int
    kvs: tuple[mvccpb.KeyValue, ...]  # live keys, in key order
    leases: tuple[LeaseInfo, ...]


def read_state(reader: BoltReader) -> SnapshotState:
    """Every key live at the snapshot's revision (the last change of each key
    in the key bucket, unless a tombstone), and the leases. The revision is
    the larger of the last change and the finished compaction (etcd's
    restore rule)."""
    key_bucket = reader.bucket(KEY_BUCKET)
    meta = reader.bucket(META_BUCKET)
    if key_bucket is None or meta is None:
        raise SnapshotError("not an etcd database: no key or meta bucket")
    latest: dict[bytes, mvccpb.KeyValue | None] = {}
    last = 0
    for k, v in key_bucket.items():
        main, _, tombstone = parse_rev(k)
        if main < last:
            raise SnapshotError(f"key bucket out of revision order at {main}")
        last = main
        kv = mvccpb.KeyValue()
        try:
            kv.ParseFromString(v)
        except Exception as exc:  # protobuf's DecodeError
            raise SnapshotError(f"revision {main}: value is not an mvccpb.KeyValue ({exc})") from None
        if not kv.key:
            raise SnapshotError(f"revision {main}: a key-value without a key")
        latest[kv.key] = None if tombstone else kv
    compact = 0
    for k, v in meta.items():
        if k == FINISHED_COMPACT:
            compact = parse_rev(v)[0]
    leases = []
    lease_bucket = reader.bucket(LEASE_BUCKET)
    if lease_bucket is not None:
        for _, v in lease_bucket.items():
            le = lease_pb2.Lease()
            try:
                le.ParseFromString(v)
            except Exception as exc:
                raise SnapshotError(f"lease bucket: not a leasepb.Lease ({exc})") from None
            leases.append(LeaseInfo(le.ID, le.TTL, le.RemainingTTL))
    kvs = tuple(kv for _, kv in sorted(latest.items()) if kv is not None)
    return SnapshotState(max(last, compact), compact, kvs, tuple(leases))
