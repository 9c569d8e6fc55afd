"""Binary encoding of shard commands (Raft log entries) and outcomes (the
dedup table). Explicit and versioned, never pickle.

Integers are big-endian: ``B`` u8, ``I`` u32, ``Q`` u64, ``q`` i64; ``bytes``
is ``I length | data``; flags are bit sets in one ``B``.

Command::

    B version=2 | B kind | Q router_id | Q seq | Q seq_floor | Q stamp | Q closed_ts | request
    B version=1 | B kind | Q router_id | Q seq | Q stamp | Q closed_ts | request

A command with seq_floor 0 is written in version 1 (byte for byte what
was written before seq_floor existed); version 1 decodes as seq_floor 0.

Requests, by kind:

    1 PUT      bytes key | bytes value | q lease | B flags (1 prev_kv, 2 ignore_value, 4 ignore_lease)
    2 DELETE   bytes key | bytes range_end | B flags (1 prev_kv)
    3 TXN      I n | n * compare | I n | n * op | I n | n * op     (op = B kind | request)
    4 COMPACT  q revision | B physical
    5 CLOSED   Q ts
    6 SPLIT    Q new_shard_id | I n | n * (I lo | I hi)
    9 PREPARE_MERGE  Q target_shard_id | Q target conf_version | Q target slot_version
   10 COMMIT_MERGE   Q source_shard_id | Q source_index | q source_revision
                     | Q source conf_version | Q source slot_version
   11 TXN_PART B phase | bytes txn_id | Q primary | B commit | q revision
               | Q slot_version | bytes path (one byte 0/1 per step)
               | B has_txn | [txn body, as kind 3]
    7 RANGE    bytes key | bytes range_end | q limit | q revision | B sort_order
               | B sort_target | B flags (1 serializable, 2 keys_only, 4 count_only)
               | q min_mod | q max_mod | q min_create | q max_create   (in txn ops only)

    compare    B target | B result | bytes key | bytes range_end
               | (VALUE: bytes operand, else q operand)

Outcome (a response or an error)::

    B version=1 | B 0 | response      or      B version=1 | B 1 | B error code | bytes message

    response   B kind | body; kinds: 1 put, 2 delete, 3 txn, 4 compaction, 5 ack, 7 range,
               8 txn part
    put        q revision | B has_prev | [kv]
    delete     q revision | q deleted | I n | n * kv
    txn        q revision | B succeeded | I n | n * response
    compaction, ack   q revision
    range      q revision | B more | q count | I n | n * kv
    txn part   q revision | B state | I n | n * B compare | I n | n * I owned op
               | I n | n * (I op | B error code) | bytes path | B has_txn | [response]
    kv         bytes key | q create | q mod | q version | q lease | bytes value

A payload with an unknown version or kind, or that is cut short or too long,
raises ``CodecError``.
"""

from __future__ import annotations

import struct

from shard.errors import ERRORS_BY_CODE, CodecError, ShardError
from shard.types import (
    AckResponse,
    ClosedTs,
    Command,
    Compare,
    CompareResult,
    CompareTarget,
    CompactionRequest,
    CompactionResponse,
    DeleteLeaseKeys,
    DeleteRangeRequest,
    DeleteRangeResponse,
    KeyValue,
    CommitMerge,
    PrepareMerge,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    Request,
    RequestOp,
    Response,
    ResponseOp,
    SortOrder,
    SortTarget,
    Split,
    TxnPart,
    TxnPartResponse,
    TxnPhase,
    TxnRequest,
    TxnResponse,
    TxnState,
)

FORMAT_VERSION = 1

K_PUT, K_DELETE, K_TXN, K_COMPACT, K_CLOSED, K_SPLIT, K_ACK, K_RANGE = 1, 2, 3, 4, 5, 6, 5, 7
K_DELETE_LEASE_KEYS = 8
K_PREPARE_MERGE, K_COMMIT_MERGE = 9, 10
K_TXN_PART = 11  # a request kind
K_TXN_PART_RESPONSE = 8  # a response kind

_HEAD = struct.Struct(">BBQQQQ")
_HEAD_V2 = struct.Struct(">BBQQQQQ")
COMMAND_VERSION = 2
_B = struct.Struct(">B")
_I = struct.Struct(">I")
_Q = struct.Struct(">Q")
_q = struct.Struct(">q")


class _Writer:
    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def u8(self, v: int) -> None:
        self.parts.append(_B.pack(v))

    def u32(self, v: int) -> None:
        self.parts.append(_I.pack(v))

    def u64(self, v: int) -> None:
        self.parts.append(_Q.pack(v))

    def i64(self, v: int) -> None:
        self.parts.append(_q.pack(v))

    def blob(self, v: bytes) -> None:
        self.parts.append(_I.pack(len(v)))
        self.parts.append(bytes(v))

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


class _Reader:
    __slots__ = ("data", "off")

    def __init__(self, data: bytes, off: int = 0) -> None:
        self.data = data
        self.off = off

    def _take(self, s: struct.Struct) -> int:
        if self.off + s.size > len(self.data):
            raise CodecError("payload cut short")
        (v,) = s.unpack_from(self.data, self.off)
        self.off += s.size
        return int(v)

    def u8(self) -> int:
        return self._take(_B)

    def u32(self) -> int:
        return self._take(_I)

    def u64(self) -> int:
        return self._take(_Q)

    def i64(self) -> int:
        return self._take(_q)

    def blob(self) -> bytes:
        n = self.u32()
        if self.off + n > len(self.data):
            raise CodecError("payload cut short")
        v = bytes(self.data[self.off : self.off + n])
        self.off += n
        return v

    def count(self) -> int:
        n = self.u32()
        if n > len(self.data) - self.off:  # every element takes at least one byte
            raise CodecError(f"element count {n} larger than the payload")
        return n

    def done(self) -> None:
        if self.off != len(self.data):
            raise CodecError(f"{len(self.data) - self.off} trailing bytes")


def _enum(cls: type, v: int) -> object:
    try:
        return cls(v)
    except ValueError as exc:
        raise CodecError(f"bad {cls.__name__} {v}") from exc


# --- requests ------------------------------------------------------------------------


def _write_request(w: _Writer, r: Request | RequestOp) -> None:
    if isinstance(r, PutRequest):
        w.blob(r.key)
        w.blob(r.value)
        w.i64(r.lease)
        w.u8(int(r.prev_kv) | int(r.ignore_value) << 1 | int(r.ignore_lease) << 2)
    elif isinstance(r, DeleteRangeRequest):
        w.blob(r.key)
        w.blob(r.range_end)
        w.u8(int(r.prev_kv))
    elif isinstance(r, RangeRequest):
        w.blob(r.key)
        w.blob(r.range_end)
        w.i64(r.limit)
        w.i64(r.revision)
        w.u8(r.sort_order)
        w.u8(r.sort_target)
        w.u8(int(r.serializable) | int(r.keys_only) << 1 | int(r.count_only) << 2)
        for v in (r.min_mod_revision, r.max_mod_revision, r.min_create_revision, r.max_create_revision):
            w.i64(v)
    elif isinstance(r, TxnRequest):
        w.u32(len(r.compare))
        for c in r.compare:
            _write_compare(w, c)
        for ops in (r.success, r.failure):
            w.u32(len(ops))
            for op in ops:
                w.u8(_request_kind(op))
                _write_request(w, op)
    elif isinstance(r, CompactionRequest):
        w.i64(r.revision)
        w.u8(int(r.physical))
    elif isinstance(r, ClosedTs):
        w.u64(r.ts)
    elif isinstance(r, Split):
        w.u64(r.new_shard_id)
        w.u32(len(r.moved))
        for lo, hi in r.moved:
            w.u32(lo)
            w.u32(hi)
    elif isinstance(r, PrepareMerge):
        w.u64(r.target_shard_id)
        w.u64(r.target_epoch[0])
        w.u64(r.target_epoch[1])
    elif isinstance(r, CommitMerge):
        w.u64(r.source_shard_id)
        w.u64(r.source_index)
        w.i64(r.source_revision)
        w.u64(r.source_epoch[0])
        w.u64(r.source_epoch[1])
    elif isinstance(r, DeleteLeaseKeys):
        w.i64(r.lease_id)
        w.u32(len(r.keys))
        for k in r.keys:
            w.blob(k)
    elif isinstance(r, TxnPart):
        w.u8(r.phase)
        w.blob(r.txn_id)
        w.u64(r.primary)
        w.u8(r.commit)
        w.i64(r.revision)
        w.u64(r.slot_version)
        _write_path(w, r.path)
        w.u8(r.txn is not None)
        if r.txn is not None:
            _write_request(w, r.txn)
    else:
        raise TypeError(f"not a shard request: {type(r).__name__}")


def _write_path(w: _Writer, path: tuple[bool, ...]) -> None:
    w.blob(bytes(path))


def _read_path(r: _Reader) -> tuple[bool, ...]:
    raw = r.blob()
    if any(b > 1 for b in raw):
        raise CodecError("bad txn path")
    return tuple(bool(b) for b in raw)


def _request_kind(r: Request | RequestOp) -> int:
    for cls, kind in _REQUEST_KINDS:
        if isinstance(r, cls):
            return kind
    raise TypeError(f"not a shard request: {type(r).__name__}")


_REQUEST_KINDS: tuple[tuple[type, int], ...] = (
    (PutRequest, K_PUT),
    (DeleteRangeRequest, K_DELETE),
    (TxnRequest, K_TXN),
    (CompactionRequest, K_COMPACT),
    (ClosedTs, K_CLOSED),
    (Split, K_SPLIT),
    (DeleteLeaseKeys, K_DELETE_LEASE_KEYS),
    (PrepareMerge, K_PREPARE_MERGE),
    (CommitMerge, K_COMMIT_MERGE),
    (TxnPart, K_TXN_PART),
    (RangeRequest, K_RANGE),
)


def _write_compare(w: _Writer, c: Compare) -> None:
    w.u8(c.target)
    w.u8(c.result)
    w.blob(c.key)
    w.blob(c.range_end)
    if c.target == CompareTarget.VALUE:
        if not isinstance(c.operand, bytes):
            raise TypeError("a VALUE compare needs a bytes operand")
        w.blob(c.operand)
    else:
        if isinstance(c.operand, bytes):
            raise TypeError(f"a {c.target.name} compare needs an int operand")
        w.i64(c.operand)


def _read_compare(r: _Reader) -> Compare:
    target = _enum(CompareTarget, r.u8())
    result = _enum(CompareResult, r.u8())
    key = r.blob()
    range_end = r.blob()
    operand: int | bytes = r.blob() if target == CompareTarget.VALUE else r.i64()
    return Compare(key, target, result, operand, range_end)  # type: ignore[arg-type]


def _read_request(r: _Reader, kind: int, depth: int = 0) -> Request | RequestOp:
    if kind == K_PUT:
        key, value, lease, flags = r.blob(), r.blob(), r.i64(), r.u8()
        return PutRequest(key, value, lease, bool(flags & 1), bool(flags & 2), bool(flags & 4))
    if kind == K_DELETE:
        key, end, flags = r.blob(), r.blob(), r.u8()
        return DeleteRangeRequest(key, end, bool(flags & 1))
    if kind == K_RANGE:
        key, end, limit, rev = r.blob(), r.blob(), r.i64(), r.i64()
        order, target, flags = _enum(SortOrder, r.u8()), _enum(SortTarget, r.u8()), r.u8()
        mins = [r.i64() for _ in range(4)]
        return RangeRequest(
            key, end, limit, rev, order, target,  # type: ignore[arg-type]
            bool(flags & 1), bool(flags & 2), bool(flags & 4), *mins,
        )
    if kind == K_TXN:
        if depth > 64:
            raise CodecError("txn nested too deep")
        compare = tuple(_read_compare(r) for _ in range(r.count()))
        branches = []
        for _ in range(2):
            ops = []
            for _ in range(r.count()):
                k = r.u8()
                if k not in (K_PUT, K_DELETE, K_RANGE, K_TXN):
                    raise CodecError(f"bad txn op kind {k}")
                ops.append(_read_request(r, k, depth + 1))
            branches.append(tuple(ops))
        return TxnRequest(compare, branches[0], branches[1])  # type: ignore[arg-type]
    if kind == K_COMPACT:
        return CompactionRequest(r.i64(), bool(r.u8()))
    if kind == K_CLOSED:
        return ClosedTs(r.u64())
    if kind == K_SPLIT:
        sid = r.u64()
        moved = tuple((r.u32(), r.u32()) for _ in range(r.count()))
        return Split(sid, moved)
    if kind == K_PREPARE_MERGE:
        target = r.u64()
        return PrepareMerge(target, (r.u64(), r.u64()))
    if kind == K_COMMIT_MERGE:
        source, index, rev = r.u64(), r.u64(), r.i64()
        return CommitMerge(source, index, rev, (r.u64(), r.u64()))
    if kind == K_DELETE_LEASE_KEYS:
        lease_id = r.i64()
        return DeleteLeaseKeys(lease_id, tuple(r.blob() for _ in range(r.count())))
    if kind == K_TXN_PART:
        phase = _enum(TxnPhase, r.u8())
        txn_id, primary, commit, revision, slot_version = r.blob(), r.u64(), bool(r.u8()), r.i64(), r.u64()
        path = _read_path(r)
        txn = _read_request(r, K_TXN, depth + 1) if r.u8() else None
        return TxnPart(phase, txn_id, primary, txn, path, commit, revision, slot_version)  # type: ignore[arg-type]
    raise CodecError(f"bad request kind {kind}")


def encode_txn(txn: TxnRequest) -> bytes:
    """A TxnRequest alone (what a txn lock keeps; shard/txn2pc.py)."""
    w = _Writer()
    _write_request(w, txn)
    return w.getvalue()


def decode_txn(data: bytes) -> TxnRequest:
    r = _Reader(data)
    txn = _read_request(r, K_TXN)
    r.done()
    assert isinstance(txn, TxnRequest)
    return txn


def encode_command(cmd: Command) -> bytes:
    kind = _request_kind(cmd.request)
    if kind == K_RANGE:
        raise TypeError("a RangeRequest is read locally, never logged on its own")
    w = _Writer()
    if cmd.seq_floor:
        w.parts.append(
            _HEAD_V2.pack(COMMAND_VERSION, kind, cmd.router_id, cmd.seq, cmd.seq_floor, cmd.stamp, cmd.closed_ts)
        )
    else:
        w.parts.append(_HEAD.pack(FORMAT_VERSION, kind, cmd.router_id, cmd.seq, cmd.stamp, cmd.closed_ts))
    _write_request(w, cmd.request)
    return w.getvalue()


def decode_command(data: bytes) -> Command:
    version = data[0] if data else None
    if version == COMMAND_VERSION:
        if len(data) < _HEAD_V2.size:
            raise CodecError("command cut short")
        _, kind, router_id, seq, seq_floor, stamp, closed_ts = _HEAD_V2.unpack_from(data)
        if not seq_floor:
            raise CodecError("a version-2 command with seq_floor 0")
        offset = _HEAD_V2.size
    else:
        if len(data) < _HEAD.size:
            raise CodecError("command cut short")
        version, kind, router_id, seq, stamp, closed_ts = _HEAD.unpack_from(data)
        if version != FORMAT_VERSION:
            raise CodecError(f"unknown command format version {version}")
        seq_floor, offset = 0, _HEAD.size
    if kind == K_RANGE:
        raise CodecError("a RangeRequest is not a command")
    r = _Reader(data, offset)
    request = _read_request(r, kind)
    r.done()
    return Command(request, router_id, seq, stamp, closed_ts, seq_floor)  # type: ignore[arg-type]


# --- outcomes ------------------------------------------------------------------------


def _write_kv(w: _Writer, kv: KeyValue) -> None:
    w.blob(kv.key)
    w.i64(kv.create_revision)
    w.i64(kv.mod_revision)
    w.i64(kv.version)
    w.i64(kv.lease)
    w.blob(kv.value)


def _read_kv(r: _Reader) -> KeyValue:
    key = r.blob()
    create, mod, version, lease = r.i64(), r.i64(), r.i64(), r.i64()
    return KeyValue(key, create, mod, version, r.blob(), lease)


def _write_response(w: _Writer, resp: Response | ResponseOp) -> None:
    if isinstance(resp, PutResponse):
        w.u8(K_PUT)
        w.i64(resp.revision)
        w.u8(resp.prev_kv is not None)
        if resp.prev_kv is not None:
            _write_kv(w, resp.prev_kv)
    elif isinstance(resp, DeleteRangeResponse):
        w.u8(K_DELETE)
        w.i64(resp.revision)
        w.i64(resp.deleted)
        w.u32(len(resp.prev_kvs))
        for kv in resp.prev_kvs:
            _write_kv(w, kv)
    elif isinstance(resp, TxnResponse):
        w.u8(K_TXN)
        w.i64(resp.revision)
        w.u8(resp.succeeded)
        w.u32(len(resp.responses))
        for sub in resp.responses:
            _write_response(w, sub)
    elif isinstance(resp, CompactionResponse):
        w.u8(K_COMPACT)
        w.i64(resp.revision)
    elif isinstance(resp, AckResponse):
        w.u8(K_ACK)
        w.i64(resp.revision)
    elif isinstance(resp, TxnPartResponse):
        w.u8(K_TXN_PART_RESPONSE)
        w.i64(resp.revision)
        w.u8(resp.state)
        w.u32(len(resp.compares))
        for c in resp.compares:
            w.u8(c)
        w.u32(len(resp.owned))
        for i in resp.owned:
            w.u32(i)
        w.u32(len(resp.failed))
        for i, code in resp.failed:
            w.u32(i)
            w.u8(code)
        _write_path(w, resp.path)
        w.u8(resp.txn is not None)
        if resp.txn is not None:
            _write_response(w, resp.txn)
    elif isinstance(resp, RangeResponse):
        w.u8(K_RANGE)
        w.i64(resp.revision)
        w.u8(resp.more)
        w.i64(resp.count)
        w.u32(len(resp.kvs))
        for kv in resp.kvs:
            _write_kv(w, kv)
    else:
        raise TypeError(f"not a shard response: {type(resp).__name__}")


def _read_response(r: _Reader, depth: int = 0) -> Response:
    kind = r.u8()
    rev = r.i64()
    if kind == K_PUT:
        return PutResponse(rev, _read_kv(r) if r.u8() else None)
    if kind == K_DELETE:
        deleted = r.i64()
        return DeleteRangeResponse(rev, deleted, tuple(_read_kv(r) for _ in range(r.count())))
    if kind == K_TXN:
        if depth > 64:
            raise CodecError("txn response nested too deep")
        ok = bool(r.u8())
        subs = tuple(_read_response(r, depth + 1) for _ in range(r.count()))
        return TxnResponse(rev, ok, subs)  # type: ignore[arg-type]
    if kind == K_COMPACT:
        return CompactionResponse(rev)
    if kind == K_ACK:
        return AckResponse(rev)
    if kind == K_RANGE:
        more, count = bool(r.u8()), r.i64()
        return RangeResponse(rev, tuple(_read_kv(r) for _ in range(r.count())), more, count)
    if kind == K_TXN_PART_RESPONSE:
        state = _enum(TxnState, r.u8())
        compares = tuple(r.u8() for _ in range(r.count()))
        owned = tuple(r.u32() for _ in range(r.count()))
        failed = tuple((r.u32(), r.u8()) for _ in range(r.count()))
        path = _read_path(r)
        txn = None
        if r.u8():
            sub = _read_response(r, depth + 1)
            if not isinstance(sub, TxnResponse):
                raise CodecError("a txn part's response is not a txn response")
            txn = sub
        return TxnPartResponse(state, rev, compares, owned, failed, path, txn)  # type: ignore[arg-type]
    raise CodecError(f"bad response kind {kind}")


def encode_outcome(outcome: Response | ShardError) -> bytes:
    w = _Writer()
    w.u8(FORMAT_VERSION)
    if isinstance(outcome, ShardError):
        w.u8(1)
        w.u8(outcome.code)
        w.blob(outcome.message.encode())
    else:
        w.u8(0)
        _write_response(w, outcome)
    return w.getvalue()


def decode_outcome(data: bytes) -> Response | ShardError:
    r = _Reader(data)
    if r.u8() != FORMAT_VERSION:
        raise CodecError("unknown outcome format version")
    if r.u8():
        code = r.u8()
        cls = ERRORS_BY_CODE.get(code)
        if cls is None:
            raise CodecError(f"unknown error code {code}")
        try:
            message = r.blob().decode()
        except UnicodeDecodeError as exc:
            raise CodecError("error message is not UTF-8") from exc
        r.done()
        err = cls(message)
        return err
    resp = _read_response(r)
    r.done()
    return resp
