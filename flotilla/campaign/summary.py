"""What a campaign run found, and the summary over runs: ``RunResult``,
the recovery figures drawn from a history (``recovery``), ``summarize`` and
``format_summary``."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from flotilla.campaign.checkers import Violation
from flotilla.campaign.history import History, Outcome
from flotilla.campaign.kinds import KINDS, PARTITION_KINDS
from raft.transport.faults import REFRESH_S

__all__ = ["LATE_S", "VIOLATION_KINDS", "RunResult", "format_summary", "recovery", "summarize"]

VIOLATION_KINDS = (
    "linearizability",
    "lin_timeout",
    "acked_write_loss",
    "double_apply",
    "watch_order",
    "watch_duplicate",
    "watch_gap",
    "watch_prev_kv",
    "watch_stalled",
    "stale_read",
    "divergence",
    "lease",
    "process_died",
    "nemesis_error",
    "harness_error",
    # the bank workload (bankcheck.py)
    "bank_chain",
    "bank_atomicity",
    "bank_aborted_applied",
    "bank_aborted_visible",
    "bank_lost_transfer",
    "bank_lost_version",
    "bank_revision_split",
    "bank_balance",
    "bank_sum",
    "bank_torn_read",
    "bank_not_at_revision",
    "bank_revision_order",
    "bank_watch_torn",
)


@dataclass
class RunResult:
    seed: int
    ops: int
    ops_ok: int
    ops_unknown: int
    faults: Counter = field(default_factory=Counter)
    violations: list[Violation] = field(default_factory=list)
    recovery_s: list[float] = field(default_factory=list)
    crashpoints_not_fired: int = 0
    crashpoints_fired: dict[str, int] = field(default_factory=dict)
    """point -> times it fired (a crash point armed and passed)."""
    placement_ops: dict[str, int] = field(default_factory=dict)
    """"kind:ok|failed|skipped" -> count of the operations asked of placement under a fault."""
    clock_skew_ms: int = 0
    recovery_partition_s: list[float] = field(default_factory=list)
    recovery_all_s: list[float] = field(default_factory=list)
    """Per leader kill: until every client writing to the shard had a write acknowledged again."""
    recovery_partition_all_s: list[float] = field(default_factory=list)
    late_write_failures: int = 0
    """Writes to a shard whose leader was killed or isolated, invoked LATE_S after it, that failed."""
    kept_dir: str = ""
    elapsed_s: float = 0.0
    bank: dict[str, Any] = field(default_factory=dict)
    """The bank workload's figures (bankcheck.bank_figures); empty for the register workload."""

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "ops": self.ops,
            "ops_ok": self.ops_ok,
            "ops_unknown": self.ops_unknown,
            "faults": dict(self.faults),
            "violations": [str(v) for v in self.violations],
            "recovery_s": self.recovery_s,
            "crashpoints_not_fired": self.crashpoints_not_fired,
            "crashpoints_fired": self.crashpoints_fired,
            "placement_ops": self.placement_ops,
            "clock_skew_ms": self.clock_skew_ms,
            "recovery_partition_s": self.recovery_partition_s,
            "recovery_all_s": self.recovery_all_s,
            "recovery_partition_all_s": self.recovery_partition_all_s,
            "late_write_failures": self.late_write_failures,
            "kept_dir": self.kept_dir,
            "elapsed_s": round(self.elapsed_s, 1),
            "bank": self.bank,
        }


LATE_S = 3.0
"""A write to a shard whose leader was killed, invoked this long after the
kill, must not fail (issue #13: the new leader is elected well before)."""


def recovery(history: History, shard_of: Callable[[bytes], int], kind: str = "kill_leader") -> tuple[list[float], list[float], int]:
    """For each leader kill (or isolation) of a shard: the time to the
    first acknowledged write to that shard invoked after it, and the time
    until every client writing to that shard after it had a write
    acknowledged (inf for a client that never did); and how many writes to
    such shards invoked LATE_S after the fault failed. An isolation takes
    effect when the processes re-read their rule files (within 2 x
    REFRESH_S): writes invoked before that may still reach the old leader
    and do not count."""
    lag = 2 * REFRESH_S if kind in PARTITION_KINDS else 0.0
    first: list[float] = []
    every: list[float] = []
    late_failed = 0
    for f in history.faults:
        if f.kind != kind or not f.shard:
            continue
        writes = [
            o for o in history.ops
            if o.is_write and o.invoke >= f.start + lag and shard_of(o.key) == f.shard
        ]
        if not writes:
            continue
        by_client: dict[int, float] = {}
        for o in writes:
            t = o.complete - f.start if o.outcome is Outcome.OK else math.inf
            by_client[o.client] = min(by_client.get(o.client, math.inf), t)
            if o.outcome is not Outcome.OK and o.error and o.invoke >= f.start + lag + LATE_S:
                late_failed += 1
        done = [t for t in by_client.values() if t < math.inf]
        if done:
            first.append(min(done))
        every.append(max(by_client.values()))
    return first, every, late_failed


def summarize(results: list[RunResult]) -> dict[str, Any]:
    faults: Counter = Counter({k: 0 for k in KINDS})
    viol: Counter = Counter({k: 0 for k in VIOLATION_KINDS})
    crash: Counter = Counter()
    pops: Counter = Counter()
    rec: list[float] = []
    rec_part: list[float] = []
    rec_all: list[float] = []
    rec_part_all: list[float] = []
    for r in results:
        faults.update(r.faults)
        viol.update(v.kind for v in r.violations)
        crash.update(r.crashpoints_fired)
        pops.update(r.placement_ops)
        rec.extend(r.recovery_s)
        rec_part.extend(r.recovery_partition_s)
        rec_all.extend(r.recovery_all_s)
        rec_part_all.extend(r.recovery_partition_all_s)

    def pct(xs: list[float], p: float) -> float | None:
        if not xs:
            return None
        s = sorted(xs)
        return round(s[min(len(s) - 1, int(p * len(s)))], 3)

    def figures(xs: list[float]) -> dict[str, Any]:
        return {"n": len(xs), "p50": pct(xs, 0.5), "p99": pct(xs, 0.99), "mean": round(statistics.fmean(xs), 3) if xs else None}

    return {
        "runs": len(results),
        "ops": sum(r.ops for r in results),
        "ops_ok": sum(r.ops_ok for r in results),
        "ops_unknown": sum(r.ops_unknown for r in results),
        "faults": dict(faults),
        "faults_total": sum(faults.values()),
        "violations": dict(viol),
        "violations_total": sum(viol.values()),
        "crashpoints": dict(sorted(crash.items())),
        "crashpoints_not_fired": sum(r.crashpoints_not_fired for r in results),
        "placement_ops": dict(sorted(pops.items())),
        "max_clock_skew_allowance_ms": max((r.clock_skew_ms for r in results), default=0),
        "recovery_leader_kill_to_first_write_s": figures(rec),
        "recovery_leader_isolation_to_first_write_s": figures(rec_part),
        "recovery_leader_kill_to_every_writer_s": figures(rec_all),
        "recovery_leader_isolation_to_every_writer_s": figures(rec_part_all),
        "late_write_failures": sum(r.late_write_failures for r in results),
        "seeds": [r.seed for r in results],
        "kept": [r.kept_dir for r in results if r.kept_dir],
        "bank": _bank_totals([r.bank for r in results if r.bank]),
    }


def _bank_totals(runs: list[dict[str, Any]]) -> dict[str, Any]:
    if not runs:
        return {}
    counts = ("transfers", "committed", "compare_failed", "unknown", "unknown_applied", "reads_one", "reads_pair_txn",
              "reads_all", "reads_failed", "probe_puts")
    out: dict[str, Any] = {k: sum(r[k] for r in runs) for k in counts}
    out["probe_put_max_s"] = max((r["probe_put_max_s"] for r in runs if r["probe_put_max_s"] is not None), default=None)
    after = [a for r in runs for a in r["after_router_faults"]]
    out["router_faults"] = len(after)
    out["max_put_latency_after_router_fault_s"] = max((a["max_put_latency_after_s"] for a in after), default=None)
    return out


def format_summary(s: dict[str, Any]) -> str:
    lines = [
        f"runs: {s['runs']}  seeds: {s['seeds']}",
        f"ops: {s['ops']} (ok {s['ops_ok']}, unknown outcome {s['ops_unknown']})",
        f"faults injected (total {s['faults_total']}): " + ", ".join(f"{k}={v}" for k, v in s["faults"].items()),
        "violations: " + ", ".join(f"{k}={v}" for k, v in s["violations"].items()) + f"  (total {s['violations_total']})",
        "crash points: " + (", ".join(f"{k}={v}" for k, v in s["crashpoints"].items()) or "none armed"),
        f"crash points not fired (not reached in the window, or not honoured): {s['crashpoints_not_fired']}",
        "placement operations under faults: " + (", ".join(f"{k}={v}" for k, v in s["placement_ops"].items()) or "none"),
        f"staleness bound allowance for clock skew: +{s['max_clock_skew_allowance_ms']} ms",
        "leader-kill -> first write recovery: n={n} p50={p50}s p99={p99}s".format(**s["recovery_leader_kill_to_first_write_s"]),
        "leader-isolation -> first write recovery: n={n} p50={p50}s p99={p99}s".format(
            **s["recovery_leader_isolation_to_first_write_s"]
        ),
        "leader-kill -> every writer recovered: n={n} p50={p50}s p99={p99}s".format(**s["recovery_leader_kill_to_every_writer_s"]),
        "leader-isolation -> every writer recovered: n={n} p50={p50}s p99={p99}s".format(
            **s["recovery_leader_isolation_to_every_writer_s"]
        ),
        f"writes failed {LATE_S:g} s or more after their shard's leader was killed or isolated: {s['late_write_failures']}",
    ]
    b = s.get("bank")
    if b:
        lines.append(
            f"bank: {b['transfers']} transfers: committed {b['committed']}, compare failed {b['compare_failed']}, "
            f"unknown {b['unknown']} (of which applied {b['unknown_applied']}); reads: one account {b['reads_one']}, "
            f"two by one txn {b['reads_pair_txn']}, all accounts {b['reads_all']} (failed {b['reads_failed']})"
        )
        lines.append(
            f"bank probe puts: {b['probe_puts']}, slowest {b['probe_put_max_s']} s; slowest after a router kill or "
            f"router crash point ({b['router_faults']}): {b['max_put_latency_after_router_fault_s']} s"
        )
    if s["kept"]:
        lines.append("kept: " + ", ".join(s["kept"]))
    return "\n".join(lines)
