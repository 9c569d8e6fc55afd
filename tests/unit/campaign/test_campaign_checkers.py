"""The campaign's history checkers on hand-made histories: each property
holds on a good history and is reported on one that breaks it."""

from __future__ import annotations

from flotilla.campaign.checkers import (
    check_acked_writes,
    check_all,
    check_convergence,
    check_double_apply,
    check_linearizable,
    check_staleness,
    check_watches,
)
from flotilla.campaign.history import History, OpKind, Outcome, WatchEvent, WatchStream

K = b"k"


def _put(h: History, v: str, a: float, b: float, rev: int, key: bytes = K, outcome: Outcome = Outcome.OK) -> None:
    op = h.invoke(0, OpKind.PUT, key, a, int(a * 1000), value=v.encode())
    h.complete(op, b, outcome, revision=rev)


def _get(h: History, v: str | None, a: float, b: float, rev: int, kind: OpKind = OpKind.GET, bound_ms: int = 0) -> None:
    op = h.invoke(1, kind, K, a, int(a * 1000), bound_ms=bound_ms)
    h.complete(op, b, Outcome.OK, output=None if v is None else v.encode(), revision=rev)


def _delete(h: History, a: float, b: float, rev: int, deleted: int = 1) -> None:
    op = h.invoke(0, OpKind.DELETE, K, a, int(a * 1000))
    h.complete(op, b, Outcome.OK, output=deleted, revision=rev)


def test_linearizable_history_passes_and_stale_read_fails() -> None:
    h = History()
    _put(h, "a", 0, 1, 10)
    _put(h, "b", 2, 3, 20)
    _get(h, "b", 4, 5, 20)
    assert check_linearizable(h) == []
    _get(h, "a", 6, 7, 10)
    (v,) = check_linearizable(h)
    assert v.kind == "linearizability" and v.key == K


def test_unknown_reads_are_ignored_and_unknown_writes_may_apply() -> None:
    h = History()
    _put(h, "a", 0, 1, 10)
    _put(h, "b", 2, 3, 0, outcome=Outcome.UNKNOWN)
    op = h.invoke(1, OpKind.GET, K, 4, 4000)
    h.complete(op, 5, Outcome.UNKNOWN, error="DEADLINE_EXCEEDED")
    _get(h, "b", 6, 7, 20)
    assert check_linearizable(h) == []


def test_lin_budget_exhaustion_is_a_violation() -> None:
    h = History()
    for i in range(14):
        _put(h, f"v{i}", 0, 100, i + 1)
    _get(h, "never", 101, 102, 0)
    (v,) = check_linearizable(h, max_steps=200)
    assert v.kind == "lin_timeout"


def test_acked_write_loss() -> None:
    h = History()
    _put(h, "a", 0, 1, 10)
    _put(h, "b", 2, 3, 20)
    h.final_reads[K] = (b"b", 20)
    assert check_acked_writes(h) == []
    h.final_reads[K] = (b"a", 10)
    (v,) = check_acked_writes(h)
    assert v.kind == "acked_write_loss" and "older than acked" in v.detail
    h.final_reads[K] = (None, 0)
    (v,) = check_acked_writes(h)
    assert "found no key" in v.detail
    _delete(h, 4, 5, 30)
    assert check_acked_writes(h) == []
    h.final_reads.clear()
    (v,) = check_acked_writes(h)
    assert "no final read" in v.detail


def test_double_apply_seen_in_reads_or_watch() -> None:
    h = History()
    _put(h, "a", 0, 1, 10)
    _get(h, "a", 2, 3, 10)
    assert check_double_apply(h) == []
    h.watch_events.append(WatchEvent(0, 1, "put", K, b"a", 15, None, 0))
    (v,) = check_double_apply(h)
    assert v.kind == "double_apply" and "[10, 15]" in v.detail


def _ev(rev: int, value: str, prev: tuple[str, int] | None = None, kind: str = "put") -> WatchEvent:
    return WatchEvent(0, 1, kind, K, value.encode(), rev, None if prev is None else prev[0].encode(), prev[1] if prev else 0)


def _watch_history() -> History:
    h = History()
    _put(h, "a", 0, 1, 10)
    _put(h, "b", 2, 3, 20)
    _put(h, "c", 4, 5, 30)
    h.watch_streams.append(WatchStream(0, 1, 1, high_water=30))
    return h


def test_watch_good_stream_passes() -> None:
    h = _watch_history()
    h.watch_events += [_ev(10, "a"), _ev(20, "b", ("a", 10)), _ev(30, "c", ("b", 20))]
    assert check_watches(h) == []


def test_watch_gap_order_duplicate_prev_kv() -> None:
    h = _watch_history()
    h.watch_events += [_ev(10, "a"), _ev(30, "c", ("a", 10))]
    (v,) = check_watches(h)
    assert v.kind == "watch_gap" and "rev 20" in v.detail

    h = _watch_history()
    h.watch_events += [_ev(10, "a"), _ev(30, "c", ("b", 20)), _ev(20, "b", ("a", 10))]
    kinds = sorted(v.kind for v in check_watches(h))
    assert "watch_order" in kinds

    h = _watch_history()
    h.watch_events += [_ev(10, "a"), _ev(20, "b", ("a", 10)), _ev(20, "b", ("a", 10)), _ev(30, "c", ("b", 20))]
    assert [v.kind for v in check_watches(h)] == ["watch_duplicate"]

    h = _watch_history()
    h.watch_events += [_ev(10, "a"), _ev(20, "b", ("z", 5)), _ev(30, "c", ("b", 20))]
    assert [v.kind for v in check_watches(h)] == ["watch_prev_kv"]


def test_watch_resumed_stream_must_not_skip() -> None:
    h = _watch_history()
    h.watch_streams.append(WatchStream(0, 2, 21, high_water=30))
    h.watch_events += [_ev(10, "a"), _ev(20, "b", ("a", 10))]
    h.watch_events.append(WatchEvent(0, 2, "put", K, b"c", 30, b"b", 20))
    assert check_watches(h) == []
    h.watch_events.pop()
    (v,) = check_watches(h)
    assert v.kind == "watch_gap"


def test_bounded_staleness() -> None:
    h = History()
    _put(h, "a", 0, 1, 10)
    _put(h, "b", 2, 3, 20)
    # Bound 1 s, invoked at 3.5: "b" completed at 3 > 2.5, so "a" is allowed.
    _get(h, "a", 3.5, 3.6, 10, kind=OpKind.STALE_GET, bound_ms=1000)
    assert check_staleness(h) == []
    # Invoked at 5: "b" completed 2 s before; "a" is too old.
    _get(h, "a", 5, 5.1, 10, kind=OpKind.STALE_GET, bound_ms=1000)
    (v,) = check_staleness(h)
    assert v.kind == "stale_read"
    _get(h, None, 6, 6.1, 0, kind=OpKind.STALE_GET, bound_ms=1000)
    assert len(check_staleness(h)) == 2


def test_convergence() -> None:
    same = {K: (b"a", 10)}
    assert check_convergence({1: same, 2: dict(same), 3: dict(same)}) == []
    (v,) = check_convergence({1: same, 2: {K: (b"a", 10)}, 3: {K: (b"b", 20)}})
    assert v.kind == "divergence" and "node 3" in v.detail
    # with 4 stores a node holds only its shards' keys: only holders are compared
    K2 = b"k2"
    assert check_convergence({1: {K: (b"a", 10)}, 2: {K2: (None, 0)}, 3: {K: (b"a", 10), K2: (None, 0)}}) == []
    (v,) = check_convergence({1: {K: (b"a", 10)}, 2: {K2: (b"x", 5)}, 3: {K: (b"a", 10), K2: (None, 0)}})
    assert v.key == K2 and "node 1" not in v.detail


def test_check_all_on_a_clean_history() -> None:
    h = _watch_history()
    h.watch_events += [_ev(10, "a"), _ev(20, "b", ("a", 10)), _ev(30, "c", ("b", 20))]
    h.final_reads[K] = (b"c", 30)
    assert check_all(h, {1: {K: (b"c", 30)}, 2: {K: (b"c", 30)}}) == []


def test_history_round_trips_through_json() -> None:
    h = _watch_history()
    _get(h, "c", 6, 7, 30, kind=OpKind.STALE_GET, bound_ms=500)
    op = h.invoke(2, OpKind.CAS, K, 8, 8000, value=b"d", expect=b"c")
    h.complete(op, 9, Outcome.UNKNOWN, error="DEADLINE_EXCEEDED")
    h.watch_events += [_ev(10, "a"), _ev(20, "b", ("a", 10))]
    h.final_reads[K] = (b"c", 30)
    back = History.load(h.dump())
    assert back.ops == h.ops and back.watch_events == h.watch_events
    assert back.watch_streams == h.watch_streams and back.final_reads == h.final_reads
