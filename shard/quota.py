"""The space quota and the node's alarms, as etcd has them (pure).

etcd (server/etcdserver/quota.go, apply.go's applierV3Capped, alarm.go):

- a member's quota is ``--quota-backend-bytes`` (0: the default, 2 GiB in
  etcd 3.4; below 0: no quota);
- a request that can grow the data has a *cost*: a Put costs 256 +
  len(key) + len(value); a Txn the larger of its success and failure
  branches' put costs (nested txns count here too: they grow the data just
  the same). Everything else (Range, DeleteRange, Compact, a txn without
  puts) costs 0 and always passes, so users can free space;
- a request that costs something is refused with "etcdserver: mvcc: database
  space exceeded" (RESOURCE_EXHAUSTED) while the NOSPACE alarm is active, or
  when the space used plus its cost would reach the quota, which raises the
  alarm;
- an alarm stays until it is disarmed (Alarm DEACTIVATE), even once space is
  freed; a member still over quota raises it again at its next check.

Flotilla keeps one ``SpaceQuota`` per store node (the member id of its alarms
is the node id). The node measures the space it uses on a timer, not per
request, and feeds it to ``observe``; its shard leaders call ``admit`` before
proposing. Between two measurements a burst of writes may overshoot the quota
by what the node accepted in that interval.

A node's alarms reach the others through placement (its heartbeat carries
them, the answer lists every node with NOSPACE): a leader also refuses a
growing write to a shard with a replica on a node with NOSPACE, which is
etcd's cluster-wide refusal narrowed to the shards that would fill that node
(a heartbeat interval late).

The node keeps its active alarms on disk (shard/space.py), so an alarm
stays across a restart until it is disarmed, as etcd keeps them in its
backend. CORRUPT can be activated and listed, as etcd allows, but nothing here acts on
it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from shard.errors import NoSpace
from shard.types import PutRequest, Request, RequestOp, TxnRequest

DEFAULT_QUOTA_BYTES = 2 * 1024 * 1024 * 1024
"""etcd 3.4's DefaultQuotaBytes."""
KV_OVERHEAD_BYTES = 256
"""etcd's kvOverhead: what one put costs besides its key and value."""


class AlarmType(enum.IntEnum):
    """etcdserverpb.AlarmType (same numbers)."""

    NONE = 0
    NOSPACE = 1
    CORRUPT = 2


def quota_bytes(flag: int) -> int:
    """The quota a ``--quota-backend-bytes`` value means: 0 is etcd's default;
    a negative value turns the quota off (returned as -1)."""
    if flag == 0:
        return DEFAULT_QUOTA_BYTES
    return -1 if flag < 0 else flag


def cost(request: Request | RequestOp) -> int:
    """What a request may add to the data, in bytes (etcd's Cost); 0 for
    requests that cannot grow it."""
    if isinstance(request, PutRequest):
        return KV_OVERHEAD_BYTES + len(request.key) + len(request.value)
    if isinstance(request, TxnRequest):
        return max(sum(cost(op) for op in request.success), sum(cost(op) for op in request.failure))
    return 0


@dataclass(slots=True)
class SpaceQuota:
    """One node's quota, its last measurement and its active alarms."""

    quota_bytes: int
    """-1: no quota (alarms can still be activated by hand)."""
    used_bytes: int = 0
    alarms: set[AlarmType] = field(default_factory=set)
    peers_nospace: frozenset[int] = frozenset()
    """Other nodes with NOSPACE active (placement relays them): a shard with a
    replica there is refused growing writes too, or its leader would go on
    filling the full node's disk through replication."""
    acked_nospace: set[int] = field(default_factory=set)
    """Other nodes whose latest side-channel acknowledgement said NOSPACE:
    the same rule without placement (a static cluster), and sooner."""

    @property
    def enabled(self) -> bool:
        return self.quota_bytes >= 0

    def over(self, extra_bytes: int = 0) -> bool:
        """Would the node be at or past its quota with extra_bytes more?"""
        return self.enabled and self.used_bytes + extra_bytes >= self.quota_bytes

    def observe(self, used_bytes: int) -> bool:
        """Take a measurement; raise NOSPACE if it is over the quota. True if
        that raised the alarm now (it was not active)."""
        self.used_bytes = used_bytes
        if self.enabled and used_bytes > self.quota_bytes:
            return self.activate(AlarmType.NOSPACE)
        return False

    def admit(self, request: Request | RequestOp, replicas: Callable[[], Iterable[int]] = tuple) -> None:
        """Raise NoSpace unless the request may be proposed. A request that
        would take the node to its quota raises the alarm too (etcd's
        quotaKVServer.check). `replicas` gives the nodes of the shard's
        group (asked only while some other node has NOSPACE)."""
        c = cost(request)
        if c == 0:
            return
        if AlarmType.NOSPACE in self.alarms:
            raise NoSpace()
        if self.peers_nospace or self.acked_nospace:
            full = self.peers_nospace | self.acked_nospace
            if not full.isdisjoint(replicas()):
                raise NoSpace()
        if self.over(c):
            self.activate(AlarmType.NOSPACE)
            raise NoSpace()

    def activate(self, alarm: AlarmType) -> bool:
        """Arm an alarm; True if it was not active. NONE arms nothing."""
        if alarm == AlarmType.NONE or alarm in self.alarms:
            return False
        self.alarms.add(alarm)
        return True

    def deactivate(self, alarm: AlarmType) -> bool:
        """Disarm an alarm (NONE: every alarm, as a convenience for tools);
        True if one was active. Disarming NOSPACE here forgets the peers'
        acknowledged NOSPACE too (a disarm reaches every node at once; a
        peer still full says so again in its next acknowledgement)."""
        if alarm in (AlarmType.NONE, AlarmType.NOSPACE):
            self.acked_nospace.clear()
        if alarm == AlarmType.NONE:
            had = bool(self.alarms)
            self.alarms.clear()
            return had
        if alarm not in self.alarms:
            return False
        self.alarms.discard(alarm)
        return True

    def active(self, alarm: AlarmType = AlarmType.NONE) -> tuple[AlarmType, ...]:
        """The active alarms of that type (NONE: all), in type order, as etcd's
        alarm store Get."""
        return tuple(a for a in sorted(self.alarms) if alarm in (AlarmType.NONE, a))
