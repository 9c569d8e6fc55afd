"""The campaign's command-line pieces that need no cluster: nemesis names and
the summary (every violation kind listed, 0 when none; recovery percentiles)."""

from __future__ import annotations

from collections import Counter

import pytest

from flotilla.campaign.checkers import Violation
from flotilla.campaign.history import FaultEvent, History, OpKind, Outcome
from flotilla.campaign.kinds import KINDS, parse_kinds
from flotilla.campaign.summary import VIOLATION_KINDS, RunResult, format_summary, recovery, summarize


def test_parse_kinds() -> None:
    assert parse_kinds("kill,pause") == ("kill_one", "kill_leader", "kill_majority", "kill_all", "pause")
    assert parse_kinds("crashpoint, kill_leader,crashpoint") == ("crashpoint", "kill_leader")
    assert set(parse_kinds(",".join(KINDS))) == set(KINDS)
    assert parse_kinds("partition") == (
        "partition_leader", "partition_split", "partition_bridge", "partition_oneway", "delay"
    )
    assert parse_kinds("all") == KINDS
    with pytest.raises(ValueError, match="unknown nemesis 'partitions'"):
        parse_kinds("partitions")


def test_summary_counts_runs_faults_violations_and_recovery() -> None:
    a = RunResult(seed=1, ops=100, ops_ok=90, ops_unknown=10, faults=Counter(pause=2, kill_leader=1), recovery_s=[1.0, 3.0],
                  recovery_all_s=[1.5, 4.0], late_write_failures=2)
    b = RunResult(seed=2, ops=50, ops_ok=50, ops_unknown=0, faults=Counter(kill_leader=2), recovery_s=[2.0],
                  violations=[Violation("watch_gap", b"k", "x")], kept_dir="/tmp/x")
    s = summarize([a, b])
    assert s["runs"] == 2 and s["ops"] == 150
    assert s["faults"] == {**{k: 0 for k in KINDS}, "pause": 2, "kill_leader": 3} and s["faults_total"] == 5
    assert set(s["violations"]) == set(VIOLATION_KINDS) and s["violations"]["watch_gap"] == 1
    assert s["violations_total"] == 1 and s["kept"] == ["/tmp/x"]
    r = s["recovery_leader_kill_to_first_write_s"]
    assert (r["n"], r["p50"], r["p99"]) == (3, 2.0, 3.0)
    every = s["recovery_leader_kill_to_every_writer_s"]
    assert (every["n"], every["p50"], every["p99"]) == (2, 4.0, 4.0) and s["late_write_failures"] == 2
    text = format_summary(s)
    assert "every writer recovered: n=2 p50=4.0s" in text and "leader was killed or isolated: 2" in text
    assert "runs: 2" in text and "watch_gap=1" in text and "(total 1)" in text and "p50=2.0s" in text
    assert summarize([a])["violations_total"] == 0


def test_summary_lists_every_nemesis_kind_crash_points_and_placement_ops() -> None:
    a = RunResult(
        seed=3, ops=10, ops_ok=10, ops_unknown=0, faults=Counter(partition_leader=1, kill_router=1),
        crashpoints_fired={"split_apply:fired": 1}, placement_ops={"split_under_fault:failed": 1},
        recovery_partition_s=[0.5], clock_skew_ms=800,
    )
    s = summarize([a])
    text = format_summary(s)
    for k in KINDS:
        assert f"{k}=" in text, k
    assert "split_apply:fired=1" in text and "split_under_fault:failed=1" in text and "+800 ms" in text
    assert s["recovery_leader_isolation_to_first_write_s"]["p50"] == 0.5


def test_recovery_waits_for_every_writer_of_the_killed_leaders_shard() -> None:
    """Two clients write to shard 1 after its leader is killed at t=10:
    client 1 succeeds at 11.0, client 2 fails once (invoked 13.5, past
    LATE_S) and succeeds at 14.0; a write to shard 2 does not count."""
    h = History()
    h.faults.append(FaultEvent("kill_leader", 10.0, 12.0, shard=1))
    for client, invoke, complete, outcome, error in (
        (1, 10.2, 11.0, Outcome.OK, ""),
        (2, 10.3, 13.4, Outcome.UNKNOWN, "UNAVAILABLE: outcome unknown"),
        (2, 13.5, 13.9, Outcome.UNKNOWN, "UNAVAILABLE: no leader"),
        (2, 13.95, 14.0, Outcome.OK, ""),
        (3, 10.1, 20.0, Outcome.UNKNOWN, "other shard"),
    ):
        op = h.invoke(client, OpKind.PUT, b"s1" if client != 3 else b"s2", invoke, 0, value=b"v")
        History.complete(op, complete, outcome, error=error)
    first, every, late = recovery(h, lambda key: 1 if key == b"s1" else 2)
    assert first == [1.0] and every == [4.0] and late == 1
