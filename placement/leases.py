"""Lease expiry in the placement leader's memory (PURE: the caller passes `now`).

etcd's model (DESIGN.md, "Watch, leases"): only grant and revoke go through
the log; when each lease expires is known only to the leader, in memory. A
new leader renews every lease to its full TTL (`sync` starts every lease it
does not track yet at now + TTL), so a lease never expires early because of
a failover, at worst up to one TTL late.

`ExpiryTable` is driven by the placement server with a monotonic clock
reading in seconds; tests drive it with plain numbers.

The minimum TTL is etcd's rule (etcdserver/server.go, NewServer):

    minTTL = time.Duration((3*cfg.ElectionTicks)/2) * heartbeat   // heartbeat = TickMs
    MinLeaseTTL = int64(math.Ceil(minTTL.Seconds()))

i.e. one and a half election timeouts, rounded up to whole seconds (the
``3*ElectionTicks/2`` is integer division); with etcd's defaults (10 ticks of
100 ms) it is 2 s. A grant asking less gets the minimum (lessor.Grant clamps
``l.ttl < le.minLeaseTTL``); a TTL above MaxLeaseTTL (9e9 s) is refused.
"""

from __future__ import annotations

from collections.abc import Mapping

from placement.model import MAX_LEASE_TTL_S

__all__ = ["MAX_LEASE_TTL_S", "ExpiryTable", "clamp_ttl", "min_lease_ttl_s"]


def min_lease_ttl_s(election_ticks: int, tick_ms: int) -> int:
    """etcd's MinLeaseTTL for a Raft group ticking every tick_ms with election_ticks."""
    min_ttl_ms = ((3 * election_ticks) // 2) * tick_ms
    return max(1, -(-min_ttl_ms // 1000))


def clamp_ttl(ttl_s: int, min_ttl_s: int) -> int:
    """The TTL a grant gets: at least the minimum (etcd clamps, it does not refuse)."""
    return max(ttl_s, min_ttl_s)


class ExpiryTable:
    """Deadlines of the leases this leader tracks."""

    def __init__(self) -> None:
        self._deadline: dict[int, float] = {}
        self._ttl: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._deadline)

    def __contains__(self, lease_id: object) -> bool:
        return lease_id in self._deadline

    def clear(self) -> None:
        """This server stopped leading: it no longer knows any expiry."""
        self._deadline.clear()
        self._ttl.clear()

    def track(self, lease_id: int, ttl_s: int, now: float) -> None:
        """Grant or renew: the lease expires ttl_s from now."""
        self._ttl[lease_id] = ttl_s
        self._deadline[lease_id] = now + ttl_s

    def sync(self, leases: Mapping[int, int], now: float) -> None:
        """Match the leases of the state (id -> granted TTL): start the untracked
        ones at their full TTL (a new leader), forget the ones that are gone."""
        for lid in [lid for lid in self._deadline if lid not in leases]:
            self.forget(lid)
        for lid, ttl in leases.items():
            if lid not in self._deadline:
                self.track(lid, ttl, now)

    def keep_alive(self, lease_id: int, now: float) -> int | None:
        """Renew a tracked lease to its full TTL; its TTL, or None if untracked
        or already past its deadline (an expired lease cannot be revived)."""
        deadline = self._deadline.get(lease_id)
        if deadline is None or deadline <= now:
            return None
        ttl = self._ttl[lease_id]
        self._deadline[lease_id] = now + ttl
        return ttl

    def remaining_s(self, lease_id: int, now: float) -> float | None:
        deadline = self._deadline.get(lease_id)
        return None if deadline is None else max(0.0, deadline - now)

    def granted_ttl(self, lease_id: int) -> int | None:
        return self._ttl.get(lease_id)

    def expired(self, now: float) -> list[int]:
        """Tracked leases past their deadline, earliest first."""
        return sorted((lid for lid, d in self._deadline.items() if d <= now), key=lambda lid: (self._deadline[lid], lid))

    def forget(self, lease_id: int) -> None:
        self._deadline.pop(lease_id, None)
        self._ttl.pop(lease_id, None)
