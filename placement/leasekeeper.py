"""Leases on the placement leader: the Lease calls, expiry, and deleting
the keys of ended leases (DESIGN.md, "Watch, leases").

Only grant and revoke go through the log. Deadlines live in this leader's
memory (`ExpiryTable`, placement/leases.py): a new leader renews every
lease to its full TTL. The duty loop calls `expire` (revoke what is past its
deadline) and `delete_ended_keys`: the keys of ended leases are deleted
shard by shard through the KeyDeleter seam, each shard's completion logged
(LeaseKeysDeleted) so a new leader resumes where this one stopped.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable

from placement.commands import AttachKeys, GrantLease, KeyChange, LeaseKeysDeleted, RejectCode, Rejected, RevokeLease
from placement.config import PlacementConfig
from placement.deleter import KeyDeleter
from placement.errors import KeyDeletionFailed, RejectedError
from placement.group import PlacementGroup
from placement.leases import ExpiryTable, clamp_ttl
from placement.model import Lease

log = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(self, group: PlacementGroup, cfg: PlacementConfig, rng: random.Random, deleter: KeyDeleter) -> None:
        self.g = group
        self.cfg = cfg
        self.rng = rng
        self.deleter = deleter
        self.expiry = ExpiryTable()
        self._revoking: set[int] = set()
        self._delete_retry_at = 0.0

    # -- the Lease calls ---------------------------------------------------------------
    async def grant(self, ttl_s: int, lease_id: int) -> Lease:
        self.g.require_leader()
        ttl = clamp_ttl(ttl_s, self.cfg.min_lease_ttl_s)
        while True:
            lid = lease_id or (self.rng.getrandbits(63) or 1)
            out = await self.g.propose(GrantLease(lid, ttl))
            if isinstance(out, Rejected) and out.code == RejectCode.LEASE_EXISTS and not lease_id:
                continue  # our random pick is taken: pick again
            if isinstance(out, Rejected):
                raise RejectedError(out)
            assert isinstance(out, Lease)
            self.expiry.track(out.lease_id, out.ttl_s, self.g.clock.monotonic())
            return out

    async def revoke(self, lease_id: int) -> None:
        self.g.require_leader()
        self._revoking.add(lease_id)
        try:
            await self.g.propose_ok(RevokeLease(lease_id))
        finally:
            self._revoking.discard(lease_id)
            self.expiry.forget(lease_id)
        self.g.kick.set()
        await self.g.wait_state(lambda st: lease_id not in st.ending, self.cfg.revoke_wait_s)

    def keep_alive(self, lease_id: int) -> int:
        """The renewed TTL, or 0 if the lease does not exist (etcd's answer)."""
        self.g.require_leader()
        lease = self.g.state.leases.get(lease_id)
        if lease is None or lease_id in self._revoking:
            return 0
        now = self.g.clock.monotonic()
        if lease_id not in self.expiry:
            self.expiry.track(lease_id, lease.ttl_s, now)
            return lease.ttl_s
        return self.expiry.keep_alive(lease_id, now) or 0

    def time_to_live(self, lease_id: int) -> tuple[int, int, tuple[bytes, ...]] | None:
        """(seconds left, granted TTL, keys), or None if the lease does not exist."""
        self.g.require_leader()
        lease = self.g.state.leases.get(lease_id)
        if lease is None:
            return None
        left = self.expiry.remaining_s(lease_id, self.g.clock.monotonic())
        return (lease.ttl_s if left is None else int(left)), lease.ttl_s, tuple(sorted(lease.keys))

    async def attach(self, changes: Iterable[KeyChange]) -> tuple[int, ...]:
        self.g.require_leader()
        out = await self.g.propose_ok(AttachKeys(tuple(changes)))
        assert isinstance(out, tuple)
        return out

    # -- the leader's duties ----------------------------------------------------------------
    def renew_all(self, now: float) -> None:
        """A new leader: every lease gets its full TTL from now."""
        self.expiry.sync({lid: lease.ttl_s for lid, lease in self.g.state.leases.items()}, now)

    async def expire(self) -> None:
        now = self.g.clock.monotonic()
        self.expiry.sync({lid: lease.ttl_s for lid, lease in self.g.state.leases.items() if lid not in self._revoking}, now)
        for lid in self.expiry.expired(now):
            self.expiry.forget(lid)
            self._revoking.add(lid)
            try:
                await self.g.propose(RevokeLease(lid))  # Rejected (already gone) is fine
            finally:
                self._revoking.discard(lid)
            log.debug("placement node=%d lease %x expired", self.g.node_id, lid)

    async def delete_ended_keys(self) -> None:
        now = self.g.clock.monotonic()
        if not self.g.state.ending or now < self._delete_retry_at:
            return
        for lid, keys in list(self.g.state.ending.items()):
            for shard_id, shard_keys in self.g.state.keys_by_shard(keys).items():
                try:
                    await self.deleter.delete_keys(shard_id, lid, shard_keys)
                except (KeyDeletionFailed, TimeoutError) as exc:
                    log.warning("placement node=%d lease %x: deleting keys of shard %d failed (%s); retrying", self.g.node_id, lid, shard_id, exc)
                    self._delete_retry_at = now + self.cfg.delete_retry_s
                    return
                await self.g.propose(LeaseKeysDeleted(lid, shard_keys))
