"""What the parts of GroupHost share: its configuration and counters, a
hosted group's record, and the host state every part reads.

GroupHost (``host.py``) is assembled from one class per job, each in its
own module: the group registry (``registry.py``), the ready loop
(``readyloop.py``), the ticker and node liveness (``ticker.py``), quiescence
(``quiescence.py``), ReadIndex and apply waiters (``readindex.py``) and
snapshots (``snapshots.py``). ``HostState`` declares the state they share.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from raft.core import Message, RawNode, Ready
from raft.core.storage import Storage
from raft.runtime.clock import Clock
from raft.runtime.statemachine import StateMachine
from raft.storage.logstore import LogStore
from raft.transport.base import Transport

__all__ = ["Group", "GroupNotFound", "HostConfig", "HostState", "HostStats"]


class GroupNotFound(KeyError):
    pass


@dataclass(frozen=True, slots=True)
class HostConfig:
    tick_interval_s: float = 0.1
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    quiesce_ticks: int = 3
    """Idle ticks before a leader quiesces its group (0 disables quiescence).
    Short, as CockroachDB quiesces at the first tick with nothing pending: a
    group that wakes again pays one heartbeat per follower, while 1,000 new
    leaders heartbeating every tick until they go quiet are an election storm
    on a small host."""
    liveness_ticks: int = 6
    """Node liveness while groups are quiet: a node pings each member of a
    quiet group it leads at least this often (when nothing else was sent to
    it meanwhile), and the member answers; a peer silent for election_ticks
    wakes the quiet groups that depend on it. With no group awake the ticker
    wakes only for this. 6 ticks: about three pings in the two election
    timeouts a peer must be silent for (ticker.SILENCE_ELECTIONS)."""
    snapshot_entries: int = 10_000
    """Take a snapshot and compact once this many entries are applied past the first index."""
    compaction_margin: int = 1_000
    """Entries kept behind a snapshot for slow followers to catch up from the log."""
    max_inflight_msgs: int = 256
    max_size_per_msg: int = 1 << 20
    pre_vote: bool = True
    check_quorum: bool = True


DURATION_BUCKETS_S: tuple[float, ...] = tuple(0.001 * 2**i for i in range(14))
"""etcd's buckets of its disk durations (wal fsync, backend commit): 1 ms to about 8 s."""


@dataclass(slots=True)
class Durations:
    """A histogram of durations in fixed buckets (counts per upper bound, the
    last one everything above), for the metrics page to read."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS_S) + 1))
    total_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.total_s += seconds
        for i, bound in enumerate(DURATION_BUCKETS_S):
            if seconds <= bound:
                self.counts[i] += 1
                return
        self.counts[-1] += 1


@dataclass(slots=True)
class HostStats:
    rounds: int = 0
    syncs: int = 0
    entries_persisted: int = 0
    entries_applied: int = 0
    messages_sent: int = 0
    messages_dropped: int = 0
    messages_unknown_group: int = 0
    proposals: int = 0
    snapshots_created: int = 0
    snapshots_restored: int = 0
    ticks: int = 0
    """Rounds of the ticker (every tick_interval_s while a group is awake, else every liveness_ticks)."""
    group_ticks: int = 0
    """Ticks given to groups (a quiet group gets none)."""
    pings_sent: int = 0
    """Node liveness pings sent (quiet groups only; ticker.py)."""
    leader_changes: int = 0
    """Times a hosted group learnt of a new leader (etcd's leader_changes_seen, summed over groups)."""
    sync_durations: Durations = field(default_factory=Durations)
    """Each synced write of the log (etcd's wal fsync duration)."""
    apply_durations: Durations = field(default_factory=Durations)
    """Each write of applied entries (etcd's backend commit duration)."""


@dataclass(slots=True)
class Group:
    group_id: int
    node: RawNode
    storage: Storage
    sm: StateMachine
    quiet: bool = False
    idle_ticks: int = 0
    quiet_leader: bool = False
    """Quiet as the leader (it pings quiet_peers) rather than as a follower."""
    quiet_peers: tuple[int, ...] = ()
    """While quiet: the nodes whose silence wakes it (its members if it leads, else its leader)."""
    # read index batching: readers waiting for the next request, and the one in flight
    read_waiters: list[asyncio.Future[int]] = field(default_factory=list)
    read_inflight: dict[bytes, list[asyncio.Future[int]]] = field(default_factory=dict)
    read_issued_tick: int = 0
    apply_waiters: list[tuple[int, asyncio.Future[None]]] = field(default_factory=list)
    # proposals of this round, handed to Raft as one message at the start of the next round
    proposals: list[bytes] = field(default_factory=list)
    proposal_seqs: list[int] = field(default_factory=list)
    last_leader: int = 0  # the last leader this replica knew (counts leader changes)


class HostState:
    """The state GroupHost's parts share (set in GroupHost.__init__)."""

    node_id: int
    cfg: HostConfig
    stats: HostStats
    _store: LogStore[Any]
    _transport: Transport
    _clock: Clock
    _rng: random.Random
    _groups: dict[int, Group]
    _awake: set[int]
    """Groups that tick (not quiet)."""
    _dirty: set[int]
    """Groups the next ready round looks at."""
    _has_work: asyncio.Event
    _round_lock: asyncio.Lock
    """Held by the ready loop for a round; remove_group writes between rounds."""
    _last_sync_s: float
    """How long the ready loop's last synced write took (readyloop.py INLINE_SYNC_MAX_S)."""
    _seq: int
    _pending: dict[int, asyncio.Future[object]]
    """Proposals of this node waiting for their result, by sequence number."""
    _last_heard: dict[int, float]
    _last_sent: dict[int, float]
    """When this node last sent a node message or ping to a peer (liveness pings are skipped after one)."""
    _ping_to: Counter[int]
    """Peer -> quiet groups led here that it is a member of (they are pinged)."""
    _watched: Counter[int]
    """Peer -> quiet groups here whose waking depends on hearing from it."""
    _campaigns: deque[int]
    _campaigning: dict[int, int]
    """New groups whose candidate this node is, waiting quiet for their turn to campaign (ticker.py)."""
    _judge_silence_after: float
    """Monotonic time before which no peer counts as silent (this loop was stalled)."""
    _ticker_wakeup: asyncio.Event
    """Set when a group wakes: the ticker, asleep while every group is quiet, ticks again."""
    _peers: set[int]
    crash_hook: Callable[[str], None] | None
    on_activity: Callable[[int], None] | None

    if TYPE_CHECKING:
        # Implemented by one of the parts; declared for the type checker.
        def _mark(self, group_id: int) -> None: ...
        def _next_seq(self) -> int: ...
        def _wake(self, g: Group) -> None: ...
        def _quiet(self, g: Group) -> None: ...
        def _unwatch(self, g: Group) -> None: ...
        def _active(self, group_id: int) -> None: ...
        def _maybe_quiesce(self, g: Group) -> None: ...
        def _issue_read_index(self, g: Group) -> None: ...
        def _retry_reads(self, g: Group) -> None: ...
        def _release_apply_waiters(self, g: Group) -> None: ...
        def _flush_proposals(self, g: Group) -> None: ...
        def _send_all(self, g: Group, msgs: tuple[Message, ...]) -> None: ...
        def _on_soft_state(self, g: Group, rd: Ready) -> None: ...
        def _send_streamed_snapshot(self, g: Group, m: Message) -> bool: ...
        def _send_fresh_snapshot(self, g: Group, m: Message) -> bool: ...
        def _group(self, group_id: int) -> Group: ...
        async def process_ready(self) -> None: ...
        async def _maybe_snapshot(self, g: Group) -> None: ...
        def tick(self) -> None: ...
