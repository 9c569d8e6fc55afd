"""Pure pieces of router/maintenance.py's alarms and HashKV: etcd's alarm
text, and the combined hash over shards (order- and layout-sensitive)."""

from __future__ import annotations

import zlib

from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from router.maintenance import alarm_text, combine_shard_hashes


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
