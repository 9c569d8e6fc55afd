"""The revision encoding (shard/hlc.py, issue #17): revisions stay below
2^53 for more than a century at any realistic write rate, keep their order
(strictly growing, real time across clocks), convert to and from
milliseconds in one place that routers share, and a shard written with the
pre-#17 encoding (unix_ms << 16) is refused with a message naming the change."""

from __future__ import annotations

import random
import struct
from datetime import datetime, timezone
from pathlib import Path

import pytest

from raft.core.errors import CodecError
from raft.storage import open_db
from router import hlc as router_hlc
from shard import hlc, keys
from shard.rocks import RocksEngine
from shard.statemachine import ShardStateMachine
from shard.types import PutRequest
from tests.unit.shard.conftest import SHARD_ID, SLOTS, ShardHarness

SAFE = 1 << 53  # the least integer a double may not hold exactly
MS_PER_YEAR = 365.25 * 24 * 3600 * 1000


def unix_ms(year: int, month: int = 1, day: int = 1) -> int:
    return int(datetime(year, month, day, tzinfo=timezone.utc).timestamp() * 1000)


def test_the_encoding_lasts_beyond_a_century_from_now() -> None:
    assert hlc.EPOCH_MS == unix_ms(2020)
    assert hlc.make(hlc.LAST_WALL_MS, hlc.LOGICAL_MASK) == SAFE - 1
    assert datetime.fromtimestamp(hlc.LAST_WALL_MS / 1000, timezone.utc).year == 2159
    assert (hlc.LAST_WALL_MS - unix_ms(2026)) / MS_PER_YEAR > 130
    # at a revision a century from now, there is still room for every logical value
    assert hlc.make(unix_ms(2126), hlc.LOGICAL_MASK) < SAFE
    # what issue #17 was about: a 2026 revision of the old encoding was not exact as a double
    assert (unix_ms(2026) << 16) > SAFE and hlc.from_ms(unix_ms(2026)) < SAFE


@pytest.mark.parametrize("ms", [hlc.EPOCH_MS, hlc.EPOCH_MS + 1, 1_700_000_000_000, unix_ms(2026, 7, 1) + 123, hlc.LAST_WALL_MS])
def test_conversions_round_trip(ms: int) -> None:
    for logical in (0, 1, hlc.LOGICAL_MASK):
        rev = hlc.make(ms, logical)
        assert (hlc.wall_ms_of(rev), hlc.logical_of(rev)) == (ms, logical)
    assert hlc.from_ms(ms) == hlc.make(ms)
    assert hlc.to_ms(hlc.from_ms(ms)) == ms
    assert hlc.from_ms(ms + 1) - hlc.from_ms(ms) == hlc.span(1) == 1 << hlc.LOGICAL_BITS
    # a bounded-staleness bound: "now - 5 s" either way round
    assert hlc.from_ms(ms + 5000) - hlc.span(5000) == hlc.from_ms(ms)


def test_bad_parts_and_pre_epoch_clocks() -> None:
    with pytest.raises(ValueError):
        hlc.make(hlc.EPOCH_MS, hlc.LOGICAL_MASK + 1)
    with pytest.raises(ValueError):
        hlc.make(hlc.EPOCH_MS - 1)
    # a wall clock before the epoch counts as the epoch: revisions still grow
    assert hlc.from_ms(0) == hlc.from_ms(hlc.EPOCH_MS - 1) == 0
    c = hlc.HybridClock()
    assert [c.now(1000), c.now(999), c.now(hlc.EPOCH_MS + 1)] == [1, 2, hlc.span(1)]


def test_router_converts_as_the_stores_do() -> None:
    """The router's bounded-staleness bound (router/forward.py) compares with
    the stores' closed timestamps: both convert through shard/hlc.py."""
    assert router_hlc.from_ms is hlc.from_ms and router_hlc.to_ms is hlc.wall_ms_of
    assert router_hlc.LOGICAL_BITS == hlc.LOGICAL_BITS
    r, s = router_hlc.Hlc(), hlc.HybridClock()
    rng = random.Random(17)
    ms = unix_ms(2026)
    for _ in range(2000):
        ms += rng.choice((0, 0, 1, -3, 40))
        assert r.now(ms) == s.now(ms)
        if rng.random() < 0.1:
            seen = hlc.from_ms(ms + rng.randrange(5)) + rng.randrange(3000)
            r.observe(seen)
            s.update(seen)


def test_clocks_ignore_timestamps_of_the_old_encoding() -> None:
    """A request or answer from a process of the pre-#17 build carries an HLC
    near 1.2e17: it must not carry a clock past 2^53."""
    now = hlc.from_ms(unix_ms(2026))
    old = unix_ms(2026) << 16
    s, r = hlc.HybridClock(now), router_hlc.Hlc()
    r.last = now
    assert s.update(old) == now and s.now(unix_ms(2026)) == now + 1
    r.observe(old)
    assert r.last == now and r.now(unix_ms(2026)) == now + 1
    assert s.update(hlc.MAX_SAFE_REVISION) == hlc.MAX_SAFE_REVISION


def test_logical_overflow_carries_into_the_millisecond() -> None:
    ms = unix_ms(2026, 3, 1)
    c = hlc.HybridClock()
    burst = [c.now(ms) for _ in range(5000)]  # 5000 in one millisecond: more than 2048
    assert burst == list(range(hlc.from_ms(ms), hlc.from_ms(ms) + 5000))
    assert hlc.wall_ms_of(burst[-1]) == ms + 2  # the clock ran 2 ms ahead of the wall
    assert c.now(ms + 1) == burst[-1] + 1  # and keeps counting while ahead
    assert c.now(ms + 3) == hlc.make(ms + 3)  # then falls back in step with the wall clock


def simulate_year(start_ms: int, rate_per_s: int, rng: random.Random) -> tuple[int, int]:
    """A year of two store nodes' clocks and a router's, at rate_per_s
    revisions a second per shard, sampled: at each sampled millisecond (1 to 3
    hours apart, so the year is crossed in big jumps) each shard stamps
    and applies the writes of that millisecond, and some samples carry a
    burst larger than the logical part holds. Checks every step; returns
    (the last revision, the largest lead of a revision over its wall clock in ms)."""
    per_ms = rate_per_s // 1000
    nodes = [hlc.HybridClock(), hlc.HybridClock()]
    router = router_hlc.Hlc()
    prev = [0, 0]  # each shard's revision
    closed = [0, 0]
    last_global = 0
    lead = 0
    ms = start_ms
    end = start_ms + int(MS_PER_YEAR)
    while ms < end:
        wall_floor = hlc.from_ms(ms)
        for shard in (0, 1):
            clock = nodes[shard]
            clock.update(router.last)  # the request carries the router's HLC
            n = per_ms * (30 if rng.random() < 0.02 else 1)  # now and then, 3000 in one ms: past 2048
            for _ in range(n):
                stamp = clock.now(ms)
                rev = hlc.next_revision(prev[shard], stamp, closed[shard])
                assert rev > prev[shard]  # strictly growing per shard (so per key)
                prev[shard] = rev
                clock.update(rev)
            closed[shard] = max(closed[shard], clock.now(ms) - 1)  # the shard closes up to now
            router.observe(prev[shard])  # the answer advances the router's clock
            # real-time order: everything of this millisecond is above everything of earlier ones
            assert prev[shard] >= wall_floor and prev[shard] > last_global
            lead = max(lead, hlc.wall_ms_of(prev[shard]) - ms)
        last_global = max(prev)
        assert last_global < SAFE
        ms += rng.randrange(3_600_000, 10_800_000)
    return last_global, lead


@pytest.mark.parametrize("start", [unix_ms(2026), unix_ms(2125)])
def test_a_year_at_a_high_write_rate_stays_below_2_53(start: int) -> None:
    """100,000 revisions/s per shard, bursts of 3,000,000/s: a year from
    now, and a year a century from now, stay below 2^53 and strictly growing."""
    last, lead = simulate_year(start, 100_000, random.Random(start))
    assert last < SAFE
    assert hlc.wall_ms_of(last) < start + int(MS_PER_YEAR) + 10
    assert 1 <= lead <= 10  # bursts ran the clocks a few ms ahead of the wall, never far


# --- data directories of the pre-#17 encoding ------------------------------------------------


def test_state_record_carries_the_encoding() -> None:
    st = keys.ShardState(3, hlc.from_ms(unix_ms(2026)), 0, hlc.from_ms(unix_ms(2026)) + 9)
    raw = keys.encode_state(st)
    assert raw[0] == keys.STATE_VERSION == 2
    assert keys.decode_state(raw) == st


def test_a_shard_of_the_pre_17_encoding_is_refused(tmp_path: Path) -> None:
    """A real RocksDB written as the previous build did: revisions unix_ms << 16
    and a version-1 STATE record. Reopening the shard refuses it, naming the
    change and what to do."""
    db = open_db(tmp_path / "db")
    try:
        engine = RocksEngine(db)
        shard = ShardHarness(engine, ShardStateMachine(engine, SHARD_ID, SLOTS))
        old_rev = unix_ms(2026) << 16
        assert shard.apply(PutRequest(b"k", b"v"), stamp=old_rev, closed_ts=old_rev - 1).revision == old_rev
        raw = engine.get(keys.state_key(SHARD_ID))
        assert raw is not None and raw[0] == keys.STATE_VERSION
        wb = engine.new_batch()
        wb.put(keys.state_key(SHARD_ID), bytes([keys.STATE_VERSION_PRE_17]) + raw[1:])  # what the old build wrote
        engine.write(wb)
        assert struct.unpack(">BQQQQ", engine.get(keys.state_key(SHARD_ID)))[2] == old_rev
        with pytest.raises(CodecError, match=r"pre-#17 revision encoding \(unix_ms << 16.*new data directory"):
            ShardStateMachine(engine, SHARD_ID)
    finally:
        db.close()


def test_shards_led_by_different_nodes_never_assign_the_same_revision() -> None:
    """Two store nodes (lanes 5 and 6) lead a shard each and write in the
    same milliseconds, with stale stamps and closed timestamps in the mix:
    no revision of one shard is ever a revision of the other (etcd's
    revisions are unique, and clientv3's Mutex and Election depend on it:
    two lock keys with one create revision both held the lock). Without
    lanes the same run collides within the first millisecond."""
    ms = unix_ms(2026, 5, 1)
    rng = random.Random(5)
    nodes = [hlc.HybridClock(lane=101 % hlc.LANES), hlc.HybridClock(lane=102 % hlc.LANES)]
    prev, closed = [0, 0], [0, 0]
    seen: list[set[int]] = [set(), set()]
    for step in range(20_000):
        ms += rng.choice((0, 0, 0, 1))
        shard = rng.randrange(2)
        clock = nodes[shard]
        stamp = clock.now(ms)
        if rng.random() < 0.05:
            stamp -= rng.randrange(1, 40) * hlc.LANES  # a stale stamp (a new leader's clock behind), same lane
        if rng.random() < 0.05:
            closed[shard] = max(closed[shard], stamp + rng.randrange(50))
        rev = hlc.next_revision(prev[shard], stamp, closed[shard])
        assert rev > prev[shard] and rev >= stamp and rev > closed[shard] and hlc.lane_of(rev) == hlc.lane_of(stamp)
        prev[shard] = rev
        clock.update(rev)
        nodes[1 - shard].update(rev if rng.random() < 0.5 else 0)  # causality travels, sometimes
        seen[shard].add(rev)
    assert not seen[0] & seen[1]
    # the same run without lanes: ties
    plain = [hlc.HybridClock(), hlc.HybridClock()]
    assert plain[0].now(ms + 10) == plain[1].now(ms + 10)


def test_a_lane_clock_stays_in_its_lane_and_carries_past_128_stamps_a_millisecond() -> None:
    ms = unix_ms(2026, 6, 1)
    c = hlc.HybridClock(lane=7)
    burst = [c.now(ms) for _ in range(300)]
    assert all(hlc.lane_of(t) == 7 for t in burst) and burst == sorted(set(burst))
    per_ms = 1 << (hlc.LOGICAL_BITS - hlc.LANE_BITS)
    assert per_ms == 128 and hlc.wall_ms_of(burst[per_ms - 1]) == ms and hlc.wall_ms_of(burst[per_ms]) == ms + 1
