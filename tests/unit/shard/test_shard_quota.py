"""The space quota's decisions (shard/quota.py): etcd's costs, what is refused
while NOSPACE is active, how the alarm is raised, kept and disarmed."""

from __future__ import annotations

import pytest

from shard.errors import NoSpace
from shard.quota import DEFAULT_QUOTA_BYTES, KV_OVERHEAD_BYTES, AlarmType, SpaceQuota, cost, quota_bytes
from shard.types import CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest


def test_flag_values_as_etcd() -> None:
    assert quota_bytes(0) == DEFAULT_QUOTA_BYTES == 2 * 1024**3
    assert quota_bytes(1000) == 1000
    assert quota_bytes(-5) == -1


def test_costs_follow_etcd() -> None:
    put = PutRequest(b"k" * 10, b"v" * 100)
    assert cost(put) == KV_OVERHEAD_BYTES + 110
    assert cost(DeleteRangeRequest(b"a", b"b")) == 0
    assert cost(CompactionRequest(5)) == 0
    big = PutRequest(b"x", b"y" * 1000)
    txn = TxnRequest((), (put, RangeRequest(b"a")), (big,))
    assert cost(txn) == cost(big)  # the larger branch
    assert cost(TxnRequest((), (DeleteRangeRequest(b"a"),), (RangeRequest(b"a"),))) == 0
    nested = TxnRequest((), (TxnRequest((), (put,), ()),), ())
    assert cost(nested) == cost(put)


def test_nospace_refuses_only_what_grows_the_data() -> None:
    q = SpaceQuota(10_000)
    put = PutRequest(b"k", b"v")
    q.admit(put)
    assert not q.observe(9_000)
    assert q.observe(10_001)  # raised now
    assert not q.observe(10_002)  # already active
    assert q.active() == (AlarmType.NOSPACE,)
    with pytest.raises(NoSpace) as info:
        q.admit(put)
    assert info.value.message == "etcdserver: mvcc: database space exceeded"
    with pytest.raises(NoSpace):
        q.admit(TxnRequest((), (put,), ()))
    for ok in (DeleteRangeRequest(b"k"), CompactionRequest(3), TxnRequest((), (DeleteRangeRequest(b"k"),), ()), RangeRequest(b"k")):
        q.admit(ok)


def test_alarm_stays_until_disarmed_and_comes_back_if_still_over() -> None:
    q = SpaceQuota(10_000)
    q.observe(20_000)
    q.observe(100)  # space freed: the alarm stays (etcd)
    with pytest.raises(NoSpace):
        q.admit(PutRequest(b"k", b"v"))
    assert q.deactivate(AlarmType.NOSPACE)
    assert not q.deactivate(AlarmType.NOSPACE)
    q.admit(PutRequest(b"k", b"v"))
    q.observe(20_000)  # still over at the next check: raised again
    assert q.active(AlarmType.NOSPACE) == (AlarmType.NOSPACE,)


def test_a_request_that_would_reach_the_quota_raises_the_alarm() -> None:
    q = SpaceQuota(10_000)
    q.observe(9_500)
    small = PutRequest(b"k", b"v")
    q.admit(small)
    with pytest.raises(NoSpace):
        q.admit(PutRequest(b"k", b"v" * 300))
    assert AlarmType.NOSPACE in q.alarms
    with pytest.raises(NoSpace):
        q.admit(small)  # now the alarm refuses every growing request


def test_no_quota_never_refuses_but_alarms_can_be_armed_by_hand() -> None:
    q = SpaceQuota(quota_bytes(-1))
    assert not q.observe(10**15)
    q.admit(PutRequest(b"k", b"v" * 1000))
    assert q.activate(AlarmType.NOSPACE)
    with pytest.raises(NoSpace):
        q.admit(PutRequest(b"k", b"v"))
    assert q.activate(AlarmType.CORRUPT) and not q.activate(AlarmType.NONE)
    assert q.active() == (AlarmType.NOSPACE, AlarmType.CORRUPT)
    assert q.active(AlarmType.CORRUPT) == (AlarmType.CORRUPT,)
    assert q.deactivate(AlarmType.NONE) and q.active() == ()


def test_a_replica_on_a_full_node_refuses_the_shards_growing_writes() -> None:
    """This node is under its quota, but another node with NOSPACE holds a
    replica of the shard: the leader here must not go on filling it."""
    q = SpaceQuota(10_000)
    put = PutRequest(b"k", b"v")
    q.peers_nospace = frozenset({12})
    asked: list[int] = []

    def replicas(nodes: tuple[int, ...]):  # type: ignore[no-untyped-def]
        def get() -> tuple[int, ...]:
            asked.append(1)
            return nodes

        return get

    with pytest.raises(NoSpace):
        q.admit(put, replicas((11, 12, 13)))
    q.admit(put, replicas((11, 13, 14)))  # no replica on the full node
    q.admit(DeleteRangeRequest(b"k"), replicas((11, 12, 13)))  # frees space: passes
    assert q.active() == ()  # the other node's alarm is not this node's
    q.peers_nospace = frozenset()
    n = len(asked)
    q.admit(put, replicas((11, 12, 13)))
    assert len(asked) == n  # nobody full: the group is not even looked up
