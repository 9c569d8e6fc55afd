"""flotilla/bench/workloads.py: the txn-cross and txn-pair workloads' place
in `flotilla bench`, and how they group the key space's keys by shard (from
a hand-made map, or by slot quarters without one). Pure: no processes."""

from __future__ import annotations

import argparse

import pytest

from flotilla.bench import add_arguments, config_from
from flotilla.bench.workloads import PAIRED, WORKLOADS, BenchConfig, BenchResult, format_text, group_keys, key_of
from flotilla.bench.stats import Histogram
from flotillapb import placement_pb2 as ppb
from router import slots


def _map(shards: int, slot_count: int = 1024) -> ppb.ClusterMap:
    m = ppb.ClusterMap(cluster_id=1, slot_count=slot_count)
    for i, ranges in enumerate(slots.equal_ranges(shards, slot_count)):
        s = m.shards.add()
        s.descriptor.shard_id = 10 + i
        for lo, hi in ranges:
            s.descriptor.slots.add(start=lo, end=hi)
    return m


def _shard_index(key: bytes, shards: int) -> int:
    slot = slots.slot_of(key, 1024)
    return next(i for i, r in enumerate(slots.equal_ranges(shards, 1024)) if slots.contains(r, slot))


def test_the_workload_list_and_the_command_line_know_txn_cross_and_txn_pair() -> None:
    assert {"txn-cross", "txn-pair", "txn-put"} <= set(WORKLOADS) and set(PAIRED) == {"txn-cross", "txn-pair"}
    p = argparse.ArgumentParser()
    add_arguments(p)
    assert "txn-cross" in p.format_help()
    args = p.parse_args(["txn-cross", "--endpoints", "127.0.0.1:1", "--total", "10"])
    args.timeout = 10.0
    assert config_from(args).workload == "txn-cross"
    with pytest.raises(SystemExit):
        p.parse_args(["txn-crosss"])


def test_keys_grouped_by_the_maps_shards() -> None:
    cfg = BenchConfig(workload="txn-cross", endpoints=("x",), key_space=500)
    g = group_keys(cfg, _map(4))
    assert len(g.groups) == 4 and sorted(i for grp in g.groups for i in grp) == list(range(500))
    for n, grp in enumerate(g.groups):
        assert {_shard_index(key_of(i, cfg.key_size), 4) for i in grp} == {n}
    assert g.pairing.startswith("shard") and g.usable("txn-cross") is None and g.usable("txn-pair") is None


def test_without_a_map_the_slot_quarters_are_on_different_shards_of_any_equal_split() -> None:
    cfg = BenchConfig(workload="txn-cross", endpoints=("x",), key_space=400)
    g = group_keys(cfg, None, "a static map")
    low, high = g.groups
    assert low and high and "no shard map: a static map" in g.pairing
    for shards in range(2, 9):
        assert {_shard_index(key_of(i, cfg.key_size), shards) for i in low}.isdisjoint(
            {_shard_index(key_of(i, cfg.key_size), shards) for i in high}
        ), shards
    for shards in range(1, 5):  # txn-pair: each quarter stays in one shard of up to 4
        assert len({_shard_index(key_of(i, cfg.key_size), shards) for i in low}) == 1


def test_a_single_shard_cannot_run_txn_cross_and_says_so() -> None:
    cfg = BenchConfig(workload="txn-cross", endpoints=("x",), key_space=50)
    why = group_keys(cfg, _map(1)).usable("txn-cross")
    assert why is not None and "two shards" in why
    assert group_keys(BenchConfig(workload="txn-pair", endpoints=("x",), key_space=1), _map(2)).usable("txn-pair") is not None


def test_the_result_names_compare_failures_and_the_pairing() -> None:
    cfg = BenchConfig(workload="txn-cross", endpoints=("x",), total=10)
    h = Histogram()
    h.record(1000)
    r = BenchResult(cfg, 1, 1, {"INVALID_ARGUMENT": 9}, 1.0, h.summary(), ["INVALID_ARGUMENT: txn keys span shards"], 0, "shard (the map of 2 shards)")
    d = r.to_dict()
    assert d["compare_failed"] == 0 and d["pairing"] == "shard (the map of 2 shards)" and d["errors"] == {"INVALID_ARGUMENT": 9}
    text = format_text(r)
    assert "INVALID_ARGUMENT: txn keys span shards" in text and "keys paired by shard" in text
