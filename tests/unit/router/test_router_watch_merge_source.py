"""WatchMerger.replace when a watched shard is merged into another shard the
same watch already reads: the target's stream goes on, nothing is lost or
delivered twice."""

from __future__ import annotations

from dataclasses import dataclass

from router import merge


@dataclass(frozen=True)
class KV:
    key: bytes
    mod_revision: int


@dataclass(frozen=True)
class Ev:
    kv: KV


def _ev(key: str, rev: int) -> Ev:
    return Ev(KV(key.encode(), rev))


def test_a_merged_source_hands_its_pending_events_to_the_existing_target() -> None:
    m = merge.WatchMerger(["a", "b"], start_revision=1)
    assert m.add("a", [_ev("a1", 3), _ev("a2", 9)], progress_revision=9) == []
    # b has events up to 7, pending until a's frontier passes them... which it has
    assert [e.kv.mod_revision for e in m.add("b", [_ev("b1", 5), _ev("b2", 12)], progress_revision=12)] == [3, 5, 9]
    # b (frozen at 12) merges into a: a's stream continues from its own frontier (9)
    out = m.replace("b", ["a"])
    assert out == []  # b2 (12) waits for a's frontier
    assert m.sources == ("a",)
    out = m.add("a", [_ev("b3", 15)], progress_revision=15)
    assert [e.kv.mod_revision for e in out] == [12, 15]


def test_replace_into_a_new_and_an_existing_source_gives_pending_once() -> None:
    m = merge.WatchMerger(["a", "b"], start_revision=1)
    m.add("b", [_ev("b1", 5)], progress_revision=5)
    m.replace("b", ["a", "c"])
    out = m.add("a", [], progress_revision=10) + m.add("c", [], progress_revision=10)
    assert [e.kv.mod_revision for e in out] == [5]


def test_events_read_again_after_a_merge_are_released_once() -> None:
    """b merges into a while b's event at 12 is pending; a's stream then
    restarts from its frontier (9) over the merged slots and reads b's event
    at 12 again, plus one already released (5): each goes out once."""
    m = merge.WatchMerger(["a", "b"], start_revision=1)
    m.add("a", [_ev("a1", 3)], progress_revision=9)
    assert [e.kv.mod_revision for e in m.add("b", [_ev("b1", 5), _ev("b2", 12)], progress_revision=12)] == [3, 5]
    assert m.replace("b", ["a"]) == []
    out = m.add("a", [_ev("b1", 5), _ev("b2", 12), _ev("a3", 14)], progress_revision=14)
    assert [(e.kv.key, e.kv.mod_revision) for e in out] == [(b"b2", 12), (b"a3", 14)]
    # And a late repeat of anything released is dropped.
    assert m.add("a", [_ev("a3", 14)], progress_revision=15) == []


def test_a_merged_source_behind_the_target_lowers_the_targets_frontier() -> None:
    """What a 4-store campaign found: b's stream had reported up to 5 when it
    broke; b then logged 7 and 9 before its freeze and was merged into a,
    whose stream had reported up to 20. The events at 7 and 9 are history of
    a's slots now: a's frontier drops to b's (5) and a's restarted stream
    reads them again from 6. With a's frontier left at 20 they were taken for
    repeats of released events and dropped (a watch gap)."""
    m = merge.WatchMerger(["a", "b"], start_revision=1)
    assert m.add("a", [_ev("a1", 3)], progress_revision=20) == []
    assert [e.kv.mod_revision for e in m.add("b", [_ev("b1", 5)], progress_revision=5)] == [3, 5]
    assert m.replace("b", ["a"]) == []
    assert m.sources == ("a",) and m.frontier() == 5
    out = m.add("a", [_ev("b7", 7), _ev("b9", 9), _ev("a21", 21)], progress_revision=21)
    assert [(e.kv.key, e.kv.mod_revision) for e in out] == [(b"b7", 7), (b"b9", 9), (b"a21", 21)]
