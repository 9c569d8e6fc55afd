"""The figures of `flotilla bench failover` from a recorded history (pure).

A history is the attempts of one round: every write a writer or probe made,
with when it started and ended (seconds on one clock), whether it failed
(the error text) and the shard its key lives in. Given the moment of the
kill and the shards whose leader died, `measure` computes, per shard:

- first success: from the kill to the end of the first successful write
  that *started* at or after the kill (a write already in flight at the kill
  does not count: its answer may have been on the way before the kill);
- every writer again: from the kill until each writer that wrote to the shard
  after the kill has had a write succeed that started at or after the kill
  (the largest of those times; a writer stuck in a call across the kill gets
  there only once that call returned and a new one succeeded);
- failed writes: those that ended after the kill and failed; of them, those
  that started more than 0.5 s and more than 3 s after the kill.

`summarize` takes the rounds of one system and gives the p50 and max of the
first two over every (round, shard whose leader died), the failure counts,
and which of the issue's targets (#13) are met. No I/O, no clock: the driver
(flotilla/bench/failover.py) records, this computes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Attempt",
    "RoundFigures",
    "ShardFigures",
    "TARGETS",
    "measure",
    "percentile",
    "summarize",
]

LATE_S = 0.5
"""A failed write that started this long after the kill is counted as late."""
TARGET_S = 3.0
"""The issue's bound: nothing fails, and every writer succeeds, from 3 s after the kill."""
FIRST_SUCCESS_P50_S = 1.5
ERROR_SAMPLES = 5

TARGETS = (
    ("no_failure_after_3s", "no failed write started > 3 s after the kill"),
    ("first_success_p50", f"first success p50 <= {FIRST_SUCCESS_P50_S:g} s"),
    ("first_success_max", f"first success max <= {TARGET_S:g} s"),
    ("all_writers_max", f"every writer succeeding again within {TARGET_S:g} s"),
    ("other_shards_clean", "no failures on shards the dead process did not lead"),
)


@dataclass(frozen=True, slots=True)
class Attempt:
    writer: str
    shard: int
    start: float
    end: float
    error: str = ""
    """"" if the write succeeded, else what failed (e.g. "UNAVAILABLE: ...")"""

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass(frozen=True, slots=True)
class ShardFigures:
    shard: int
    leader_died: bool
    first_success_s: float | None
    """None: no write that started after the kill succeeded"""
    all_writers_s: float | None
    """None: some writer had no success that started after the kill"""
    writers: int
    """writers (probe included) that wrote to the shard after the kill"""
    attempts: int
    """writes that ended after the kill"""
    failed: int
    failed_after_0_5s: int
    failed_after_3s: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "shard": self.shard,
            "leader_died": self.leader_died,
            "first_success_s": _round(self.first_success_s),
            "all_writers_s": _round(self.all_writers_s),
            "writers": self.writers,
            "attempts": self.attempts,
            "failed": self.failed,
            "failed_after_0_5s": self.failed_after_0_5s,
            "failed_after_3s": self.failed_after_3s,
        }


@dataclass(frozen=True, slots=True)
class RoundFigures:
    shards: tuple[ShardFigures, ...]
    late_errors: tuple[str, ...]
    """the first few failures (by start) on the dead leader's shards that started > 0.5 s after the kill"""
    other_errors: tuple[str, ...]
    """the first few failures on the other shards after the kill"""
    failed_before_kill: int
    """failures before the kill (the cluster was not healthy when measured if any)"""

    @property
    def died(self) -> list[ShardFigures]:
        return [s for s in self.shards if s.leader_died]

    @property
    def others(self) -> list[ShardFigures]:
        return [s for s in self.shards if not s.leader_died]

    def to_dict(self) -> dict[str, Any]:
        return {
            "shards": [s.to_dict() for s in self.shards],
            "late_errors": list(self.late_errors),
            "other_errors": list(self.other_errors),
            "failed_before_kill": self.failed_before_kill,
        }


def _round(x: float | None) -> float | None:
    return None if x is None or math.isinf(x) else round(x, 3)


def _samples(attempts: Iterable[Attempt], kill_at: float) -> tuple[str, ...]:
    out = []
    for a in sorted(attempts, key=lambda a: a.start):
        out.append(f"+{a.start - kill_at:.2f}s {a.writer} shard {a.shard}: {a.error}")
        if len(out) == ERROR_SAMPLES:
            break
    return tuple(out)


def measure(attempts: Sequence[Attempt], kill_at: float, leader_died: Iterable[int]) -> RoundFigures:
    """The figures of one round: attempts of every shard, the kill's time,
    and the shards whose leader was killed."""
    died = set(leader_died)
    shards = sorted({a.shard for a in attempts} | died)
    figures = []
    for sid in shards:
        after = [a for a in attempts if a.shard == sid and a.end >= kill_at]
        started = [a for a in after if a.start >= kill_at]
        firsts = [a.end - kill_at for a in started if a.ok]
        writers = sorted({a.writer for a in after})
        per_writer: list[float | None] = []
        for w in writers:
            ok = [a.end - kill_at for a in started if a.writer == w and a.ok]
            per_writer.append(min(ok) if ok else None)
        failed = [a for a in after if not a.ok]
        figures.append(
            ShardFigures(
                shard=sid,
                leader_died=sid in died,
                first_success_s=min(firsts) if firsts else None,
                all_writers_s=None if not per_writer or None in per_writer else max(x for x in per_writer if x is not None),
                writers=len(writers),
                attempts=len(after),
                failed=len(failed),
                failed_after_0_5s=sum(a.start > kill_at + LATE_S for a in failed),
                failed_after_3s=sum(a.start > kill_at + TARGET_S for a in failed),
            )
        )
    failed_after = [a for a in attempts if not a.ok and a.end >= kill_at]
    return RoundFigures(
        shards=tuple(figures),
        late_errors=_samples((a for a in failed_after if a.shard in died and a.start > kill_at + LATE_S), kill_at),
        other_errors=_samples((a for a in failed_after if a.shard not in died), kill_at),
        failed_before_kill=sum(not a.ok and a.end < kill_at for a in attempts),
    )


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None for no values. An
    unrecovered shard is +inf, so it shows in the max and, if common, the p50."""
    if not values:
        return None
    xs = sorted(values)
    return xs[max(0, math.ceil(p / 100 * len(xs)) - 1)]


def summarize(rounds: Sequence[RoundFigures]) -> dict[str, Any]:
    """One system's rounds -> p50/max of first success and of every writer
    again over every (round, shard whose leader died), failure counts, the
    first error texts, and each target of TARGETS met (True/False; None when
    it does not apply: no other shards, as for etcd)."""
    died = [s for r in rounds for s in r.died]
    first = [math.inf if s.first_success_s is None else s.first_success_s for s in died]
    every = [math.inf if s.all_writers_s is None else s.all_writers_s for s in died]
    others = [s for r in rounds for s in r.others]
    out: dict[str, Any] = {
        "samples": len(died),
        "first_success_s": {"p50": _round(percentile(first, 50)), "max": _round(percentile(first, 100))},
        "all_writers_s": {"p50": _round(percentile(every, 50)), "max": _round(percentile(every, 100))},
        "not_recovered": {"first_success": sum(math.isinf(x) for x in first), "all_writers": sum(math.isinf(x) for x in every)},
        "failed": sum(s.failed for s in died),
        "failed_after_0_5s": sum(s.failed_after_0_5s for s in died),
        "failed_after_3s": sum(s.failed_after_3s for s in died),
        "other_shards": len(others),
        "other_shard_failures": sum(s.failed for s in others),
        "failed_before_kill": sum(r.failed_before_kill for r in rounds),
        "late_errors": [e for r in rounds for e in r.late_errors][:ERROR_SAMPLES],
        "other_errors": [e for r in rounds for e in r.other_errors][:ERROR_SAMPLES],
    }
    p50, fmax, emax = percentile(first, 50), percentile(first, 100), percentile(every, 100)
    out["targets"] = {
        "no_failure_after_3s": bool(died) and out["failed_after_3s"] == 0,
        "first_success_p50": p50 is not None and p50 <= FIRST_SUCCESS_P50_S,
        "first_success_max": fmax is not None and fmax <= TARGET_S,
        "all_writers_max": emax is not None and emax <= TARGET_S,
        "other_shards_clean": None if not others else out["other_shard_failures"] == 0,
    }
    return out
