"""A restarted group has the configuration it applied, not its last
snapshot's (found by issue #7's move-then-restart test: a replica promoted
after its last snapshot came back a learner after a restart, and the
leader's transfers to it never completed). StoreNodes in one process: real
RocksDB, LocalTransport, virtual time."""

from __future__ import annotations

from pathlib import Path

from raft.core import ConfChange, ConfChangeType
from tests.unit.runtime.storenodes import NODES, Nodes, key_in


async def test_conf_changes_after_the_last_snapshot_survive_a_restart(tmp_path: Path) -> None:
    c = Nodes(tmp_path)
    for n in NODES:
        await c.start(n, fresh=True)
    try:
        await c.until(lambda: c.leader(1), what="leader")
        await c.put(key_in(((0, 8),), 0), b"x")  # the leader committed an entry of its term
        lead = c.leader(1)
        assert lead is not None
        other = next(n for n in NODES if n != lead)
        gone = next(n for n in NODES if n not in (lead, other))
        await c.hosts[lead].propose_conf_change(1, ConfChange(ConfChangeType.REMOVE_NODE, gone))
        await c.hosts[lead].propose_conf_change(1, ConfChange(ConfChangeType.ADD_LEARNER, gone))
        want = (tuple(sorted((lead, other))), (gone,))
        await c.until(lambda: (tuple(c.hosts[other].status(1).conf_state.voters), tuple(c.hosts[other].status(1).conf_state.learners)) == want, what="conf applied")
        assert c.hosts[other]._group(1).storage.snapshot().metadata.index == 1  # noqa: SLF001 - no snapshot since the bootstrap
        await c.stop(other)
        await c.start(other, fresh=False)
        cs = c.hosts[other].status(1).conf_state
        assert (tuple(cs.voters), tuple(cs.learners)) == want
    finally:
        await c.stop_all()
