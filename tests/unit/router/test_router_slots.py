"""router/slots.py: the same slots as the store nodes, hash tags, ranges that
stay in one slot, and replica choice for reads that tolerate staleness."""

from __future__ import annotations

import pytest

from router import hlc, slots
from shard import slots as shard_slots


@pytest.mark.parametrize("n", [1, 7, 1024, 65536])
def test_slots_agree_with_the_store_nodes(n: int) -> None:
    keys = [b"", b"a", b"foo", b"{user1000}.following", b"foo{}{bar}", b"foo{{bar}}zap", b"foo{bar}{zap}", b"\xff\x00"]
    keys += [f"key-{i}".encode() for i in range(200)]
    for k in keys:
        assert slots.slot_of(k, n) == shard_slots.slot_of(k, n), k


def test_hash_tags() -> None:
    assert slots.hash_key(b"{user1000}.following") == b"user1000"
    assert slots.hash_key(b"foo{}{bar}") == b"foo{}{bar}"
    assert slots.hash_key(b"foo{{bar}}zap") == b"{bar"
    assert slots.hash_key(b"foo{bar}{zap}") == b"bar"
    assert slots.slot_of(b"{u1}/a", 1024) == slots.slot_of(b"{u1}/b", 1024)


def test_range_slot() -> None:
    assert slots.range_slot(b"k", b"", 1024) == slots.slot_of(b"k", 1024)
    assert slots.range_slot(b"{u1}/", b"{u1}0", 1024) == slots.slot_of(b"{u1}/x", 1024)
    assert slots.range_slot(b"a", b"b", 1024) is None
    assert slots.range_slot(b"{u1}", b"\x00", 1024) is None
    assert slots.range_slot(b"{", b"|", 1024) is None
    for n in range(40):
        k = b"{tag}/" + str(n).encode()
        assert slots.slot_of(k, 1024) == slots.range_slot(b"{tag}/", b"{tag}0", 1024)
    assert slots.range_slot(b"", b"", 1024) is not None


def test_equal_ranges_match_the_static_bootstrap() -> None:
    from flotilla.server import bootstrap_slots

    for n in (1, 3, 4, 7):
        assert slots.equal_ranges(n, 1024) == [bootstrap_slots(i, n, 1024) for i in range(n)]


def test_choose_replica_spreads_over_ready_replicas() -> None:
    closed = {1: 100, 2: 90, 3: 50}
    picks = [slots.choose_replica((1, 2, 3), closed, 80, leader=1, turn=t) for t in range(1, 5)]
    assert picks == [2, 1, 2, 1]
    assert slots.choose_replica((1, 2, 3), closed, 200, leader=3, turn=1) == 3  # nobody ready: the leader
    assert slots.choose_replica((1, 2, 3), closed, 200, leader=0, turn=4) == 2  # no leader known: any, in turn
    assert {slots.choose_replica((1, 2, 3), {}, 0, leader=1, turn=t) for t in range(3)} == {1, 2, 3}


def test_choose_replica_probes_a_replica_believed_behind_now_and_then() -> None:
    """Without the probe, a follower seen behind once is never asked again:
    its closed timestamp in the router's cache never moves, and the leader
    serves every stale read."""
    closed = {1: 100, 2: 100, 3: 50}
    picks = [slots.choose_replica((1, 2, 3), closed, 80, leader=1, turn=t) for t in range(10 * slots.PROBE_EVERY)]
    assert picks.count(3) == 10 and all(picks[t] == 3 for t in range(0, len(picks), slots.PROBE_EVERY))
    # every follower behind: the probes take them in turn; the leader serves the rest
    behind = {1: 100, 2: 10, 3: 10}
    picks = [slots.choose_replica((1, 2, 3), behind, 80, leader=1, turn=t) for t in range(4 * slots.PROBE_EVERY)]
    assert (picks.count(2), picks.count(3), picks.count(1)) == (2, 2, len(picks) - 4)
    # a replica not heard from yet is tried (it says so if it is behind)
    assert [slots.choose_replica((1, 2, 3), {1: 100}, 80, leader=1, turn=t) for t in (1, 2, 3)] == [2, 3, 1]
    # the leader is never "probed"; serializable reads (needed 0) never probe
    assert slots.choose_replica((1, 2), {1: 0, 2: 100}, 80, leader=1, turn=0) == 2
    assert [slots.choose_replica((1, 2, 3), {}, 0, leader=1, turn=t) for t in (0, 32, 64)] == [1, 3, 2]


def test_hlc_grows_and_follows_observations() -> None:
    c = hlc.Hlc()
    t = 1_700_000_000_000
    a = c.now(t + 1000)
    b = c.now(t + 1000)
    assert b == a + 1 and hlc.to_ms(a) == t + 1000
    c.observe(hlc.from_ms(t + 5000))
    assert c.now(t + 1000) > hlc.from_ms(t + 5000)
