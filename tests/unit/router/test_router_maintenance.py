"""Pure pieces of router/maintenance.py's alarms and HashKV: etcd's alarm
text, which store nodes an alarm request acts on, and the combined hash over
shards (order- and layout-sensitive)."""

from __future__ import annotations

import zlib

import pytest

from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from router.etcd_errors import EtcdError
from router.maintenance import alarm_targets, alarm_text, combine_shard_hashes


def test_alarm_text_is_etcds() -> None:
    # etcd's StatusResponse.errors carry AlarmMember.String(): trailing space included.
    assert alarm_text(11, epb.NOSPACE) == "memberID:11 alarm:NOSPACE "
    assert alarm_text(3, epb.CORRUPT) == "memberID:3 alarm:CORRUPT "


def test_combined_hash_is_in_slot_order_and_sees_every_shard() -> None:
    parts = [(512, 0xDEADBEEF), (0, 0x01020304)]
    h = combine_shard_hashes(parts)
    assert h == combine_shard_hashes(list(reversed(parts)))  # slot order, not answer order
    expected = zlib.crc32(bytes.fromhex("00000000" "01020304" "00000200" "deadbeef"))
    assert h == expected
    assert combine_shard_hashes([(512, 0xDEADBEEE), (0, 0x01020304)]) != h
    assert combine_shard_hashes([(256, 0xDEADBEEF), (0, 0x01020304)]) != h  # another layout
    assert combine_shard_hashes([]) == 0


def test_alarm_targets_accept_member_zero_and_the_routers_own_id() -> None:
    nodes = {101: "a:1", 102: "b:1"}
    act, deact, get = epb.AlarmRequest.ACTIVATE, epb.AlarmRequest.DEACTIVATE, epb.AlarmRequest.GET
    # etcd: memberID 0 is this member, and a member may name its own id (MemberList's): every store node behind the router.
    assert alarm_targets(act, 0, 1001, nodes) == nodes
    assert alarm_targets(act, 1001, 1001, nodes) == nodes
    assert alarm_targets(deact, 0, 1001, nodes) == nodes
    assert alarm_targets(deact, 1001, 1001, nodes) == nodes
    # A store node's id: that node (also when the router runs inside it and has its id).
    assert alarm_targets(act, 102, 1001, nodes) == {102: "b:1"}
    assert alarm_targets(act, 102, 102, nodes) == {102: "b:1"}
    assert alarm_targets(get, 102, 1001, nodes) == nodes
    # Anyone else: etcd's "member not found" to arm, nothing to disarm.
    with pytest.raises(EtcdError) as info:
        alarm_targets(act, 999, 1001, nodes)
    assert info.value.message == "etcdserver: member not found"
    assert alarm_targets(deact, 999, 1001, nodes) == {}
