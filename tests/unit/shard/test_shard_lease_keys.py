"""Lease keys on the shard: DeleteLeaseKeys ("delete these keys if their lease
is still L", placement's deletion of an ended lease's keys) and the lease
changes a shard leader reports from applied events (shard/node/leases.py)."""

from __future__ import annotations

from shard.codec import decode_command, encode_command
from shard.leasekeys import lease_changes
from shard.types import Command, DeleteLeaseKeys, DeleteRangeRequest, DeleteRangeResponse, EventType, PutRequest, TxnRequest


def test_delete_lease_keys_deletes_only_keys_still_on_the_lease(shard):
    shard.put(b"a", b"1", lease=5)
    shard.put(b"b", b"1", lease=5)
    shard.put(b"c", b"1", lease=5)
    shard.put(b"c", b"2")  # rewritten without the lease: it stays
    shard.put(b"d", b"1", lease=6)  # another lease: it stays
    a = shard.apply(DeleteLeaseKeys(5, (b"a", b"b", b"c", b"d", b"never-written")))
    assert isinstance(a.outcome, DeleteRangeResponse) and a.outcome.deleted == 2
    assert sorted((e.type, e.kv.key) for e in a.events) == [(EventType.DELETE, b"a"), (EventType.DELETE, b"b")]
    rev = shard.sm.revision
    assert shard.get(b"a") is None and shard.get(b"b") is None
    assert shard.get(b"c").value == b"2" and shard.get(b"d").lease == 6
    # Idempotent: a retry deletes nothing and leaves the revision alone.
    again = shard.apply(DeleteLeaseKeys(5, (b"a", b"b", b"c")))
    assert again.outcome == DeleteRangeResponse(rev, 0, ()) and again.events == ()
    assert shard.sm.revision == rev


def test_delete_lease_keys_round_trips_through_the_codec():
    cmd = Command(DeleteLeaseKeys(-3, (b"k1", b"", b"\x00\xff")), stamp=9, closed_ts=8)
    assert decode_command(encode_command(cmd)) == cmd


def test_lease_changes_of_applied_events(shard):
    a1 = shard.apply(PutRequest(b"k", b"v", lease=5))
    assert lease_changes(a1.events) == [(5, b"k", False)]
    a2 = shard.apply(PutRequest(b"k", b"v2", lease=6))  # moves to another lease
    assert lease_changes(a2.events) == [(5, b"k", True), (6, b"k", False)]
    a3 = shard.apply(PutRequest(b"k", b"v3"))  # rewritten without a lease
    assert lease_changes(a3.events) == [(6, b"k", True)]
    shard.put(b"j", b"v", lease=7)
    a4 = shard.apply(TxnRequest((), (PutRequest(b"j", b"w", ignore_lease=True),), ()))  # keeps its lease
    assert lease_changes(a4.events) == [(7, b"j", False)]
    shard.put(b"k", b"v4", lease=8)
    a5 = shard.apply(DeleteRangeRequest(b"k"))  # deleted
    assert lease_changes(a5.events) == [(8, b"k", True)]
