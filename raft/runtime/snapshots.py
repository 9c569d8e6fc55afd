"""GroupHost's snapshots: taking one (and compacting the log behind it),
sending one (from the log store, freshly taken for a member the stored one
predates, or streamed from a streaming state machine), and installing a
received one (inline bytes, or a file the transport spooled it to)."""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

from raft.core import Message, Snapshot, SnapshotMetadata
from raft.runtime.group import Group, HostState
from raft.runtime.statemachine import StateMachine
from raft.transport.base import spooled_path

__all__ = ["Snapshots", "in_conf", "remove_spooled", "restore_snapshot", "streams"]

log = logging.getLogger(__name__)

_SPOOL_READ_BYTES = 1 << 20


def streams(sm: StateMachine) -> bool:
    """Whether sm streams its snapshots (optional StateMachine methods
    ``snapshot_stream`` and ``restore_chunks``): the log store then keeps no
    snapshot data for it, and a snapshot is read from sm when it is sent."""
    return hasattr(sm, "snapshot_stream") and hasattr(sm, "restore_chunks")


def in_conf(m: Message) -> bool:
    """Whether the snapshot m carries names its recipient in its configuration."""
    assert m.snapshot is not None
    cs = m.snapshot.metadata.conf_state
    return m.to in cs.voters or m.to in cs.learners


def restore_snapshot(sm: StateMachine, data: bytes, index: int, wb: Any, spooled: list[str]) -> None:
        """Install a snapshot's data: inline bytes, or a file the transport
        spooled it to (read in pieces by a streaming state machine)."""
        path = spooled_path(data)
        if path is None:
            sm.restore(data, index, wb)
            return
        with open(path, "rb") as f:
            if streams(sm):
                sm.restore_chunks(iter(lambda: f.read(_SPOOL_READ_BYTES), b""), index, wb)  # type: ignore[attr-defined]
            else:
                sm.restore(f.read(), index, wb)
        spooled.append(path)


def remove_spooled(paths: list[str]) -> None:
        """Spool files of snapshots now installed (and their apply synced)."""
        for path in paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


class Snapshots(HostState):
    def _send_streamed_snapshot(self, g: Group, m: Message) -> bool:
        """Send a snapshot of a streaming state machine: taken now, at its
        applied index (everything applied is written between rounds), and
        read lazily while the transport sends it. The metadata is rewritten
        to that index, which is >= the one the core chose (the log store
        keeps no data for such groups), with the term of that entry and the
        configuration as of it (conf changes are applied in log order)."""
        index, chunks = g.sm.snapshot_stream()  # type: ignore[attr-defined]
        meta = SnapshotMetadata(index=index, term=g.node.term_at(index), conf_state=g.node.conf_state())
        assert m.snapshot is not None and index >= m.snapshot.metadata.index, (index, m.snapshot)
        msg = dataclasses.replace(m, snapshot=Snapshot(metadata=meta, data=b""))
        log.info("group=%d node=%d streaming snapshot index=%d to node=%d", g.group_id, self.node_id, index, m.to)
        sent = self._transport.send_snapshot(m.to, g.group_id, msg, data=chunks)
        if self.crash_hook is not None:
            self.crash_hook("snapshot_save")
        return sent

    def _send_fresh_snapshot(self, g: Group, m: Message) -> bool:
        """Send a snapshot taken now, at the state machine's applied index, in
        place of the log store's one whose configuration predates the
        recipient (a member added since, e.g. to a group still at its
        bootstrap snapshot): it would refuse a snapshot that does not name it
        (etcd leaves taking one to the application)."""
        index = g.sm.applied_index()
        assert m.snapshot is not None and index >= m.snapshot.metadata.index, (index, m.snapshot)
        meta = SnapshotMetadata(index=index, term=g.node.term_at(index), conf_state=g.node.conf_state())
        msg = dataclasses.replace(m, snapshot=Snapshot(metadata=meta, data=g.sm.snapshot()))
        log.info("group=%d node=%d sending fresh snapshot index=%d to new member node=%d", g.group_id, self.node_id, index, m.to)
        return self._transport.send(m.to, g.group_id, msg)

    async def _maybe_snapshot(self, g: Group) -> None:
        applied = g.node.applied
        first = g.storage.first_index()
        if applied - first < self.cfg.snapshot_entries:
            return
        cs = g.node.conf_state()
        data = b"" if streams(g.sm) else g.sm.snapshot()
        lb = self._store.batch()
        lb.create_snapshot(g.group_id, applied, cs, data)
        compact_to = applied - self.cfg.compaction_margin
        if compact_to > first:
            lb.compact(g.group_id, compact_to)
        await self._store.write(lb, sync=False)
        if self.crash_hook is not None:
            self.crash_hook("snapshot_save")
        self.stats.snapshots_created += 1
        log.info("group=%d node=%d snapshot at index=%d, compacted to %d", g.group_id, self.node_id, applied, compact_to)
