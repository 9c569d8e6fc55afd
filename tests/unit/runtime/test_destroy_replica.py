"""Replica destruction (issue #7): StoreNodes on GroupHosts in one process
(real RocksDB per node, the in-memory LocalTransport, virtual time).

A replica removed from its shard's group and destroyed leaves nothing of the
shard on its node but a tombstone: no Raft log or hard state, no meta, no
data in the slots no other hosted shard owns; the data of the other shards
(including one split off the destroyed shard, whose slots it once held) is
untouched. Destroying twice is harmless; the replica is not hosted again at
its old configuration (a stale map, a late message), nor after a restart,
but is at a newer one (a genuine re-add).
"""

from __future__ import annotations

from pathlib import Path

from raft.core import ConfChange, ConfChangeType, Message, MessageType
from raft.storage.keys import tombstone_key
from shard.node import Consistency, RequestContext
from shard.types import RangeRequest
from tests.unit.runtime.storenodes import NODES, SLOTS, Nodes, data_keys, key_in, meta_keys_of, raft_keys_of


async def test_destroyed_replica_leaves_only_a_tombstone_and_stays_gone(tmp_path: Path) -> None:
    c = Nodes(tmp_path)
    for n in NODES:
        await c.start(n, fresh=True)
    try:
        await c.until(lambda: c.leader(1) and c.leader(2), what="leaders")
        # shard 1 splits: slots 4..8 go to shard 3 (same replicas)
        lead = c.leader(1)
        assert lead is not None
        await c.nodes[lead].split(1, 3, 4)
        await c.until(lambda: all(3 in c.nodes[n].shard_ids() for n in NODES), what="shard 3 everywhere")
        await c.until(lambda: c.leader(3), what="shard 3 leader")
        k1 = [key_in(((0, 4),), i) for i in range(5)]
        k2 = [key_in(((8, 16),), i) for i in range(5)]
        k3 = [key_in(((4, 8),), i) for i in range(5)]
        for k in (*k1, *k2, *k3):
            await c.put(k, b"v-" + k)
        # node 3 is removed from shard 1's group (keep node 3 out of the leadership)
        lead = c.leader(1)
        if lead == 3:
            c.hosts[3].transfer_leader(1, 1)
            await c.until(lambda: c.leader(1) in (1, 2), what="shard 1 led elsewhere")
            lead = c.leader(1)
        assert lead is not None
        await c.hosts[lead].propose_conf_change(1, ConfChange(ConfChangeType.REMOVE_NODE, 3))
        await c.until(lambda: 3 not in c.hosts[3].status(1).conf_state.voters, what="node 3 applies its removal")
        conf_version = c.nodes[3]._replicas[1].epoch.conf_version  # noqa: SLF001
        assert conf_version == 2
        db3 = c.dbs[3]
        assert data_keys(db3, ((0, 4),)) and raft_keys_of(db3, 1) and meta_keys_of(db3, 1)

        await c.nodes[3].destroy_replica(1)
        assert 1 not in c.nodes[3].shard_ids() and 1 not in c.hosts[3].group_ids()
        assert data_keys(db3, ((0, 4),)) == []
        assert meta_keys_of(db3, 1) == []
        assert raft_keys_of(db3, 1) == [tombstone_key(1)]
        assert c.hosts[3].tombstone(1) == conf_version
        # the other shards' data (shard 3's slots once were shard 1's) is all there
        assert len(data_keys(db3, ((4, 8),))) == 2 * len(k3) and len(data_keys(db3, ((8, 16),))) == 2 * len(k2)
        for sid, ks in ((2, k2), (3, k3)):
            rep = c.nodes[3]._replicas[sid]  # noqa: SLF001
            for k in ks:
                r = await c.nodes[3].range(RequestContext(sid, rep.epoch), RangeRequest(k), Consistency.SERIALIZABLE)
                assert [kv.value for kv in r.kvs] == [b"v-" + k]

        await c.nodes[3].destroy_replica(1)  # twice: harmless, tombstone kept
        assert c.hosts[3].tombstone(1) == conf_version

        # a stale map entry (same conf_version) does not bring it back; messages of the group are dropped
        await c.nodes[3].host_shard(1, slot_count=SLOTS, slot_ranges=((0, 4),), voters=NODES, bootstrap=True, conf_version=conf_version)
        assert 1 not in c.nodes[3].shard_ids()
        unknown = c.hosts[3].stats.messages_unknown_group
        lead = c.leader(1)
        assert lead is not None
        await c.put(k1[0], b"after")
        c.hosts[3].on_messages(lead, [(1, _heartbeat(lead, 3, c.hosts[lead].status(1).hard_state.term))])
        assert c.hosts[3].stats.messages_unknown_group > unknown and 1 not in c.hosts[3].group_ids()

        # restart: the group and its data do not come back
        await c.stop(3)
        await c.start(3, fresh=False)
        assert 1 not in c.nodes[3].shard_ids() and c.hosts[3].tombstone(1) == conf_version
        assert set(c.nodes[3].shard_ids()) == {2, 3}
        assert data_keys(c.dbs[3], ((0, 4),)) == []

        # a genuine re-add (a newer configuration): hosted again, caught up by the leader
        lead = c.leader(1)
        assert lead is not None
        await c.hosts[lead].propose_conf_change(1, ConfChange(ConfChangeType.ADD_LEARNER, 3))
        new_version = c.nodes[lead]._replicas[1].epoch.conf_version  # noqa: SLF001
        assert new_version > conf_version
        await c.nodes[3].host_shard(1, slot_count=SLOTS, slot_ranges=(), bootstrap=False, conf_version=new_version)
        assert 1 in c.nodes[3].shard_ids() and c.hosts[3].tombstone(1) is None
        await c.until(lambda: c.nodes[3]._replicas[1].sm.applied_index() >= c.hosts[lead].status(1).applied, what="re-added replica catches up")  # noqa: SLF001
        rep = c.nodes[3]._replicas[1]  # noqa: SLF001
        r = await c.nodes[3].range(RequestContext(1, rep.epoch), RangeRequest(k1[0]), Consistency.SERIALIZABLE)
        assert [kv.value for kv in r.kvs] == [b"after"]
    finally:
        await c.stop_all()


def _heartbeat(frm: int, to: int, term: int) -> Message:
    return Message(type=MessageType.HEARTBEAT, to=to, from_=frm, term=term)
