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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import grpc
import grpc.aio

from flotillapb import store_pb2 as spb
from flotillapb import store_pb2_grpc
from placement.errors import KeyDeletionFailed
from rpc import tls
from rpc.channels import RECONNECT_OPTIONS

if TYPE_CHECKING:
    from placement.state import PlacementState

__all__ = ["KeyDeleter", "MemoryKeyDeleter", "StoreKeyDeleter"]


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


class StoreKeyDeleter:
    """Deletes through the shard's leader: StoreAdmin.DeleteLeaseKeys
    (store.proto), which proposes "delete these keys if their lease is
    still L" in the shard's log. The leader is found from the map (its
    leader hint first, then every replica), following NotLeader hints."""

    def __init__(self, state: Callable[[], PlacementState], *, timeout_s: float = 5.0) -> None:
        self._state = state
        self._timeout_s = timeout_s
        self._channels: dict[str, grpc.aio.Channel] = {}
        self.keys_deleted = 0
        """Keys confirmed no longer attached to their ended lease."""

    def _stub(self, address: str) -> store_pb2_grpc.StoreAdminStub:
        ch = self._channels.get(address)
        if ch is None:
            ch = self._channels[address] = tls.peer_aio_channel(address, RECONNECT_OPTIONS)
        return store_pb2_grpc.StoreAdminStub(ch)

    async def delete_keys(self, shard_id: int, lease_id: int, keys: Sequence[bytes]) -> None:
        st = self._state()
        if shard_id == 0:
            # No shard owns these keys' slots (the cluster is not bootstrapped):
            # no store holds them, there is nothing to delete.
            self.keys_deleted += len(keys)
            return
        shard = st.shards.get(shard_id)
        if shard is None:
            raise KeyDeletionFailed(f"shard {shard_id} is not in the map")
        order = [shard.leader_node_id] if shard.leader_node_id else []
        order += [r.node_id for r in shard.replicas if r.node_id not in order]
        req = spb.DeleteLeaseKeysRequest(shard_id=shard_id, lease_id=lease_id, keys=list(keys))
        last = "no replica tried"
        tried: set[int] = set()
        while order:
            nid = order.pop(0)
            if nid in tried:
                continue
            tried.add(nid)
            node = st.nodes.get(nid)
            if node is None or not node.address:
                continue
            try:
                resp = await self._stub(node.address).DeleteLeaseKeys(req, timeout=self._timeout_s)
            except grpc.aio.AioRpcError as exc:
                last = f"node {nid}: {exc.code().name}"
                continue
            if not resp.header.HasField("error"):
                self.keys_deleted += len(keys)  # confirmed gone (or never written, or re-leased)
                return
            err = resp.header.error
            last = f"node {nid}: {err}"
            if err.HasField("routing") and err.routing.HasField("not_leader"):
                hint = err.routing.not_leader.leader_node_id
                if hint and hint not in tried:
                    order.insert(0, hint)
                continue
            if err.HasField("routing") and err.routing.HasField("shard_not_found"):
                continue
            break  # WrongShard, ServerBusy, a KV error: retry later
        raise KeyDeletionFailed(f"shard {shard_id}: {last}".replace("\n", " "))

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for ch in channels.values():
            await ch.close()
