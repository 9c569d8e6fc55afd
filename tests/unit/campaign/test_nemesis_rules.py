"""The rule files a partition nemesis writes: each side drops exactly the
other side's nodes (a cut both ways), and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

from flotilla.campaign.kinds import ALIASES, CRASH_POINTS, KINDS, ROUTER_CRASH_POINTS
from flotilla.campaign.nemesis import Nemesis

REPO = Path(__file__).resolve().parents[3]


def test_cut_drops_the_other_groups_both_ways() -> None:
    rules = Nemesis._cut([[11], [12, 13]])
    assert rules[11].drop == {12, 13}
    assert rules[12].drop == {11} and rules[13].drop == {11}
    assert all(not r.delay_ms and not r.clock_offset_ms for r in rules.values())
    three = Nemesis._cut([[1], [2], [3]])
    assert three[1].drop == {2, 3} and three[2].drop == {1, 3}


def test_groups_name_only_known_kinds_and_every_crash_point_is_listed() -> None:
    for group, kinds in ALIASES.items():
        assert set(kinds) <= set(KINDS), group
    assert ALIASES["all"] == KINDS
    # Every crash point the code has is one the nemesis can arm, and back.
    in_code: set[str] = set()
    for path in (*(REPO / "raft").rglob("*.py"), *(REPO / "shard").rglob("*.py")):
        in_code.update(re.findall(r'crash_hook\("([a-z_]+)"\)', path.read_text()))
    assert in_code == set(CRASH_POINTS)
    assert {"before_persist", "after_persist", "before_apply", "after_apply", "snapshot_save",
            "before_snapshot_apply", "after_snapshot_apply", "split_apply", "merge_apply"} <= in_code
    # The router's (a txn across shards, router/txn2pc.py), armed by the crashpoint_router nemesis.
    in_router: set[str] = set()
    for path in (REPO / "router").rglob("*.py"):
        in_router.update(re.findall(r'_crash\("([a-z_]+)"\)', path.read_text()))
    assert in_router == set(ROUTER_CRASH_POINTS) == {"txn_after_prepare", "txn_after_decide", "txn_during_commit"}
    assert "crashpoint_router" in ALIASES["router"]
