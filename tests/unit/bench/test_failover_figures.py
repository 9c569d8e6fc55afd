"""flotilla/bench/failover_figures.py: the figures of `flotilla bench
failover` from a hand-made history (pure: no processes, no clock)."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import flotilla.bench.failover_figures as mod
from flotilla.bench.failover_figures import Attempt, measure, percentile, summarize

KILL = 100.0


def a(writer: str, shard: int, start: float, end: float, error: str = "") -> Attempt:
    """An attempt with times relative to the kill."""
    return Attempt(writer, shard, KILL + start, KILL + end, error)


HISTORY = [
    # before the kill: all fine on both shards (left out of every figure)
    a("w0", 1, -1.0, -0.9), a("w1", 1, -0.9, -0.8), a("w2", 2, -1.0, -0.95), a("probe-1", 1, -0.5, -0.45),
    # shard 1 lost its leader. w0 was in flight at the kill and failed at its deadline
    a("w0", 1, -0.05, 6.95, "DEADLINE_EXCEEDED: Deadline Exceeded"),
    a("w0", 1, 7.0, 7.1),
    # w1 failed at once, retried, and failed late (started 3.2 s after the kill), then succeeded
    a("w1", 1, 0.1, 0.2, "UNAVAILABLE: no leader"),
    a("w1", 1, 3.2, 3.3, "UNAVAILABLE: no leader"),
    a("w1", 1, 3.4, 3.6),
    # the probe: a put in flight at the kill that succeeded (not a first success: it started before),
    # failures, then the shard's first success that started after the kill, ending at 1.3 s
    a("probe-1", 1, -0.01, 0.4),
    a("probe-1", 1, 0.6, 0.7, "UNAVAILABLE: leader changed"),
    a("probe-1", 1, 1.2, 1.3),
    a("probe-1", 1, 1.1, 1.5),
    # shard 2 kept its leader; one failure after the kill
    a("w2", 2, 0.0, 0.1), a("w2", 2, 0.2, 0.3, "UNAVAILABLE: router busy"), a("w2", 2, 0.4, 0.5),
    a("probe-2", 2, 0.05, 0.15),
]


def test_a_round_by_shard() -> None:
    r = measure(HISTORY, KILL, leader_died=[1])
    one, two = r.shards
    assert (one.shard, one.leader_died, two.shard, two.leader_died) == (1, True, 2, False)
    assert math.isclose(one.first_success_s or 0, 1.3)
    # w0 at 7.1 (its call across the kill ended only at its deadline), w1 at 3.6, the probe at 1.3
    assert math.isclose(one.all_writers_s or 0, 7.1)
    assert (one.writers, one.attempts, one.failed, one.failed_after_0_5s, one.failed_after_3s) == (3, 9, 4, 2, 1)
    assert math.isclose(two.first_success_s or 0, 0.1) and math.isclose(two.all_writers_s or 0, 0.15)  # w2 at 0.1, the probe at 0.15
    assert (two.writers, two.failed, two.failed_after_0_5s) == (2, 1, 0)
    assert r.late_errors == (
        "+0.60s probe-1 shard 1: UNAVAILABLE: leader changed",
        "+3.20s w1 shard 1: UNAVAILABLE: no leader",
    )
    assert r.other_errors == ("+0.20s w2 shard 2: UNAVAILABLE: router busy",)
    assert r.failed_before_kill == 0


def test_a_writer_that_never_succeeds_again_leaves_the_shard_unrecovered() -> None:
    history = [a("w0", 1, 0.1, 0.2), a("w1", 1, 0.0, 7.0, "DEADLINE_EXCEEDED: x"), a("w1", 1, 7.0, 9.0, "DEADLINE_EXCEEDED: x")]
    (s,) = measure(history, KILL, leader_died=[1]).shards
    assert math.isclose(s.first_success_s or 0, 0.2)
    assert s.all_writers_s is None
    # a shard whose leader died but that saw no write at all is reported, unrecovered
    (s,) = measure([], KILL, leader_died=[3]).shards
    assert (s.shard, s.first_success_s, s.all_writers_s, s.attempts) == (3, None, None, 0)


def test_summary_over_rounds_and_the_targets() -> None:
    good = measure(
        [a("w0", 1, 0.0, 0.8), a("w1", 1, 0.1, 1.0), a("w0", 2, 0.0, 0.1), a("w1", 3, 0.2, 2.0)], KILL, leader_died=[1, 3]
    )
    s = summarize([good])
    assert s["samples"] == 2
    assert s["first_success_s"] == {"p50": 0.8, "max": 2.0}
    assert s["all_writers_s"] == {"p50": 1.0, "max": 2.0}
    assert (s["other_shards"], s["other_shard_failures"], s["failed_after_3s"]) == (1, 0, 0)
    assert all(s["targets"].values()), s["targets"]

    bad = measure(HISTORY, KILL, leader_died=[1])
    s = summarize([good, bad])
    assert s["samples"] == 3
    assert s["first_success_s"] == {"p50": 1.3, "max": 2.0}
    assert s["all_writers_s"] == {"p50": 2.0, "max": 7.1}
    assert (s["failed"], s["failed_after_0_5s"], s["failed_after_3s"], s["other_shard_failures"]) == (4, 2, 1, 1)
    assert s["targets"] == {
        "no_failure_after_3s": False,
        "first_success_p50": True,
        "first_success_max": True,
        "all_writers_max": False,
        "other_shards_clean": False,
    }
    assert s["late_errors"][0].startswith("+0.60s probe-1")


def test_unrecovered_shards_show_in_the_max_and_fail_the_targets() -> None:
    never = measure([a("w0", 1, 0.0, 7.0, "DEADLINE_EXCEEDED: x")], KILL, leader_died=[1])
    s = summarize([never])
    assert s["first_success_s"] == {"p50": None, "max": None}
    assert s["not_recovered"] == {"first_success": 1, "all_writers": 1}
    assert s["targets"]["first_success_max"] is False and s["targets"]["all_writers_max"] is False
    # one system of one shard (etcd): no other shards, that target does not apply
    assert s["targets"]["other_shards_clean"] is None


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([1.0, math.inf], 100) == math.inf


def test_the_figures_module_is_pure() -> None:
    """No I/O, clock or randomness: only these imports (tests/unit/test_purity.py's rule)."""
    tree = ast.parse(Path(mod.__file__).read_text())
    imported = {n.name for node in ast.walk(tree) if isinstance(node, ast.Import) for n in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "math", "collections.abc", "dataclasses", "typing"}, imported
