"""The KeyDeleter seam: how placement deletes the keys of an ended lease.

When a lease ends (revoked, or expired in the leader's memory), placement
holds the keys attached to it (reported by shard leaders through
LeaseAttach) and deletes them shard by shard: one `delete_keys` call per
shard, then a `LeaseKeysDeleted` entry in the placement log for those keys.
A failure leaves the rest for the next round, on this leader or the next:
the calls must be idempotent, and they must delete a key only if it is
still attached to that lease (a key rewritten without the lease, or under
another lease, since the attachment was reported must survive). The store
node implements this as a "delete these keys if their lease is L" write to
the shard's leader; `MemoryKeyDeleter` is the in-memory twin for tests and
for running placement before that wiring exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["KeyDeleter", "KeyDeletionFailed", "MemoryKeyDeleter"]


class KeyDeletionFailed(Exception):
    """The shard did not confirm the deletion; placement retries later."""


class KeyDeleter(Protocol):
    async def delete_keys(self, shard_id: int, lease_id: int, keys: Sequence[bytes]) -> None:
        """Delete those of `keys` (all in shard_id's slots) still attached to
        lease_id. Returns once done; raises KeyDeletionFailed (or any error)
        if it cannot say so."""
        ...


@dataclass
class MemoryKeyDeleter:
    """Records every call; `fail_next` makes that many calls fail first."""

    calls: list[tuple[int, int, tuple[bytes, ...]]] = field(default_factory=list)
    deleted: set[tuple[int, bytes]] = field(default_factory=set)
    fail_next: int = 0

    async def delete_keys(self, shard_id: int, lease_id: int, keys: Sequence[bytes]) -> None:
        self.calls.append((shard_id, lease_id, tuple(keys)))
        if self.fail_next > 0:
            self.fail_next -= 1
            raise KeyDeletionFailed(f"shard {shard_id}: injected failure")
        self.deleted.update((lease_id, k) for k in keys)

    @property
    def keys_deleted(self) -> int:
        return len(self.deleted)
