"""The node wiring of the space quota and of HashKV, on StoreNodes in one
process (real RocksDB, LocalTransport, virtual time; the space measurement is
the in-memory MemorySpace, so the test sets what each node "uses").

A node over its quota raises NOSPACE at its next timed measurement; the
leaders it hosts then refuse puts (NoSpace, before proposing: nothing reaches
the log) while deletes and compactions go through; the alarm stays after
space is freed until it is disarmed; a node still over raises it again. The
replicas of a shard hash alike at one revision."""

from __future__ import annotations

from pathlib import Path

import pytest

from shard.errors import NoSpace
from shard.node import RequestContext, StoreNode
from shard.quota import AlarmType, SpaceQuota
from shard.space import MemorySpace
from shard.types import CompactionRequest, DeleteRangeRequest, PutRequest, TxnRequest
from tests.unit.runtime.storenodes import NODES, Nodes, key_in

QUOTA = 10_000


async def test_nospace_refuses_growing_writes_until_disarmed(tmp_path: Path) -> None:
    c = Nodes(tmp_path)
    for n in NODES:
        await c.start(n, fresh=True)
    try:
        spaces = {}
        for n in NODES:
            c.nodes[n].quota = SpaceQuota(QUOTA)
            spaces[n] = c.nodes[n].space = MemorySpace(1_000)
        await c.until(lambda: c.leader(1), what="a leader of shard 1")
        key = key_in(((0, 8),), 0)
        await c.put(key, b"v1")

        for s in spaces.values():
            s.used = 2 * QUOTA
        await c.until(lambda: all(AlarmType.NOSPACE in c.nodes[n].quota.alarms for n in NODES), what="NOSPACE everywhere")
        lead = c.leader(1)
        assert lead is not None
        node = c.nodes[lead]
        ctx = RequestContext(1, node._replicas[1].epoch)  # noqa: SLF001 - test reads the replica's epoch
        applied = c.hosts[lead].status(1).applied
        with pytest.raises(NoSpace):
            await node.write(ctx, PutRequest(key, b"v2"))
        with pytest.raises(NoSpace):
            await node.write(ctx, TxnRequest((), (PutRequest(key, b"v2"),), ()))
        revision = node._replicas[1].sm.revision  # noqa: SLF001
        d = await node.write(ctx, DeleteRangeRequest(key))
        assert d.deleted == 1  # type: ignore[union-attr]
        await node.write(ctx, CompactionRequest(revision))
        assert c.hosts[lead].status(1).applied > applied

        # Space freed (a defragment gives it back): the alarm stays until disarmed.
        for s in spaces.values():
            s.freed_by_defragment = 2 * QUOTA - 500
        before, after = await node.defragment()
        assert (before, after) == (2 * QUOTA, 500) and spaces[lead].defragments == 1
        with pytest.raises(NoSpace):
            await node.write(ctx, PutRequest(key, b"v3"))
        assert node.quota.deactivate(AlarmType.NOSPACE)
        # The followers still have NOSPACE and their side-channel
        # acknowledgements say so: the leader refuses as etcd does while any
        # member has the alarm.
        await c.until(lambda: node.quota.acked_nospace == set(NODES) - {lead}, what="the followers' NOSPACE acknowledged")
        with pytest.raises(NoSpace):
            await node.write(ctx, PutRequest(key, b"v3"))
        for n in NODES:
            if n != lead:
                spaces[n].used = 500
                assert c.nodes[n].quota.deactivate(AlarmType.NOSPACE)
        await c.until(lambda: not node.quota.acked_nospace, what="acknowledgements without NOSPACE")
        await node.write(ctx, PutRequest(key, b"v3"))

        # A node still over raises it again at its next measurement.
        spaces[lead].used = 2 * QUOTA
        await c.until(lambda: AlarmType.NOSPACE in node.quota.alarms, what="NOSPACE again")
    finally:
        await c.stop_all()


async def test_replicas_hash_alike(tmp_path: Path) -> None:
    c = Nodes(tmp_path)
    for n in NODES:
        await c.start(n, fresh=True)
    try:
        await c.until(lambda: c.leader(1), what="a leader of shard 1")
        for i in range(5):
            await c.put(key_in(((0, 8),), i), b"v%d" % i)
        lead = c.leader(1)
        assert lead is not None
        h, compact, rev, versions = await c.nodes[lead].hash_kv(1)
        assert versions == 5 and compact == 0
        await c.until(
            lambda: all(c.nodes[n]._replicas[1].sm.readable_revision >= rev for n in NODES),  # noqa: SLF001
            what="every replica applied up to the revision",
        )
        for n in NODES:
            assert await c.nodes[n].hash_kv(1, rev) == (h, compact, rev, versions)
    finally:
        await c.stop_all()


async def test_an_alarm_survives_a_restart_until_disarmed(tmp_path: Path) -> None:
    """As etcd keeps alarms in its backend: a node that raised NOSPACE, had
    its space freed and restarted still has the alarm (so it refuses growing
    writes) until disarmed; the disarm is kept too. The real record
    (RocksSpace) in the node's RocksDB, across a restart of the node."""
    from shard.space import RocksSpace  # noqa: PLC0415 - the real record, next to the twin above

    n = NODES[0]
    c = Nodes(tmp_path)
    for m in NODES:
        await c.start(m, fresh=True)
    spaces: list[RocksSpace] = []

    def attach() -> StoreNode:
        node = c.nodes[n]
        node.quota = SpaceQuota(1 << 30)  # far above what the DB uses: only the saved alarm can arm it
        space = RocksSpace(c.dbs[n])
        spaces.append(space)
        node.space = space
        return node

    try:
        node = attach()
        node.quota.activate(AlarmType.NOSPACE)
        node.save_alarms()
        for space in spaces:
            space.close()
        await c.stop(n)
        await c.start(n, fresh=False)
        node = attach()  # used space well under the quota now
        await c.until(lambda: AlarmType.NOSPACE in node.quota.alarms, what="the saved alarm armed again")
        assert node.quota.used_bytes < node.quota.quota_bytes
        assert node.quota.deactivate(AlarmType.NOSPACE)
        node.save_alarms()
        for space in spaces:
            space.close()
        await c.stop(n)
        await c.start(n, fresh=False)
        node = attach()
        node.save_alarms()  # loads what was saved first
        assert node.quota.active() == ()
    finally:
        for space in spaces:
            space.close()
        await c.stop_all()
