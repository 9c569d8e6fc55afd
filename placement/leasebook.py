"""The leases part of the placement state (PURE): grants, keys attached to
each lease, and the leases that ended with keys still to delete.

etcd's model (DESIGN.md, "Watch, leases"): only grant and revoke go through
the log (expiry is the leader's memory: placement/leases.py). A key carries
at most one lease in its shard, but a lease here lists every key that may
carry it: attaching adds, only a detach removes (``attach``). A lease that ends
(revoked or expired) stays in `ending` with its keys until every shard has
deleted them (LeaseKeysDeleted), so a new leader resumes the deletion.

Lease changes do not bump the map version: routers do not route by leases.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from placement.codec import LeaseRecord
from placement.commands import Applied, GrantLease, KeyChange, LeaseKeysDeleted, RejectCode, Rejected
from placement.model import MAX_LEASE_TTL_S, Lease


@dataclass(slots=True)
class LeaseBook:
    leases: dict[int, Lease] = field(default_factory=dict)
    ending: dict[int, frozenset[bytes]] = field(default_factory=dict)
    """Leases revoked or expired whose attached keys are not all deleted yet."""
    _key_leases: dict[bytes, set[int]] = field(default_factory=dict)
    """key -> the live leases listing it (a put may give it any of them)."""

    # -- commands --------------------------------------------------------------
    def grant(self, cmd: GrantLease) -> Applied:
        if cmd.lease_id == 0:
            return Applied(Rejected(RejectCode.INVALID, "lease id 0 means no lease: the proposer picks an id"))
        if cmd.ttl_s > MAX_LEASE_TTL_S:
            return Applied(Rejected(RejectCode.LEASE_TTL_TOO_LARGE, f"TTL {cmd.ttl_s} s is above {MAX_LEASE_TTL_S} s"))
        if cmd.ttl_s <= 0:
            return Applied(Rejected(RejectCode.INVALID, f"TTL must be positive after clamping, got {cmd.ttl_s}"))
        if cmd.lease_id in self.leases or cmd.lease_id in self.ending:
            return Applied(Rejected(RejectCode.LEASE_EXISTS, f"lease {cmd.lease_id:x} already exists"))
        lease = Lease(cmd.lease_id, cmd.ttl_s)
        self.leases[cmd.lease_id] = lease
        return Applied(lease, leases_touched=(cmd.lease_id,))

    def revoke(self, lease_id: int) -> Applied:
        lease = self.leases.pop(lease_id, None)
        if lease is None:
            return Applied(Rejected(RejectCode.LEASE_NOT_FOUND, f"lease {lease_id:x} not found"))
        for k in lease.keys:
            self._unlink(k, lease_id)
        if lease.keys:
            self.ending[lease_id] = lease.keys
        return Applied(tuple(sorted(lease.keys)), leases_touched=(lease_id,))

    def attach(self, changes: Sequence[KeyChange]) -> Applied:
        """Attach or detach (lease, key) pairs. Attaching adds the key to
        the lease without taking it from another: the store attaches every
        lease a write may give a key before the write applies (a txn's
        branches, a put racing another), and detaches, after the apply, the
        ones it did not get (shard/node/leases.py). So a lease lists every
        key that may carry it, and an ended lease's keys are deleted "if
        still attached to it" (the shard knows which lease a key carries)."""
        not_found: list[int] = []
        touched: set[int] = set()
        for i, ch in enumerate(changes):
            held = self._key_leases.get(ch.key)
            if ch.detach:
                if held is not None and ch.lease_id in held:
                    self._set_keys(ch.lease_id, self.leases[ch.lease_id].keys - {ch.key})
                    self._unlink(ch.key, ch.lease_id)
                    touched.add(ch.lease_id)
                continue
            lease = self.leases.get(ch.lease_id)
            if lease is None:
                not_found.append(i)
                continue
            if held is not None and ch.lease_id in held:
                continue
            self._set_keys(ch.lease_id, lease.keys | {ch.key})
            self._key_leases.setdefault(ch.key, set()).add(ch.lease_id)
            touched.add(ch.lease_id)
        return Applied(tuple(not_found), leases_touched=tuple(sorted(touched)))

    def _unlink(self, key: bytes, lease_id: int) -> None:
        held = self._key_leases.get(key)
        if held is not None:
            held.discard(lease_id)
            if not held:
                del self._key_leases[key]

    def _set_keys(self, lease_id: int, keys: frozenset[bytes]) -> None:
        self.leases[lease_id] = dataclasses.replace(self.leases[lease_id], keys=keys)

    def keys_deleted(self, cmd: LeaseKeysDeleted) -> Applied:
        left = self.ending.get(cmd.lease_id)
        if left is None:
            return Applied(0)
        left = left - frozenset(cmd.keys)
        if left:
            self.ending[cmd.lease_id] = left
        else:
            del self.ending[cmd.lease_id]
        return Applied(len(left), leases_touched=(cmd.lease_id,))

    # -- queries and records ------------------------------------------------------
    def leases_of(self, key: bytes) -> frozenset[int]:
        """The live leases that list key."""
        return frozenset(self._key_leases.get(key, ()))

    def record(self, lease_id: int) -> LeaseRecord | None:
        """The record of one lease (live or ending), None if it has none."""
        lease = self.leases.get(lease_id)
        if lease is not None:
            return LeaseRecord(lease_id, lease.ttl_s, lease.keys, ending=False)
        keys = self.ending.get(lease_id)
        if keys is not None:
            return LeaseRecord(lease_id, 0, keys, ending=True)
        return None

    def load(self, records: Iterable[LeaseRecord]) -> None:
        for r in records:
            if r.ending:
                self.ending[r.lease_id] = r.keys
            else:
                self.leases[r.lease_id] = Lease(r.lease_id, r.ttl_s, r.keys)
                for k in r.keys:
                    self._key_leases.setdefault(k, set()).add(r.lease_id)
