"""flotilla/bench/stats.py: buckets, percentiles, merging (pure)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flotilla.bench.compare import read_spread
from flotilla.bench.stats import SUB_BUCKETS, Histogram, bucket_bounds, bucket_of, summarize


@given(st.integers(min_value=0, max_value=10**10))
def test_every_value_falls_inside_its_bucket(v: int) -> None:
    low, high = bucket_bounds(bucket_of(v))
    assert low <= v < high
    # relative width bounds the error of any percentile
    assert (high - low) <= max(1, low / SUB_BUCKETS)


def test_buckets_are_contiguous_and_increasing() -> None:
    prev_high = 0
    for i in range(0, 40 * SUB_BUCKETS):
        low, high = bucket_bounds(i)
        assert low == prev_high and high > low
        assert bucket_of(low) == i and bucket_of(high - 1) == i
        prev_high = high


def test_small_values_are_exact() -> None:
    h = Histogram()
    for v in [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]:
        h.record(v)
    assert h.percentile_us(50) == 5
    assert h.percentile_us(90) == 9
    assert h.percentile_us(100) == 10
    assert h.percentile_us(0) == 1
    s = h.summary()
    assert s.count == 10 and s.min_ms == 0.001 and s.max_ms == 0.010
    assert s.mean_ms == pytest.approx(0.0055)


def test_percentiles_are_within_two_percent_of_exact() -> None:
    rng = random.Random(9)
    values = [int(rng.lognormvariate(7.5, 0.8)) for _ in range(20_000)]  # ~2 ms median
    h = Histogram()
    for v in values:
        h.record(v)
    values.sort()
    for q in (50, 90, 99, 99.9):
        exact = values[max(0, int(-(-len(values) * q // 100)) - 1)]
        assert h.percentile_us(q) == pytest.approx(exact, rel=0.02), q
    assert h.max_us == values[-1] and h.min_us == values[0]


def test_merge_equals_recording_everything_in_one() -> None:
    rng = random.Random(3)
    parts = [[rng.randrange(50, 50_000) for _ in range(1000)] for _ in range(4)]
    hs = []
    for part in parts:
        h = Histogram()
        for v in part:
            h.record(v)
        hs.append(h)
    whole = Histogram()
    for part in parts:
        for v in part:
            whole.record(v)
    assert summarize(hs) == whole.summary()


def test_round_trip_through_a_dict_and_empty_histograms() -> None:
    h = Histogram()
    for v in (120, 130, 99_000, 5):
        h.record(v)
    assert Histogram.from_dict(h.to_dict()) == h
    empty = Histogram()
    assert empty.summary().count == 0 and empty.percentile_us(99) == 0
    h.merge(empty)
    assert h.count == 4
    empty.merge(h)
    assert empty.min_us == 5 and empty.max_us == 99_000


def test_negative_values_count_as_zero_and_bad_quantiles_raise() -> None:
    h = Histogram()
    h.record(-5)
    assert h.min_us == 0 and h.count == 1
    with pytest.raises(ValueError):
        h.percentile_us(101)


def test_profile_summary_counts_own_and_inclusive_samples_without_wrappers() -> None:
    from flotilla.bench.compare import REPO, summarize_collapsed

    text = (
        f"<module> (/x/flotilla/__main__.py:3);Handle._run (/usr/lib/python3.11/asyncio/events.py:80);"
        f"Raft.step ({REPO}/raft/core/raft.py:10);encode ({REPO}/raft/transport/codec.py:5) 3\n"
        f"<module> (/x/flotilla/__main__.py:3);Raft.step ({REPO}/raft/core/raft.py:12) 1\n"
        "garbage line\n"
    )
    s = summarize_collapsed(text)
    assert s["samples"] == 4
    assert s["own"] == [("encode (raft/transport/codec.py)", 3), ("Raft.step (raft/core/raft.py)", 1)]
    assert ("Raft.step (raft/core/raft.py)", 4) in s["inclusive"]
    assert all(not f.startswith(("<module>", "Handle._run")) for f, _ in s["inclusive"])


def test_read_spread_shares_per_store_and_the_largest_per_shard() -> None:
    before = {(1, "a"): 10, (1, "b"): 0, (2, "a"): 5}
    after = {(1, "a"): 40, (1, "b"): 30, (1, "c"): 30, (2, "a"): 5, (2, "b"): 50}
    out = read_spread(before, after)
    assert out["reads"] == 30 + 30 + 30 + 50
    assert out["store_share"] == {"a": round(30 / 140, 3), "b": round(80 / 140, 3), "c": round(30 / 140, 3)}
    assert out["max_replica_share_of_its_shard"] == 1.0  # shard 2: only b served
    assert read_spread(after, after) == {"reads": 0, "store_share": {}, "max_replica_share_of_its_shard": 0.0}
