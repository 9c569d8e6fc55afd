"""Quiescence (dragonboat's quiesce.go): a leader whose group has been idle
for ``quiesce_ticks`` ticks and whose followers all match its log sends each
follower a heartbeat carrying QUIESCE_CTX and stops ticking; followers that
get it stop ticking too. Any other message, a proposal, or silence for an
election timeout (``ticker.py``) from the leader's node (at a follower) or
from a member's node (at the leader: check-quorum then steps a cut-off
leader down) wakes the group.

Each quiet group counts, per peer node, in ``_watched`` (the nodes whose
silence wakes it) and, if it leads, in ``_ping_to`` (the nodes the ticker
pings so that they hear from it): the ticker's work while all is quiet is
per peer node, not per group."""

from __future__ import annotations

from raft.core import Message, MessageType
from raft.runtime.group import Group, HostState

__all__ = ["LIVENESS_GROUP", "NODE_MESSAGE_GROUP", "QUIESCE_CTX", "WAKE_CTX", "Quiescence"]

QUIESCE_CTX = b"\xffquiesce"
WAKE_CTX = b"\xffwake"
LIVENESS_GROUP = (1 << 64) - 1
"""Reserved group id of node-to-node liveness pings (no Raft group uses it)."""
NODE_MESSAGE_GROUP = (1 << 64) - 2
"""Reserved group id of the host owner's node-to-node messages (GroupHost.send_node_message)."""


class Quiescence(HostState):
    def _wake(self, g: Group) -> None:
        if g.quiet:
            g.quiet = False
            g.idle_ticks = 0
            self._awake.add(g.group_id)
            self._unwatch(g)
            self._ticker_wakeup.set()

    def _quiet(self, g: Group) -> None:
        g.quiet = True
        self._awake.discard(g.group_id)
        trim = getattr(g.storage, "trim_cache", None)
        if trim is not None:  # a log store's view keeps recent entries in memory (raft/storage/groupview.py)
            trim()
        node = g.node
        if node.leader_id == self.node_id:
            cs = node.conf_state()
            g.quiet_leader = True
            g.quiet_peers = tuple(sorted({*cs.voters, *cs.learners} - {self.node_id}))
            self._ping_to.update(g.quiet_peers)
        else:
            g.quiet_leader = False
            g.quiet_peers = (node.leader_id,) if node.leader_id else ()
        now = self._clock.monotonic()
        for p in g.quiet_peers:
            self._last_heard.setdefault(p, now)
        self._watched.update(g.quiet_peers)

    def _unwatch(self, g: Group) -> None:
        """g stops being quiet (woken, or removed): uncount it."""
        if g.quiet_leader:
            self._ping_to.subtract(g.quiet_peers)
            for p in g.quiet_peers:
                if self._ping_to[p] <= 0:
                    del self._ping_to[p]
        self._watched.subtract(g.quiet_peers)
        for p in g.quiet_peers:
            if self._watched[p] <= 0:
                del self._watched[p]
        g.quiet_leader, g.quiet_peers = False, ()

    def _maybe_quiesce(self, g: Group) -> None:
        node = g.node
        if g.read_waiters or g.read_inflight or not node.is_idle_leader():
            return
        last = node.applied  # an idle leader has applied its last entry
        cs = node.conf_state()
        for nid in sorted((*cs.voters, *cs.learners)):
            if nid != self.node_id:
                self._transport.send(
                    nid,
                    g.group_id,
                    Message(type=MessageType.HEARTBEAT, to=nid, from_=self.node_id, term=node.term, commit=last, context=QUIESCE_CTX),
                )
        self._quiet(g)

    @staticmethod
    def _wakes(g: Group, m: Message) -> bool:
        """Whether m wakes a quiet group. Heartbeats of its own leader (they
        may still be in flight when it quiesced) and heartbeat responses carry
        no request, so they do not; WAKE_CTX explicitly does. Nor does its
        candidate's (pre-)vote request wake a new group waiting for that
        candidate (registry.create_group): the replica answers it quiet, and
        so starts no election timer of its own; the new leader's first append
        wakes it. Woken by the vote, such replicas campaigned themselves
        whenever an election on a loaded host took longer than their timeout."""
        if m.type in (MessageType.PRE_VOTE, MessageType.VOTE):
            return not (not g.quiet_leader and g.node.leader_id == 0 and m.from_ in g.quiet_peers)
        if m.type == MessageType.HEARTBEAT_RESP:
            return m.context == WAKE_CTX
        if m.type == MessageType.HEARTBEAT:
            return not (m.from_ == g.node.leader_id and m.term == g.node.term)
        return True
