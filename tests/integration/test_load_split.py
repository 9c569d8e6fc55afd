"""Load-driven splitting on a real cluster (issue #20): placement started with
`--split-write-rate`, a write load skewed onto one shard, and that shard
splits by itself; its halves' leaders end on two stores (the scheduler's
hot-leaders rule, placement/scheduler.py: a node leading two shards over
half the threshold hands one to a voter leading none), so the halves'
writes land on two stores. Nothing is lost or read stale: the loads record
histories of puts and linearizable reads (tests/integration/history.py)
that must be linearizable, with every key read back at the end.

The write rates are those the shard leaders report in their heartbeats
(per-shard request counts, as placement's GetMap returns them); the test
prints the time from the start of the load to the split and the per-store
write rates before and after. The load is paced (about 50 puts/s on the hot
shard against a threshold of 30/s, so each half, at about 25/s, stays
below it); the figures are reported, not asserted.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from flotilla.cluster import Cluster, running, wait_until
from flotillapb import placement_pb2 as ppb
from placement.model import Epoch, Shard
from placement.scheduler import middle_slot
from shard import slots
from tests.integration.history import Load

pytestmark = pytest.mark.integration

SPLIT_WRITE_RATE = 30.0
HOT_LOADS, HOT_OPS_PER_S = 3, 25.0  # 3 x 25 ops/s, 2 in 3 of them puts: 50 puts/s
COLD_OPS_PER_S = 6.0


@dataclass
class PacedLoad(Load):
    """A Load at a steady pace (operations per second) rather than with a
    fixed pause, so the write rate does not depend on the latency."""

    ops_per_s: float = 10.0

    def _run(self) -> None:
        try:
            i = 0
            due = time.monotonic()
            deadline = due + 900  # bounded even if nobody stops it
            while not self._stop.is_set() and time.monotonic() < deadline:
                key = self.keys[i % len(self.keys)]
                if i % 3 == 2:
                    self._get(key)
                else:
                    self._put(key, b"%s=%d" % (key, i))
                i += 1
                # the next operation's time; one late (a slow answer) starts a new schedule: no burst to catch up
                due = max(due + 1 / self.ops_per_s, time.monotonic())
                self._stop.wait(max(0.0, due - time.monotonic()))
        except BaseException as exc:  # surfaced by check()
            self._failure = exc


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(
        tmp_path_factory.mktemp("loadsplit"),
        initial_shards=2,
        placement_args=["--split-write-rate", str(SPLIT_WRITE_RATE)],
        store_args=["--heartbeat-ms", "1000"],  # rates over 1 s windows (the harness's 300 ms are noisier)
    )
    with running(c):
        yield c


def shard_of(m: ppb.ClusterMap, key: bytes) -> int:
    slot = slots.slot_of(key, m.slot_count)
    return next(s.descriptor.shard_id for s in m.shards if any(r.start <= slot < r.end for r in s.descriptor.slots))


def keys_in(m: ppb.ClusterMap, shard_id: int, prefix: str, n: int, *, below: int | None = None, above: int | None = None) -> list[bytes]:
    out: list[bytes] = []
    for i in range(100_000):
        k = f"{prefix}{i}".encode()
        slot = slots.slot_of(k, m.slot_count)
        if shard_of(m, k) == shard_id and (below is None or slot < below) and (above is None or slot >= above):
            out.append(k)
            if len(out) == n:
                return out
    raise AssertionError(f"no {n} keys of shard {shard_id}")


def shard_rates(resp: ppb.GetMapResponse) -> dict[int, tuple[int, float]]:
    """shard -> (its leader in the map, the writes per second its leader's heartbeat reported)."""
    rate = {st.shard_id: st.write_rate for st in resp.shard_stats if st.is_leader}
    return {s.descriptor.shard_id: (s.descriptor.leader_node_id, round(rate.get(s.descriptor.shard_id, 0.0), 1)) for s in resp.map.shards}


def store_rates(resp: ppb.GetMapResponse) -> dict[int, float]:
    """Writes per second per store: the sum over the shards it leads of the rate its heartbeat reported."""
    leader = {s.descriptor.shard_id: s.descriptor.leader_node_id for s in resp.map.shards}
    out: dict[int, float] = {n.node_id: 0.0 for n in resp.map.nodes if n.kind == ppb.STORE}
    for st in resp.shard_stats:
        if st.is_leader and leader.get(st.shard_id) in out:
            out[leader[st.shard_id]] += st.write_rate
    return {n: round(r, 1) for n, r in sorted(out.items())}


def test_hot_shard_splits_by_write_rate_and_its_halves_lead_on_two_stores(cluster: Cluster) -> None:
    m0 = cluster.get_map()
    hot = m0.shards[0].descriptor
    cold = m0.shards[1].descriptor
    hot_shard = Shard(hot.shard_id, tuple((r.start, r.end) for r in hot.slots), (), Epoch(), 0, 1)
    mid = middle_slot(hot_shard)
    assert mid is not None
    # Hot keys on both sides of the middle slot, so both halves keep the load after the split.
    lower = keys_in(m0, hot.shard_id, "hot-lo-", 4 * HOT_LOADS, below=mid)
    upper = keys_in(m0, hot.shard_id, "hot-up-", 4 * HOT_LOADS, above=mid)
    loads = [
        PacedLoad(cluster, keys=tuple(k for pair in zip(lower[i::HOT_LOADS], upper[i::HOT_LOADS]) for k in pair), ops_per_s=HOT_OPS_PER_S)
        for i in range(HOT_LOADS)
    ]
    loads.append(PacedLoad(cluster, keys=tuple(keys_in(m0, cold.shard_id, "cold-", 4)), ops_per_s=COLD_OPS_PER_S))

    samples: list[tuple[float, ppb.GetMapResponse]] = []

    def sample() -> ppb.GetMapResponse:
        resp: ppb.GetMapResponse = cluster.call("GetMap", ppb.GetMapRequest(linearizable=True))
        samples.append((time.monotonic(), resp))
        return resp

    def split_done() -> ppb.GetMapResponse | None:
        resp = sample()
        ids = {s.descriptor.shard_id for s in resp.map.shards}
        return resp if len(ids) > 2 else None

    def halves_led_apart(new_id: int) -> ppb.GetMapResponse | None:
        resp = sample()
        lead = {s.descriptor.shard_id: s.descriptor.leader_node_id for s in resp.map.shards}
        return resp if lead.get(hot.shard_id) and lead.get(new_id) and lead[hot.shard_id] != lead[new_id] else None

    t0 = time.monotonic()
    for load in loads:
        load.__enter__()
    try:
        split = wait_until(split_done, timeout=60, what=f"shard {hot.shard_id} splits under its write load", interval=0.2)
        t_split = time.monotonic() - t0
        before = next(
            (r for _, r in reversed(samples[:-1]) if any(st.is_leader and st.shard_id == hot.shard_id and st.write_rate > 0 for st in r.shard_stats)),
            None,
        )
        new_ids = {s.descriptor.shard_id for s in split.map.shards} - {hot.shard_id, cold.shard_id}
        new_id = min(new_ids)
        apart = wait_until(lambda: halves_led_apart(new_id), timeout=60, what=f"shards {hot.shard_id} and {new_id} led by two stores", interval=0.2)
        t_apart = time.monotonic() - t0
        # Let a few heartbeats carry the halves' rates from their new leaders.
        acked = sum(x.acked_puts() for x in loads)
        wait_until(lambda: sum(x.acked_puts() for x in loads) >= acked + 150, timeout=60, what="writes go on after the split")
        after = sample()
    finally:
        for load in loads:
            load.stop()
    for load in loads:
        load.read_all()
        load.check(min_acked=20, min_reads=10)

    ops = cluster.call("ListOperators", ppb.ListOperatorsRequest()).operators
    split_ops = [o for o in ops if o.kind == "split" and o.shard_id == hot.shard_id]
    assert split_ops, f"no split operator on shard {hot.shard_id}: {ops}"
    steps = [(ppb.StepKind.Name(s.kind), s.new_shard_id or s.node_id) for s in split_ops[0].steps]
    assert steps == [("SPLIT", new_id)], split_ops[0]
    m = re.search(r"write_rate=([0-9.]+)", split_ops[0].note)
    assert m and float(m.group(1)) >= SPLIT_WRITE_RATE, f"split for its write rate: {split_ops[0].note}"
    lead = {s.descriptor.shard_id: s.descriptor.leader_node_id for s in apart.map.shards}
    print(
        f"load split: shard {hot.shard_id} split into {hot.shard_id}+{new_id} {t_split:.1f} s after the load began "
        f"(halves led by nodes {lead[hot.shard_id]} and {lead[new_id]} at {t_apart:.1f} s); operator {split_ops[0].id} steps {steps}; "
        f"split because {split_ops[0].note!r}; "
        f"per-store writes/s before {store_rates(before) if before else '?'} (per shard: leader, writes/s {shard_rates(before) if before else '?'}), "
        f"after {store_rates(after)} ({shard_rates(after)}); "
        f"operators: {[(o.id, o.kind, o.shard_id, [(ppb.StepKind.Name(x.kind), x.node_id or x.new_shard_id) for x in o.steps], o.state) for o in ops]}; "
        f"leaders at the start {shard_rates(samples[0][1]) if samples else '?'}; "
        f"shards now {len(after.map.shards)}; acked puts {sum(x.acked_puts() for x in loads)}, reads {sum(x.reads() for x in loads)}"
    )
    assert lead[hot.shard_id] != lead[new_id]
