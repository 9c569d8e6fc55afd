"""The store's side of delta heartbeats (PURE; DESIGN.md, "Heartbeats";
placement/shardtable.py is the other side).

`HeartbeatDeltas` remembers the shard figures as the placement leader
acknowledged them (`acked`, numbered `acked_seq`) and builds each heartbeat
against them: a delta holds only the shards whose figures differ from the
acknowledged ones and the acknowledged shards no longer hosted, on top of
`acked_seq`. Every heartbeat has a new seq. An answer acknowledging the
heartbeat's seq makes what it carried the new `acked`; any other answer
(placement holds another table, or none: a new leader, a store it never
heard, a heartbeat lost on the way) or no answer at all asks for a full
heartbeat next, which replaces placement's table whatever it held.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from flotillapb import placement_pb2 as ppb


def round_rate(rate: float) -> float:
    """Two significant digits: a rate that wobbles by a request or two is not a change."""
    return float(f"{rate:.2g}") if rate > 0 else 0.0


class HeartbeatDeltas:
    def __init__(self, node_id: int, session: int) -> None:
        assert session != 0, "session 0 means a sender without deltas"
        self.node_id = node_id
        self.session = session
        self.seq = 0
        self.acked_seq = 0
        self.acked: dict[int, ppb.ShardStats] = {}
        """The figures placement's table holds for this node (as of acked_seq)."""
        self.want_full = True
        self._sent: tuple[int, bool, dict[int, ppb.ShardStats], list[int]] | None = None

    def full(self, figures: Mapping[int, ppb.ShardStats], alarms: Iterable[int]) -> ppb.StoreHeartbeatRequest:
        """A heartbeat with every hosted shard's figures."""
        self.seq += 1
        self._sent = (self.seq, True, dict(figures), [])
        return ppb.StoreHeartbeatRequest(
            node_id=self.node_id, session=self.session, seq=self.seq, full=True, shards=list(figures.values()), alarms=alarms
        )

    def delta(self, figures: Mapping[int, ppb.ShardStats | None], alarms: Iterable[int]) -> ppb.StoreHeartbeatRequest:
        """A heartbeat with what changed since acked_seq, given the current
        figures of every shard that may have changed (None: no longer hosted).
        A shard left out is taken as unchanged."""
        changed = {sid: st for sid, st in figures.items() if st is not None and self.acked.get(sid) != st}
        removed = sorted(sid for sid, st in figures.items() if st is None and sid in self.acked)
        self.seq += 1
        self._sent = (self.seq, False, changed, removed)
        return ppb.StoreHeartbeatRequest(
            node_id=self.node_id, session=self.session, seq=self.seq, base_seq=self.acked_seq,
            shards=[changed[sid] for sid in sorted(changed)], removed_shards=removed, alarms=alarms,
        )

    def answered(self, acked_seq: int) -> bool:
        """Placement answered the last heartbeat: its table is at acked_seq.
        True if that is the heartbeat sent (taken); else a full one is wanted."""
        sent, self._sent = self._sent, None
        if sent is None or acked_seq != sent[0]:
            self.want_full = True
            return False
        seq, full, figures, removed = sent
        if full:
            self.acked = figures
        else:
            self.acked.update(figures)
            for sid in removed:
                self.acked.pop(sid, None)
        self.acked_seq = seq
        self.want_full = False
        return True

    def failed(self) -> None:
        """No answer: placement may or may not have taken it. A full heartbeat next."""
        self._sent = None
        self.want_full = True
