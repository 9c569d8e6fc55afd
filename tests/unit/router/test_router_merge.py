"""router/merge.py: a range over many shards answers as one range over all
their keys would (checked against a single sorted list for every option),
and watch events are released in revision order up to the least frontier."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

import pytest

from router import merge


@dataclass(frozen=True)
class KV:
    key: bytes
    value: bytes
    version: int
    create_revision: int
    mod_revision: int


@dataclass(frozen=True)
class Ev:
    kv: KV
    tag: str = field(default="", compare=False)


def _evaluate(kvs: list[KV], limit: int, order: int, target: int) -> merge.ShardRange:
    """One shard (or the whole store) answering etcd's rules."""
    kvs = sorted(kvs, key=lambda kv: kv.key)
    eff = merge.effective_order(order, target)
    attr = {0: "key", 1: "version", 2: "create_revision", 3: "mod_revision", 4: "value"}[target]
    if eff == merge.SORT_DESCEND and target == merge.TARGET_KEY:
        kvs.reverse()
    elif eff != merge.SORT_NONE:
        kvs.sort(key=lambda kv: getattr(kv, attr), reverse=eff == merge.SORT_DESCEND)
    more = limit > 0 and len(kvs) > limit
    return merge.ShardRange(kvs[:limit] if limit > 0 else kvs, more, len(kvs))


def _store(seed: int, n: int = 40) -> list[KV]:
    rng = random.Random(seed)
    return [
        KV(f"k{i:03d}".encode(), bytes([rng.randrange(97, 101)]), rng.randrange(1, 4), rng.randrange(1, 9), rng.randrange(1, 9))
        for i in range(n)
    ]


@pytest.mark.parametrize("limit", [0, 1, 5, 39, 40, 100])
@pytest.mark.parametrize("order", [merge.SORT_NONE, merge.SORT_ASCEND, merge.SORT_DESCEND])
@pytest.mark.parametrize("target", [0, 1, 2, 3, 4])
def test_scattered_range_equals_one_range(limit: int, order: int, target: int) -> None:
    for seed in range(5):
        kvs = _store(seed)
        rng = random.Random(seed)
        shards: list[list[KV]] = [[] for _ in range(4)]
        for kv in kvs:
            shards[rng.randrange(4)].append(kv)
        parts = [_evaluate(s, limit, order, target) for s in shards]
        got = merge.merge_ranges(parts, limit=limit, sort_order=order, sort_target=target)
        want = _evaluate(kvs, limit, order, target)
        assert got.count == want.count == len(kvs)
        assert got.more == want.more
        assert [kv.key for kv in got.kvs] == [kv.key for kv in want.kvs]


def test_count_only_sums_counts() -> None:
    got = merge.merge_ranges([merge.ShardRange((), False, 3), merge.ShardRange((), False, 4)], limit=0, sort_order=0, sort_target=0)
    assert got.count == 7 and got.kvs == () and not got.more


def test_a_shard_that_cut_its_answer_makes_more_true() -> None:
    a = merge.ShardRange((KV(b"a", b"", 1, 1, 1),), True, 2)
    b = merge.ShardRange((), False, 0)
    assert merge.merge_ranges([a, b], limit=1, sort_order=0, sort_target=0).more


def _ev(key: str, rev: int) -> Ev:
    return Ev(KV(key.encode(), b"", 1, rev, rev))


def test_watch_releases_up_to_the_least_frontier_in_revision_order() -> None:
    m = merge.WatchMerger(["s1", "s2"], start_revision=10)
    assert m.add("s1", [_ev("a", 12), _ev("b", 15)]) == []  # s2 has said nothing past 9
    out = m.add("s2", [_ev("c", 11)], progress_revision=13)
    assert [e.kv.mod_revision for e in out] == [11, 12]
    out = m.add("s2", [], progress_revision=20)
    assert [e.kv.mod_revision for e in out] == [15]
    assert m.frontier() == 15
    out = m.add("s1", [], progress_revision=30)
    assert out == [] and m.frontier() == 20


def test_watch_keeps_a_revision_together_and_in_order() -> None:
    m = merge.WatchMerger(["s1", "s2"], start_revision=1)
    m.add("s1", [_ev("x", 5), _ev("y", 5)])
    out = m.add("s2", [_ev("z", 3)], progress_revision=9)
    assert [(e.kv.key, e.kv.mod_revision) for e in out] == [(b"z", 3), (b"x", 5), (b"y", 5)]


def test_watch_from_now_waits_for_every_shard() -> None:
    m = merge.WatchMerger(["s1", "s2", "s3"], start_revision=0)
    assert m.add("s1", [_ev("a", 100)]) == []
    assert m.add("s2", [], progress_revision=150) == []
    assert [e.kv.key for e in m.add("s3", [], progress_revision=120)] == [b"a"]


def test_watch_merge_of_random_streams_is_sorted_and_complete() -> None:
    rng = random.Random(7)
    streams = {s: sorted(rng.sample(range(1, 500), 40)) for s in ("a", "b", "c")}
    # Revisions are unique across shards (HLC values), so drop collisions.
    seen: set[int] = set()
    for s in streams:
        streams[s] = [r for r in streams[s] if not (r in seen or seen.add(r))]  # type: ignore[func-returns-value]
    m = merge.WatchMerger(list(streams), start_revision=1)
    pos = {s: 0 for s in streams}
    out: list[int] = []
    for step in itertools.count():
        live = [s for s in streams if pos[s] < len(streams[s])]
        if not live:
            break
        s = rng.choice(live)
        n = rng.randint(1, 3)
        batch = streams[s][pos[s] : pos[s] + n]
        pos[s] += n
        out += [e.kv.mod_revision for e in m.add(s, [_ev(s, r) for r in batch], progress_revision=batch[-1])]
        assert step < 10_000
    for s in streams:
        out += [e.kv.mod_revision for e in m.add(s, [], progress_revision=1000)]
    assert out == sorted(seen)


def test_watch_replace_hands_a_split_shard_to_its_successors() -> None:
    m = merge.WatchMerger(["s1", "s2"], start_revision=1)
    m.add("s1", [_ev("a", 5)], progress_revision=8)
    m.replace("s1", ["s1", "s3"])
    assert m.frontier() == 0 or m.frontier() <= 8
    out = m.add("s2", [], progress_revision=9)
    assert [e.kv.mod_revision for e in out] == [5]
    assert set(m.sources) == {"s1", "s2", "s3"}
