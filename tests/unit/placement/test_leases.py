"""Lease expiry in the leader's memory (pure, driven by plain clock readings)."""

from __future__ import annotations

import pytest

from placement.leases import ExpiryTable, clamp_ttl, min_lease_ttl_s


@pytest.mark.parametrize(
    "election_ticks,tick_ms,expected",
    [
        (10, 100, 2),   # etcd's defaults: (3*10/2)*100 ms = 1.5 s -> 2 s
        (10, 200, 3),   # 3.0 s exactly
        (5, 100, 1),    # (15//2=7)*100 ms = 0.7 s -> 1 s
        (7, 100, 1),    # (21//2=10)*100 ms = 1.0 s exactly
        (50, 100, 8),   # 7.5 s -> 8 s
        (1, 1, 1),      # never below 1 s
    ],
)
def test_min_lease_ttl_is_etcds_rule(election_ticks: int, tick_ms: int, expected: int) -> None:
    assert min_lease_ttl_s(election_ticks, tick_ms) == expected


def test_clamp_ttl() -> None:
    assert clamp_ttl(1, 2) == 2
    assert clamp_ttl(-5, 2) == 2
    assert clamp_ttl(60, 2) == 60


def test_track_keep_alive_expire() -> None:
    t = ExpiryTable()
    t.track(1, 10, now=100.0)
    t.track(2, 5, now=100.0)
    assert t.expired(104.9) == []
    assert t.remaining_s(2, 103.0) == pytest.approx(2.0)
    assert t.keep_alive(2, 104.0) == 5  # renewed to now + 5
    assert t.expired(108.9) == []
    assert t.expired(109.0) == [2]
    assert t.expired(110.0) == [2, 1]  # earliest deadline first
    # an expired lease cannot be kept alive
    assert t.keep_alive(2, 111.0) is None
    assert t.keep_alive(99, 111.0) is None


def test_sync_renews_untracked_to_full_ttl_and_forgets_gone() -> None:
    t = ExpiryTable()
    t.track(1, 10, now=0.0)
    t.track(2, 10, now=0.0)
    # a new leader (or a grant it did not see): lease 3 starts at now + TTL;
    # lease 2 is gone from the state; lease 1 keeps its deadline
    t.sync({1: 10, 3: 4}, now=5.0)
    assert 2 not in t and len(t) == 2
    assert t.remaining_s(1, 5.0) == pytest.approx(5.0)
    assert t.remaining_s(3, 5.0) == pytest.approx(4.0)
    assert t.granted_ttl(3) == 4


def test_new_leader_renews_everything() -> None:
    old = ExpiryTable()
    old.track(1, 10, now=0.0)
    # old leader dies at 9.9 s: lease 1 had 0.1 s left
    new = ExpiryTable()
    new.sync({1: 10}, now=12.0)
    assert new.expired(21.9) == []
    assert new.expired(22.0) == [1]


def test_clear_and_forget() -> None:
    t = ExpiryTable()
    t.track(1, 1, now=0.0)
    t.forget(1)
    assert t.expired(10.0) == [] and t.remaining_s(1, 0.0) is None
    t.track(2, 1, now=0.0)
    t.clear()
    assert len(t) == 0
