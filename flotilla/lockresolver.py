"""A store's resolver of txn locks nobody came for (DESIGN.md, "Transactions
across shards"): a lock left on a shard this store leads by a coordinator
that died is resolved here, without waiting for a request to meet it.

It is the router's own resolution (router/txn2pc.py, CrossShardTxns.resolve:
RESOLVE on the txn's primary, then COMMIT or ABORT on the locked shard),
run over a small router stack of its own: a map cache following placement
and a forwarder with its own router id (so its steps are deduplicated like
any router's). Wired here, in the process, because shard/ does not import
router/ (tests/unit/test_layering.py).
"""

from __future__ import annotations

import asyncio
import logging
import random

from flotillapb import store_pb2 as spb
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from router.cache import PlacementSource, RoutingCache
from router.forward import Channels, Forwarder
from router.txn2pc import CrossShardTxns
from shard.txn2pc import TxnLock

log = logging.getLogger(__name__)

RESOLVE_TIMEOUT_S = 10.0


class _Kv:
    """What CrossShardTxns needs of a KvRouter."""

    def __init__(self, fwd: Forwarder, cache: RoutingCache) -> None:
        self.fwd = fwd
        self.cache = cache

    def stamp(self, header: epb.ResponseHeader, revision: int | None = None) -> None:
        if revision is not None:
            header.revision = revision


class StoreLockResolver:
    def __init__(self, placement: list[str], slot_count: int) -> None:
        self._placement = placement
        self._slot_count = slot_count
        self._txns: CrossShardTxns | None = None
        self._cache: RoutingCache | None = None
        self._source_task: asyncio.Task[None] | None = None

    def _start(self) -> tuple[CrossShardTxns, RoutingCache]:
        if self._txns is None or self._cache is None:
            cache = self._cache = RoutingCache(self._slot_count)
            channels = Channels()
            source = PlacementSource(cache, self._placement, channel_for=channels.channel)
            cache.source = source
            fwd = Forwarder(cache, channels, router_id=random.SystemRandom().getrandbits(40) | 1)
            self._txns = CrossShardTxns(_Kv(fwd, cache))
            self._source_task = asyncio.create_task(source.run(), name="lock-resolver-map")
        return self._txns, self._cache

    async def __call__(self, shard_id: int, lock: TxnLock) -> None:
        txns, cache = self._start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RESOLVE_TIMEOUT_S
        while cache.shard(shard_id) is None or cache.shard(lock.primary) is None:
            if loop.time() >= deadline:
                raise TimeoutError("the shard map has not arrived")
            await cache.refresh()
            await asyncio.sleep(0.05)
        info = spb.TxnLocked(txn_id=lock.txn_id, primary_shard_id=lock.primary, locked_at=lock.stamp)
        await txns.resolve(shard_id, info, deadline)
        log.info("shard=%d: resolved the lock of txn %s left by its coordinator", shard_id, lock.txn_id.hex())
