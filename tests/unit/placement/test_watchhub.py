"""placement/watchhub.py: the changes a watcher that comes back missed, from
the hub's bounded history, or None when it needs the whole map."""

from __future__ import annotations

from flotillapb import placement_pb2 as ppb
from placement.watchhub import MapWatchHub


def delta(v: int) -> ppb.WatchMapResponse:
    return ppb.WatchMapResponse(map_version=v, removed_shards=[v])


def versions(items: list[ppb.WatchMapResponse] | None) -> list[int] | None:
    return None if items is None else [r.map_version for r in items]


def test_the_changes_after_a_version_while_the_history_holds_them() -> None:
    hub = MapWatchHub(limit=100, history=5)
    for v in range(11, 19):
        hub.publish(delta(v))
    assert versions(hub.since(15, 18)) == [16, 17, 18]
    assert versions(hub.since(13, 18)) == [14, 15, 16, 17, 18]  # the oldest 5 kept: 14..18
    assert hub.since(12, 18) is None  # 13 is gone: the whole map
    assert hub.since(0, 18) is None  # a watcher with no map
    assert hub.since(18, 18) == [] and hub.since(20, 18) == []  # up to date, or ahead of this server


def test_a_gap_or_a_whole_map_change_starts_the_history_again() -> None:
    hub = MapWatchHub(limit=100, history=10)
    for v in (1, 2, 3):
        hub.publish(delta(v))
    hub.publish(delta(5))  # 4 never came here
    assert hub.since(2, 5) is None and versions(hub.since(4, 5)) == [5]
    hub.publish_full([ppb.WatchMapResponse(map_version=6, full=ppb.ClusterMap(map_version=6))])
    assert hub.since(5, 6) is None
    hub.publish(delta(7))
    assert hub.since(5, 7) is None and versions(hub.since(6, 7)) == [7]
    assert hub.since(6, 8) is None  # the caller's state is past what the history holds


def test_a_subscriber_gets_every_part_and_is_dropped_when_too_far_behind() -> None:
    hub = MapWatchHub(limit=3, history=10)
    sub = hub.subscribe()
    parts = [ppb.WatchMapResponse(map_version=1, full=ppb.ClusterMap(), more=True), ppb.WatchMapResponse(map_version=1, full=ppb.ClusterMap())]
    hub.publish_full(parts)
    assert list(sub.items) == parts and len(hub) == 1
    hub.publish(delta(2))
    hub.publish(delta(3))  # a fourth queued response: over the limit
    assert sub.overflow and len(hub) == 0
