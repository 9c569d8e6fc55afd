"""ReadIndex bookkeeping on the leader (Raft thesis §6.4, etcd's ReadOnlySafe).

A read request is recorded with the commit index at the time it arrives; the
leader then confirms it is still leader by a round of heartbeats carrying the
request context. Once a quorum acknowledged that context, the request (and
every request queued before it) can be served at its recorded index.

One heartbeat round for reads is in flight at a time (`round`): a request
that arrives meanwhile waits in the queue, and the next round, sent when
that one is acknowledged (or by the next heartbeat tick, should its
messages be lost), carries the newest pending context, whose quorum
answers every request queued before it too. Each of those arrived before
that round was sent, so the quorum's acknowledgement still comes after the
request, as §6.4 asks; under load, many reads share one round instead of
each costing a heartbeat to every follower and its answer (etcd's raft
sends a round per request).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raft.core.types import Message


@dataclass(slots=True)
class ReadIndexStatus:
    req: Message
    index: int
    acks: dict[int, bool] = field(default_factory=dict)


class ReadOnly:
    __slots__ = ("pending", "queue", "round")

    def __init__(self) -> None:
        self.pending: dict[bytes, ReadIndexStatus] = {}
        self.queue: list[bytes] = []
        self.round = b""
        """The context of the heartbeat round for reads last sent."""

    def add_request(self, index: int, m: Message) -> None:
        ctx = m.context
        if ctx in self.pending:
            return
        self.pending[ctx] = ReadIndexStatus(req=m, index=index)
        self.queue.append(ctx)

    def recv_ack(self, node_id: int, ctx: bytes) -> dict[int, bool] | None:
        rs = self.pending.get(ctx)
        if rs is None:
            return None
        rs.acks[node_id] = True
        return rs.acks

    def advance(self, ctx: bytes) -> list[ReadIndexStatus]:
        """Pop every request up to and including ctx."""
        if ctx not in self.pending:
            return []
        out: list[ReadIndexStatus] = []
        i = 0
        for i, c in enumerate(self.queue):
            out.append(self.pending.pop(c))
            if c == ctx:
                break
        self.queue = self.queue[i + 1 :]
        return out

    def last_pending_request_ctx(self) -> bytes:
        return self.queue[-1] if self.queue else b""

    def start_round(self) -> bytes:
        """The context for a heartbeat round sent now: the newest pending
        request's (b"": none), from now the round in flight."""
        self.round = self.last_pending_request_ctx()
        return self.round

    def round_in_flight(self) -> bool:
        """Is a round sent for a request that is still unanswered?"""
        return bool(self.round) and self.round in self.pending
