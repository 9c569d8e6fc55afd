"""Keys and leases on the store side (PURE): the seam to where leases live
(placement's LeaseAttach), and what a write or its applied events change in
key<->lease attachments. shard/node/leases.py uses them (see its docstring)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from shard.types import Event, EventType, PutRequest, Request, RequestOp, TxnRequest

__all__ = ["LeaseChange", "LeaseRegistry", "LeaseRegistryUnavailable", "lease_changes", "lease_puts"]

LeaseChange = tuple[int, bytes, bool]
"""(lease_id, key, detach)."""


class LeaseRegistry(Protocol):
    """Where leases live (placement's LeaseAttach): the store's seam to it."""

    async def attach(self, changes: Sequence[LeaseChange]) -> tuple[int, ...]:
        """Record attachments and detachments; return the indexes (in
        changes) of attachments whose lease does not exist. Raises
        LeaseRegistryUnavailable when it cannot say."""
        ...


class LeaseRegistryUnavailable(Exception):
    pass


def lease_puts(op: Request | RequestOp) -> list[tuple[int, bytes]]:
    """(lease, key) of every put with a lease in op (every branch of a txn)."""
    if isinstance(op, PutRequest):
        return [(op.lease, op.key)] if op.lease and not op.ignore_lease else []
    if isinstance(op, TxnRequest):
        return [lk for sub in (*op.success, *op.failure) for lk in lease_puts(sub)]
    return []


def lease_changes(events: Iterable[Event]) -> list[LeaseChange]:
    """What applied events change in key<->lease attachments."""
    out: list[LeaseChange] = []
    for ev in events:
        new = ev.kv.lease if ev.type == EventType.PUT else 0
        old = ev.prev_kv.lease if ev.prev_kv is not None else 0
        if old and old != new:
            out.append((old, ev.kv.key, True))
        if new:
            out.append((new, ev.kv.key, False))
    return out
