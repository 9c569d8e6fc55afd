"""The nemesis kinds of a fault campaign, by group, and how the command line
names them (``parse_kinds``, ``ALIASES``). Pure."""

from __future__ import annotations

__all__ = [
    "ALIASES", "CRASH_POINTS", "KINDS", "OP_KINDS", "PARTITION_KINDS", "PLACEMENT_KINDS", "ROUTER_CRASH_POINTS", "ROUTER_KINDS",
    "parse_kinds",
]

PARTITION_KINDS = ("partition_leader", "partition_split", "partition_bridge", "partition_oneway", "delay")
OP_KINDS = ("transfer_under_fault", "split_under_fault", "move_under_fault", "merge_under_fault")
PLACEMENT_KINDS = ("kill_placement_leader", "kill_placement_follower", "pause_placement")
ROUTER_KINDS = ("kill_router", "pause_router", "crashpoint_router")
KINDS = (
    "kill_one", "kill_leader", "kill_majority", "kill_all", "pause", "crashpoint",
    *PARTITION_KINDS, "clock", *OP_KINDS, *PLACEMENT_KINDS, *ROUTER_KINDS,
)
CRASH_POINTS = (
    "before_persist", "after_persist", "before_apply", "after_apply",
    "snapshot_save", "before_snapshot_apply", "after_snapshot_apply", "split_apply", "merge_apply",
)
ALIASES = {
    "kill": ("kill_one", "kill_leader", "kill_majority", "kill_all"),
    "partition": PARTITION_KINDS,
    "ops": OP_KINDS,
    "placement": PLACEMENT_KINDS,
    "router": ROUTER_KINDS,
    "all": KINDS,
}
ROUTER_CRASH_POINTS = ("txn_after_prepare", "txn_after_decide", "txn_during_commit")
"""The router's crash points (router/txn2pc.py: a txn across shards, as its coordinator passes them)."""
MAX_SPLITS = 2  # per run: each split adds a shard (a Raft group on every store)
MAX_MERGES = 2  # per run, and only while at least MIN_SHARDS_TO_MERGE shards exist
MIN_SHARDS_TO_MERGE = 3


def parse_kinds(text: str) -> tuple[str, ...]:
    out: list[str] = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        for k in ALIASES.get(item, (item,)):
            if k not in KINDS:
                raise ValueError(f"unknown nemesis {k!r}; known: {', '.join((*KINDS, *ALIASES))}")
            if k not in out:
                out.append(k)
    return tuple(out)
