"""The scheduler at scale (issue #20): placement/simulation.py's
deterministic simulation of the pure scheduler and operator execution.

Per event (initial cluster, nodes added, nodes lost, a node drained, a hot
key range) the simulation must converge to replica and leader counts within
5% of the mean per live node, zone-spread replicas, no replica left on a
lost or drained node, no shard moved more than twice, and no operator
undoing an earlier one of the event. The rounds to converge, the operators
by kind and the CPU time of the slowest scheduling round of each event are
printed (`-s`); the CPU time is not asserted (speed is measured, not
asserted by a timed test): at full size the slowest round (the repair after
losing 5 nodes) took 752 ms of CPU on a quiet machine and 0.96-1.13 s on
one shared by other test runs, so the issue's 1 s has no margin yet.

The default run: 20 nodes, 5,000 shards. `pytest -m slow
tests/sim/test_scheduler_scale.py -s`: 100 nodes in 5 zones, 100,000 shards.
"""

from __future__ import annotations

import time

import pytest

from placement.simulation import EventReport, SimConfig, run


def check(reports: list[EventReport]) -> None:
    assert len(reports) == 5
    for r in reports:
        print(r.summary())
        b = r.balance
        assert r.converged, r.summary()
        assert b is not None
        assert b.replica_deviation <= 0.05, r.summary()
        assert b.leader_deviation <= 0.05, r.summary()
        assert b.zone_violations == 0, r.summary()
        assert b.misplaced == 0, r.summary()
        assert r.max_moves <= 2, r.summary()
        assert r.undone == [], r.undone[:5]
    hot = reports[-1]
    assert hot.by_kind["split"] >= 4, hot.summary()


def test_scheduler_converges_small() -> None:
    reports = run(SimConfig(nodes=20, shards=5000, added=2, lost=1, drained=1), timer=time.process_time)
    check(reports)


@pytest.mark.slow
def test_scheduler_converges_100_nodes_100k_shards() -> None:
    reports = run(SimConfig(), timer=time.process_time)
    check(reports)
    print("slowest scheduling round:", max(r.max_round_cpu for r in reports), "s CPU")
