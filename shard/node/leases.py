"""Lease attachment (when the node is given a ``LeaseRegistry``, i.e.
placement).

A write that puts a key with a lease first attaches the key to the lease in
placement (``check``), and is refused with etcd's "requested lease not
found" if the lease does not exist; only then is it proposed. Attaching
adds the key to the lease without taking it from another (placement lists a
key under every lease a put may give it); after the apply, the leader
detaches it from each lease it did not get (``settle``: a txn branch that
did not run), and the applied events detach it from the lease it left. So placement
knows every key that may carry a lease before the key exists, and the keys
of an ended lease are deleted with ``DeleteLeaseKeys`` ("delete if still
attached to L", through the shard's log: idempotent, and harmless for keys
whose put never applied or that were rewritten since). After applying, the
shard leader reports in the background what changed (``run``): detaches (a
key rewritten without its lease, or deleted), and the attachments again: a
lease that ended between the check and the apply answers lease_not_found,
and the leader then deletes the key if it still carries that lease (etcd
does the check and the put atomically; here the re-report closes the gap).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Sequence

from raft.core import ProposalDropped
from shard import slots
from shard.codec import encode_command
from shard.errors import LeaseNotFound, ServerBusy, ShardError, ShardNotFound, StoreError, WrongShard
from shard.leasekeys import LeaseChange, LeaseRegistry, LeaseRegistryUnavailable, lease_changes, lease_puts
from shard.node.routing import RoutingChecks
from shard.node.state import NodeState
from shard.statemachine import Applied
from shard.types import Command, DeleteLeaseKeys, DeleteRangeResponse, Event, RangeRequest, Request, RequestOp

log = logging.getLogger(__name__)


class LeaseAttachment:
    def __init__(self, state: NodeState, checks: RoutingChecks) -> None:
        self._s = state
        self._checks = checks
        self.registry: LeaseRegistry | None = None
        """Placement's leases; None: puts with a lease are not checked (static clusters)."""
        self._reports: list[tuple[int, LeaseChange]] = []
        self._kick = asyncio.Event()

    def on_applied_events(self, shard_id: int, events: tuple[Event, ...]) -> None:
        """Events a replica applied (ShardReplica's on_events): the leader queues their lease changes."""
        if self.registry is None or not self._s.is_leader(shard_id):
            return
        for ch in lease_changes(events):
            self._reports.append((shard_id, ch))
        if self._reports:
            self._kick.set()

    async def run(self) -> None:
        """Send the lease changes applied by shards this node leads, in batches."""
        s = self._s
        while True:
            await self._kick.wait()
            self._kick.clear()
            batch, self._reports = self._reports, []
            if not batch or self.registry is None:
                continue
            try:
                missing = await self.registry.attach([ch for _, ch in batch])
            except LeaseRegistryUnavailable as exc:
                log.warning("node=%d lease report of %d changes failed (%s); retrying", s.node_id, len(batch), exc)
                self._reports[:0] = batch
                await s.clock.sleep(0.5)
                self._kick.set()
                continue
            doomed: dict[tuple[int, int], list[bytes]] = collections.defaultdict(list)
            for i in missing:
                sid, (lease_id, key, _) = batch[i]
                doomed[(sid, lease_id)].append(key)
            for (sid, lease_id), ks in doomed.items():
                try:
                    await self.delete_lease_keys(sid, lease_id, ks)
                except StoreError as exc:
                    log.warning("node=%d shard=%d keys of ended lease %x not deleted (%s)", s.node_id, sid, lease_id, exc)

    async def check(self, request: Request | RequestOp) -> None:
        """Attach the keys a write puts with a lease, before proposing it;
        LeaseNotFound if a lease does not exist."""
        if self.registry is None:
            return
        puts = lease_puts(request)
        if not puts:
            return
        try:
            missing = await self.registry.attach([(lease, key, False) for lease, key in puts])
        except LeaseRegistryUnavailable as exc:
            raise ServerBusy(f"cannot check the lease with placement: {exc}", 200) from None
        if missing:
            raise LeaseNotFound()

    def settle(self, shard_id: int, request: Request | RequestOp) -> None:
        """After a write applied (or failed) here as leader: every key that
        ``check`` attached to a lease before the proposal and that does not
        carry that lease now (the txn branch that named it did not run, or a
        later write changed it) is detached again, through the same ordered
        report queue as the applied events. Placement so lists a key under a
        lease only while a put with that lease may still apply or did."""
        if self.registry is None:
            return
        puts = lease_puts(request)
        if not puts:
            return
        rep = self._s.replicas.get(shard_id)
        if rep is None:
            return
        for lease_id, key in puts:
            kvs = rep.sm.range(RangeRequest(key=key)).kvs
            if not kvs or kvs[0].lease != lease_id:
                self._reports.append((shard_id, (lease_id, key, True)))
        if self._reports:
            self._kick.set()

    async def delete_lease_keys(self, shard_id: int, lease_id: int, lease_keys: Sequence[bytes]) -> int:
        """As the shard's leader, delete those of lease_keys still attached to
        lease_id (through the shard's log); the number deleted."""
        s = self._s
        rep = s.replicas.get(shard_id)
        if rep is None:
            raise ShardNotFound(shard_id)
        for key in lease_keys:
            if not rep.sm.owns(key):
                raise WrongShard(slots.slot_of(key, rep.sm.slot_count))
        if not s.is_leader(shard_id):
            raise self._checks.not_leader(shard_id)
        stamp = s.stamp()
        cmd = Command(DeleteLeaseKeys(lease_id, tuple(lease_keys)), stamp=stamp, closed_ts=stamp - 1)
        try:
            applied = await s.host.propose(shard_id, encode_command(cmd), timeout_s=s.cfg.propose_timeout_s)
        except ProposalDropped:
            raise self._checks.not_leader(shard_id) from None
        except TimeoutError:
            raise ServerBusy("the deletion was not applied in time: its outcome is unknown; retry", 100, outcome_unknown=True) from None
        assert isinstance(applied, Applied), applied
        if isinstance(applied.outcome, ShardError):
            raise applied.outcome
        assert isinstance(applied.outcome, DeleteRangeResponse)
        return applied.outcome.deleted
