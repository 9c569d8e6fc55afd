"""`flotilla bench failover` against Flotilla only, one short round: the bench
starts its own playground, kills -9 the store leading the most shards under
writes, restarts it, and prints the figures as JSON. The figures themselves
are not asserted (failover is being worked on; tests/unit/bench/ checks how
they are computed); the shape of the report and the kill are."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flotilla.bench.failover_figures import TARGETS

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_one_round_against_flotilla_kills_a_leader_and_reports(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    p = subprocess.run(
        [
            sys.executable, "-m", "flotilla", "bench", "failover", "--systems", "flotilla", "--rounds", "1",
            "--writers", "8", "--warmup", "1", "--observe", "4", "--timeout", "3", "--restart-timeout", "30",
            "--workdir", str(tmp_path), "-o", "json",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        cwd=str(REPO),
    )
    assert p.returncode == 0, f"bench exited {p.returncode}\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}"
    report = json.loads(p.stdout)
    assert report["config"]["rounds"] == 1 and report["config"]["deadline_s"] == 3
    assert list(report["systems"]) == ["flotilla"]
    fl = report["systems"]["flotilla"]
    (rnd,) = fl["rounds"]
    killed = rnd["killed"]
    assert killed["name"].startswith("store-") and killed["led_shards"], killed
    # the playground saw its store die by SIGKILL
    assert f"(pid {killed['pid']}) exited with -9" in (tmp_path / "playground.log").read_text()
    assert rnd["attempts"] > 0 and rnd["restarted_healthy_in_s"] >= 0
    by_shard = {s["shard"]: s for s in rnd["shards"]}
    assert {sid for sid, s in by_shard.items() if s["leader_died"]} == set(killed["led_shards"])
    for s in by_shard.values():
        assert {"first_success_s", "all_writers_s", "writers", "attempts", "failed", "failed_after_0_5s", "failed_after_3s"} <= set(s)
        assert s["writers"] >= 2  # its probe and at least one writer
    summary = fl["summary"]
    assert summary["samples"] == len(killed["led_shards"])
    assert set(summary["first_success_s"]) == set(summary["all_writers_s"]) == {"p50", "max"}
    assert {"failed_after_0_5s", "failed_after_3s", "other_shard_failures", "late_errors", "other_errors"} <= set(summary)
    assert set(summary["targets"]) == {key for key, _ in TARGETS}
    # the attempts of the round, relative to the kill
    history = [json.loads(line) for line in (tmp_path / "failover-flotilla-round1.jsonl").read_text().splitlines()]
    assert len(history) == rnd["attempts"] and min(h["start"] for h in history) < 0 < max(h["start"] for h in history)
