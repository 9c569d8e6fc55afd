"""Seeded random workloads checked against a naive model of etcd's MVCC (a
full copy of the key space per revision), and replica determinism: the same
log applied on MemoryEngine and on RocksEngine, in batches of different
sizes, gives byte-identical snapshots."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from raft.core.types import Entry
from raft.storage import open_db
from shard.codec import encode_command
from shard.engine import MemoryEngine, scan
from shard import snapshot as snap
from shard.rocks import RocksEngine
from shard.statemachine import ShardStateMachine
from shard.types import (
    Command,
    CompactionRequest,
    DeleteRangeRequest,
    KeyValue,
    PutRequest,
    RangeRequest,
    Request,
    TxnRequest,
)

KEYS = [b"a", b"ab", b"b", b"{t}1", b"{t}2", b"c\x00", b"c", b"zz"]


def _random_request(rng: random.Random, revision: int, compact: int) -> Request:
    k = rng.choice(KEYS)
    roll = rng.random()
    if roll < 0.5:
        return PutRequest(k, b"v%d" % rng.randint(0, 99), lease=rng.choice([0, 0, 7]))
    if roll < 0.65:
        return DeleteRangeRequest(k)
    if roll < 0.72:
        return DeleteRangeRequest(k, rng.choice([b"b", b"c", b"\x00", b"{u"]))
    if roll < 0.92:
        a, b = rng.sample(KEYS, 2)
        return TxnRequest((), (PutRequest(a, b"t"), PutRequest(b, b"t")) if a != b else (PutRequest(a, b"t"),))
    return CompactionRequest(rng.randint(compact, max(compact, revision)) if revision else 1)


def _model_apply(history: list[dict[bytes, KeyValue]], req: Request) -> None:
    cur = dict(history[-1])
    rev = len(history)
    changed = False

    def put(key: bytes, value: bytes, lease: int) -> None:
        prev = cur.get(key)
        cur[key] = KeyValue(key, prev.create_revision if prev else rev, rev, prev.version + 1 if prev else 1, value, lease)

    def delete(key: bytes, end: bytes) -> bool:
        doomed = [k for k in cur if (k == key if not end else (k >= key if end == b"\x00" else key <= k < end))]
        for k in doomed:
            del cur[k]
        return bool(doomed)

    if isinstance(req, PutRequest):
        put(req.key, req.value, req.lease)
        changed = True
    elif isinstance(req, DeleteRangeRequest):
        changed = delete(req.key, req.range_end)
    elif isinstance(req, TxnRequest):
        for op in req.success:
            put(op.key, op.value, op.lease)
        changed = True
    if changed:
        history.append(cur)


@pytest.mark.parametrize("seed", range(6))
def test_random_workload_matches_model(shard, seed):
    rng = random.Random(seed)
    history: list[dict[bytes, KeyValue]] = [{}]  # history[r] = state at revision r
    compact = 0
    for step in range(150):
        req = _random_request(rng, shard.sm.revision, compact)
        applied = shard.apply(req)
        if isinstance(req, CompactionRequest):
            if applied.ok:
                compact = req.revision
            continue
        _model_apply(history, req)
        assert shard.sm.revision == len(history) - 1
        if step % 5 == 0:
            for _ in range(4):
                rev = rng.randint(compact, shard.sm.revision) if shard.sm.revision else 0
                a = rng.choice(KEYS)
                end = rng.choice([b"", b"\x00", b"c", b"{u", b"zzz"])
                state = history[rev] if rev else history[-1]
                want = sorted(
                    (kv for k, kv in state.items() if (k == a if not end else (k >= a if end == b"\x00" else a <= k < end))),
                    key=lambda kv: kv.key,
                )
                got = shard.range(a, end, revision=rev)
                assert list(got.kvs) == want, (seed, step, rev, a, end)
                assert got.count == len(want)


def _log(seed: int) -> list[Request]:
    rng = random.Random(seed)
    out: list[Request] = []
    revision = compact = 0
    for _ in range(120):
        req = _random_request(rng, revision, compact)
        if isinstance(req, CompactionRequest):
            compact = max(compact, req.revision)
        else:
            revision += 1  # an upper bound is enough for choosing compactions
        out.append(req)
    return out


def _replay(engine, requests: list[Request], batch: int) -> bytes:
    sm = ShardStateMachine(engine, 5, 8)
    entries = [
        Entry(1, i + 1, data=encode_command(Command(r, router_id=1 + i % 3, seq=1 + i // 3, stamp=1000 + 3 * i)))
        for i, r in enumerate(requests)
    ]
    for i in range(0, len(entries), batch):
        wb = engine.new_batch()
        chunk = entries[i : i + batch]
        sm.apply(chunk, wb)
        sm.on_applied_index(chunk[-1].index, wb)
        engine.write(wb)
    return sm.snapshot()


@pytest.mark.parametrize("seed", range(3))
def test_replicas_are_byte_identical(tmp_path: Path, seed: int):
    requests = _log(seed)
    memory_one = _replay(MemoryEngine(), requests, 1)
    memory_many = _replay(MemoryEngine(), requests, 17)
    db = open_db(tmp_path / "db")
    try:
        rocks = _replay(RocksEngine(db), requests, 7)
    finally:
        db.close()
    assert memory_one == memory_many == rocks


def test_pinned_snapshot_streams_consistently(engine):
    sm = ShardStateMachine(engine, 5, 8)
    wb = engine.new_batch()
    sm.apply([Entry(1, i + 1, data=encode_command(Command(PutRequest(b"k%03d" % i, b"x" * 50)))) for i in range(100)], wb)
    engine.write(wb)
    before = sm.snapshot()
    chunks = snap.iter_chunks(engine.snapshot(), sm.snapshot_header(), chunk_bytes=500)
    first = [next(chunks), next(chunks)]
    wb = engine.new_batch()
    sm.apply([Entry(1, 101, data=encode_command(Command(DeleteRangeRequest(b"k", b"l"))))], wb)
    engine.write(wb)
    assert b"".join(first + list(chunks)) == before
    assert sm.range(RangeRequest(b"k", b"l")).count == 0
    assert len(list(scan(engine, b"\x04", b"\x05"))) == 200  # versions and tombstones
