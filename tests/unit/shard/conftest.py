"""Fixtures of the shard tests: every engine-backed test runs twice, against
MemoryEngine and against RocksEngine over a real RocksDB in tmp_path, to
show the real engine behaves exactly like its in-memory twin.

``shard`` is a ``ShardHarness``: it proposes requests as log entries (one
entry per apply call unless batched), writes each apply batch to the
engine as the runtime does, and unwraps outcomes. With the default stamp of
0 and no closed timestamp, revisions count 1, 2, 3... like etcd's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from raft.core.types import Entry
from shard.codec import encode_command
from shard.engine import KvEngine, MemoryEngine
from shard.errors import ShardError
from shard.statemachine import Applied, ShardStateMachine
from shard.types import (
    Command,
    DeleteRangeRequest,
    DeleteRangeResponse,
    KeyValue,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    Request,
    Response,
    TxnRequest,
    TxnResponse,
)

SLOTS = 16
SHARD_ID = 7


class ShardHarness:
    def __init__(self, engine: KvEngine, sm: ShardStateMachine) -> None:
        self.engine = engine
        self.sm = sm
        self.index = sm.applied_index()

    def entry(self, request: Request, **header: int) -> Entry:
        self.index += 1
        return Entry(term=1, index=self.index, data=encode_command(Command(request, **header)))

    def apply_entries(self, entries: Sequence[Entry]) -> list[Applied]:
        wb = self.engine.new_batch()
        out = self.sm.apply(entries, wb)
        self.sm.on_applied_index(entries[-1].index, wb)
        self.engine.write(wb)
        assert all(isinstance(a, Applied) for a in out)
        return out  # type: ignore[return-value]

    def apply(self, request: Request, **header: int) -> Applied:
        return self.apply_entries([self.entry(request, **header)])[0]

    def ok(self, request: Request, **header: int) -> Response:
        a = self.apply(request, **header)
        if isinstance(a.outcome, ShardError):
            raise a.outcome
        return a.outcome

    def error(self, request: Request, **header: int) -> ShardError:
        a = self.apply(request, **header)
        assert isinstance(a.outcome, ShardError), a.outcome
        return a.outcome

    # shorthands
    def put(self, key: bytes, value: bytes = b"", **kw: Any) -> PutResponse:
        resp = self.ok(PutRequest(key, value, **kw))
        assert isinstance(resp, PutResponse)
        return resp

    def delete(self, key: bytes, range_end: bytes = b"", prev_kv: bool = False) -> DeleteRangeResponse:
        resp = self.ok(DeleteRangeRequest(key, range_end, prev_kv))
        assert isinstance(resp, DeleteRangeResponse)
        return resp

    def txn(self, compare: Sequence[Any] = (), success: Sequence[Any] = (), failure: Sequence[Any] = ()) -> TxnResponse:
        resp = self.ok(TxnRequest(tuple(compare), tuple(success), tuple(failure)))
        assert isinstance(resp, TxnResponse)
        return resp

    def range(self, key: bytes, range_end: bytes = b"", **kw: Any) -> RangeResponse:
        return self.sm.range(RangeRequest(key, range_end, **kw))

    def get(self, key: bytes, revision: int = 0) -> KeyValue | None:
        kvs = self.range(key, revision=revision).kvs
        return kvs[0] if kvs else None

    def keys(self, key: bytes = b"\x00", range_end: bytes = b"\x00", **kw: Any) -> list[bytes]:
        return [kv.key for kv in self.range(key, range_end, **kw).kvs]

    def reopen(self) -> ShardHarness:
        """A fresh state machine over the same engine (a restart)."""
        return ShardHarness(self.engine, ShardStateMachine(self.engine, self.sm.shard_id))


@pytest.fixture(params=["memory", "rocks"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KvEngine]:
    if request.param == "memory":
        yield MemoryEngine()
        return
    from raft.storage import open_db
    from shard.rocks import RocksEngine

    db = open_db(tmp_path / "db")
    try:
        yield RocksEngine(db)
    finally:
        db.close()


@pytest.fixture
def shard(engine: KvEngine) -> ShardHarness:
    return ShardHarness(engine, ShardStateMachine(engine, SHARD_ID, SLOTS))


@pytest.fixture
def mem_shard() -> ShardHarness:
    """Memory engine only: for tests that are about pure logic, not storage."""
    engine = MemoryEngine()
    return ShardHarness(engine, ShardStateMachine(engine, SHARD_ID, SLOTS))
