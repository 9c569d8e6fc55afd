"""router/kv.py: a read's header.revision is the cluster's current revision as
far as the read can vouch for it (DESIGN.md, "Reads"), never 0 once a shard
has a revision or a closed timestamp: `etcdctl make-mirror` takes its start
revision from it and panics on 0 ("unexpected revision = 0").

A fake forwarder answers each shard's range with its revision and closed
timestamp as the store would (the closed timestamp at read time in the
response's shard header); revisions here are small made-up numbers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flotillapb import store_pb2 as spb
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from router import slots
from router.cache import RoutingCache, ShardRoute
from router.forward import Answer
from router.kv import Identity, KvRouter

SLOTS = 16


@dataclass
class Shard:
    revision: int = 0  # its last write (0: never written)
    closed_ts: int = 0


@dataclass
class FakeForwarder:
    shards: dict[int, Shard]
    last_revision: int = 0
    calls: list[tuple[int, int]] = field(default_factory=list)  # (shard, revision asked)

    async def call(self, kind: str, request: Any, *, route: Any, deadline: float, mode: Any = None) -> Answer:
        assert kind == "range"
        sid = route().shard_id
        s = self.shards[sid]
        self.calls.append((sid, request.revision))
        resp = epb.RangeResponse()
        resp.header.revision = s.revision
        self.last_revision = max(self.last_revision, s.revision)  # as Forwarder does with every answer
        return Answer(resp, spb.ShardResponseHeader(node_id=1, closed_ts=s.closed_ts), 1)


def _router(shards: dict[int, Shard], seen: int = 0) -> tuple[KvRouter, FakeForwarder]:
    cache = RoutingCache(SLOTS)
    cache.update(ShardRoute(1, (1, 1), ((0, 8),), (1, 2, 3)))
    cache.update(ShardRoute(2, (1, 1), ((8, 16),), (1, 2, 3)))
    fwd = FakeForwarder(shards, last_revision=seen)
    return KvRouter(fwd, cache, Identity(1, 1)), fwd  # type: ignore[arg-type]


def _key_in(shard: int) -> bytes:
    lo, hi = (0, 8) if shard == 1 else (8, 16)
    return next(k for k in (b"k%d" % i for i in range(1000)) if lo <= slots.slot_of(k, SLOTS) < hi)


async def _get(kv: KvRouter, key: bytes, **kw: Any) -> epb.RangeResponse:
    return await kv.range(epb.RangeRequest(key=key, **kw), deadline=1e18)


async def test_a_never_written_shard_shows_the_clusters_revision_once_it_closed_it() -> None:
    # Shard 1 was written at 100 (the router saw it); shard 2 never, and closed 150.
    kv, _ = _router({1: Shard(100, 120), 2: Shard(0, 150)}, seen=100)
    assert (await _get(kv, _key_in(2))).header.revision == 100
    assert (await _get(kv, _key_in(1))).header.revision == 100


async def test_a_revision_the_shard_has_not_closed_is_not_claimed_for_it() -> None:
    # The router saw 100 elsewhere, shard 2 closed only 60: a later write of
    # shard 2 may get 61..100, which a watch from 101 would miss.
    kv, _ = _router({1: Shard(100, 120), 2: Shard(0, 60)}, seen=100)
    assert (await _get(kv, _key_in(2))).header.revision == 60
    kv, _ = _router({1: Shard(100, 120), 2: Shard(40, 0)}, seen=100)
    assert (await _get(kv, _key_in(2))).header.revision == 40  # its own revision: never less


async def test_a_router_that_saw_nothing_answers_the_shards_closed_timestamp_then_keeps_to_it() -> None:
    kv, fwd = _router({1: Shard(0, 70), 2: Shard(0, 90)})
    assert (await _get(kv, _key_in(2))).header.revision == 90
    assert fwd.last_revision == 90
    # Another never-written shard that closed less: no more than it closed; one that closed more: no more than seen.
    assert (await _get(kv, _key_in(1))).header.revision == 70
    fwd.shards[1].closed_ts = 200
    assert (await _get(kv, _key_in(1))).header.revision == 90


async def test_a_scattered_read_shows_the_clusters_revision_every_shard_closed() -> None:
    # Shard 1 at 100 (closed 110), shard 2 never written but closed 150; the router saw 130 (a write elsewhere, since).
    kv, fwd = _router({1: Shard(100, 110), 2: Shard(0, 150)}, seen=130)
    r = await kv.range(epb.RangeRequest(key=b"\x00", range_end=b"\x00"), deadline=1e18)
    assert r.header.revision == 110  # shard 1 vouches only up to 110
    assert all(rev == 0 for _, rev in fwd.calls)  # shard 2 closed 100: no second read
    fwd.shards[1].closed_ts = 300
    r = await kv.range(epb.RangeRequest(key=b"\x00", range_end=b"\x00"), deadline=1e18)
    assert r.header.revision == 130
