"""Snapshots and log compaction.

Reference: §7 (log compaction, InstallSnapshot), thesis §5.
"""

from __future__ import annotations

from raft.core import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    HardState,
    Message,
    MessageType,
    ProgressState,
    Snapshot,
    SnapshotMetadata,
    StateRole,
)

from raft.testing.network import SimNetwork
from tests.unit.raft.helpers import Cluster, decode_state, drain, encode_state, new_node, new_storage

CS = ConfState(voters=(1, 2, 3))


def _lagging_cluster(n_entries: int = 10) -> Cluster:
    """Leader 1 commits n entries while 3 is cut off, then compacts."""
    c = Cluster.new()
    c.elect(1)
    c.isolate(3)
    for k in range(n_entries):
        c.nodes[1].propose(b"e%d" % k)
    c.stabilize()
    c.compact(1)
    return c


def test_lagging_follower_catches_up_by_snapshot() -> None:
    """Reference: §7. When the entries a follower needs were discarded, the
    leader sends InstallSnapshot; the follower replaces its log with the
    snapshot and its state equals the leader's."""
    c = _lagging_cluster()
    first = c.storages[1].first_index()
    assert first == 12  # 1 empty entry + 10 proposals compacted away
    c.heal()
    c.tick(1)
    c.stabilize()
    snaps = c.sent_of(MessageType.SNAP, from_=1, to=3)
    assert len(snaps) == 1
    meta = snaps[0].snapshot.metadata
    assert (meta.index, meta.term, meta.conf_state) == (11, 1, CS)
    assert c.applied[3] == c.applied[1] == [b"e%d" % k for k in range(10)]
    assert c.storages[3].snapshot().metadata.index == 11
    assert c.storages[3].first_index() == 12
    pr = c.nodes[1].raft.trk.progress[3]
    assert pr.state == ProgressState.REPLICATE
    assert pr.match == 11
    # Replication continues with appends after the snapshot.
    c.nodes[1].propose(b"after")
    c.stabilize()
    assert c.applied[3][-1] == b"after"
    assert c.nodes[3].raft.raft_log.last_index() == 12
    assert len(c.sent_of(MessageType.SNAP, from_=1, to=3)) == 1


def test_snapshot_in_sim_network() -> None:
    """Reference: §7, through SimNetwork's compact: applied data equal."""
    net = SimNetwork.new(ids=(1, 2, 3))
    net.campaign(1)
    net.isolate(3)
    for k in range(5):
        net.propose(1, b"v%d" % k)
    net.stabilize()
    net.compact(1)
    net.heal()
    net.tick(1)
    net.stabilize()
    assert net.applied[3] == net.applied[1] == [b"v%d" % k for k in range(5)]
    assert net.storages[3].snapshot().metadata.index == 6
    assert net.log_entries(3) == net.log_entries(1)


def test_progress_waits_in_snapshot_state() -> None:
    """etcd flow control: while a snapshot is in flight the leader sends the
    follower no appends; a failed snapshot (SNAP_STATUS reject) moves it
    back to PROBE, and the snapshot is sent again."""
    c = _lagging_cluster()
    c.heal()
    c.drop_types = {MessageType.SNAP}
    c.tick(1)
    c.stabilize()
    pr = c.nodes[1].raft.trk.progress[3]
    assert pr.state == ProgressState.SNAPSHOT
    before = len(c.sent)
    c.nodes[1].propose(b"more")
    c.stabilize()
    assert [m for m in c.sent[before:] if m.to == 3 and m.type in (MessageType.APP, MessageType.SNAP)] == []
    c.nodes[1].report_snapshot(3, ok=False)
    assert c.nodes[1].raft.trk.progress[3].state == ProgressState.PROBE
    c.drop_types = set()
    c.tick(1)
    c.stabilize()
    assert c.applied[3] == c.applied[1]
    assert c.applied[3][-1] == b"more"
    assert c.nodes[1].raft.trk.progress[3].state == ProgressState.REPLICATE


def test_new_node_catches_up_by_snapshot() -> None:
    """Reference: §7 / thesis §4.2.1. A node added after compaction receives
    the snapshot (with the configuration that includes it) and then the
    later entries."""
    c = Cluster.new()
    c.elect(1)
    for k in range(4):
        c.nodes[1].propose(b"e%d" % k)
    c.stabilize()
    c.nodes[1].propose_conf_change(ConfChange(ConfChangeType.ADD_NODE, 4))
    c.stabilize()
    for i in (1, 2, 3):
        c.compact(i)
    c.add_node(4, conf_state=ConfState())  # knows nothing: learns all from the snapshot
    c.tick(1)  # a heartbeat reaches the new node
    c.stabilize()
    c.nodes[1].propose(b"e4")
    c.stabilize()
    snaps = c.sent_of(MessageType.SNAP, from_=1, to=4)
    assert len(snaps) == 1
    assert snaps[0].snapshot.metadata.conf_state == ConfState(voters=(1, 2, 3, 4))
    assert c.applied[4] == [b"e%d" % k for k in range(5)]
    assert c.nodes[4].status().conf_state == ConfState(voters=(1, 2, 3, 4))
    assert c.nodes[4].raft.raft_log.last_index() == c.nodes[1].raft.raft_log.last_index()
    assert c.nodes[4].raft.leader_id == 1


def test_follower_ignores_stale_snapshot() -> None:
    """Reference: §7. A snapshot older than what the follower has committed
    is not installed; the follower acknowledges its own commit index."""
    c = Cluster.new()
    c.elect(1)
    for k in range(5):
        c.nodes[1].propose(b"e%d" % k)
    c.stabilize()
    f = c.nodes[2]
    committed = f.raft.raft_log.committed
    assert committed == 6
    before = f.raft.raft_log.all_entries()
    stale = Snapshot(SnapshotMetadata(index=3, term=1, conf_state=CS), encode_state([b"e0", b"e1"]))
    f.step(Message(type=MessageType.SNAP, from_=1, to=2, term=1, snapshot=stale))
    d = drain(f, c.storages[2])
    assert all(rd.snapshot is None for rd in d.readies)
    assert f.raft.raft_log.all_entries() == before
    assert f.raft.raft_log.committed == committed
    resp = d.of(MessageType.APP_RESP)
    assert [(m.to, m.index, m.reject) for m in resp] == [(1, committed, False)]
    assert c.storages[2].snapshot().metadata.index == 0


def test_snapshot_matching_log_fast_forwards_commit_and_keeps_suffix() -> None:
    """Reference: §7. If the snapshot describes a prefix of the follower's
    log, the entries following the snapshot are retained."""
    s = new_storage(entries=[Entry(1, i, data=b"e%d" % i) for i in range(1, 6)], hard_state=HardState(term=1, commit=2))
    node = new_node(2, s)
    snap = Snapshot(SnapshotMetadata(index=4, term=1, conf_state=CS), b"")
    node.step(Message(type=MessageType.SNAP, from_=1, to=2, term=1, snapshot=snap))
    assert node.raft.raft_log.committed == 4
    assert node.raft.raft_log.last_index() == 5
    assert node.raft.raft_log.term(5) == 1
    d = drain(node, s)
    assert all(rd.snapshot is None for rd in d.readies)
    assert [e.index for e in d.committed] == [1, 2, 3, 4]
    assert [(m.index, m.reject) for m in d.of(MessageType.APP_RESP)] == [(4, False)]


def test_snapshot_replaces_conflicting_log() -> None:
    """Reference: §7. If the follower's log conflicts with the snapshot, the
    whole log is discarded and replaced by the snapshot."""
    s = new_storage(entries=[Entry(1, 1), Entry(2, 2), Entry(2, 3)], hard_state=HardState(term=2, commit=1))
    node = new_node(2, s)
    snap = Snapshot(SnapshotMetadata(index=5, term=3, conf_state=CS), encode_state([b"x", b"y"]))
    node.step(Message(type=MessageType.SNAP, from_=1, to=2, term=3, snapshot=snap))
    rd = node.ready()
    assert rd.snapshot == snap
    assert rd.hard_state == HardState(term=3, vote=0, commit=5)
    s.apply_snapshot(rd.snapshot)
    s.set_hard_state(rd.hard_state)
    resp = [m for m in rd.messages_after_persist + rd.messages if m.type == MessageType.APP_RESP]
    assert [(m.to, m.index, m.reject) for m in resp] == [(1, 5, False)]
    node.advance(rd)
    assert node.raft.raft_log.last_index() == 5
    assert node.raft.raft_log.first_index() == 6
    assert node.raft.raft_log.term(5) == 3
    assert node.status().applied == 5
    assert decode_state(s.snapshot().data) == [b"x", b"y"]


def test_restart_from_snapshot() -> None:
    """A node restarts from a storage holding a snapshot and later entries:
    its log begins after the snapshot; it applies only what follows it."""
    s = new_storage()
    snap = Snapshot(SnapshotMetadata(index=5, term=2, conf_state=CS), encode_state([b"s"]))
    s.apply_snapshot(snap)
    s.append([Entry(2, 6, data=b"six"), Entry(2, 7, data=b"seven")])
    s.set_hard_state(HardState(term=2, vote=1, commit=6))
    node = new_node(1, s, applied=5)
    r = node.raft
    assert r.raft_log.first_index() == 6
    assert r.raft_log.last_index() == 7
    assert r.raft_log.committed == 6
    rd = node.ready()
    assert rd.snapshot is None
    assert rd.committed_entries == (Entry(2, 6, data=b"six"),)
    node.advance(rd)
    assert r.role == StateRole.FOLLOWER


def test_leader_snapshot_includes_latest_conf_state() -> None:
    """Reference: §7. The snapshot carries the latest configuration as of
    its last included index."""
    c = _lagging_cluster(3)
    snap = c.storages[1].snapshot()
    assert snap.metadata.conf_state == CS
    assert snap.metadata.index == 4
    assert decode_state(snap.data) == [b"e0", b"e1", b"e2"]
