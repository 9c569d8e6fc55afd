"""The dedup table of one shard (pure): exactly-once apply by (router id, seq).

Raft thesis 6.3, with a window per router id, replicated in the engine:
its ``floor``, the largest ``seq_floor`` any of the router's commands
carried (the router has the answer of every seq below it), and the outcome
of each seq >= floor applied. A command first raises the floor to its
seq_floor (dropping the outcomes below; a command without one, from a router
of one write in flight per router id, raises it to its own seq). Then a seq
below the floor gets ``OutcomeUnknown`` (it was answered or abandoned: never
applied again), a seq in the window already applied gets its stored first
outcome, and any other is applied and its outcome stored. So one router id
may have many writes in flight, applied in any order, each at most once.

A split copies the windows to the new shard (``copy_to``); a merge joins the
source's into the target's (``absorb``).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

from shard import keys
from shard.codec import decode_outcome, encode_outcome
from shard.engine import scan
from shard.errors import OutcomeUnknown, ShardError, SlotNotOwned
from shard.types import Command, Response

if TYPE_CHECKING:
    from shard.engine import KvReader, StagedView

Outcome = Union[Response, ShardError]


@dataclass(slots=True)
class DedupWindow:
    """One router id's dedup state: the floor, and the encoded outcome of
    each seq >= floor applied (`heap`: those seqs, for pruning in order)."""

    floor: int = 0
    outcomes: dict[int, bytes] = field(default_factory=dict)
    heap: list[int] = field(default_factory=list)

    def add(self, seq: int, outcome: bytes) -> None:
        self.outcomes[seq] = outcome
        heapq.heappush(self.heap, seq)

    def raise_floor(self, floor: int) -> list[int]:
        """Raise the floor; return the seqs dropped (below it)."""
        self.floor = floor
        dropped = []
        while self.heap and self.heap[0] < floor:
            seq = heapq.heappop(self.heap)
            del self.outcomes[seq]
            dropped.append(seq)
        return dropped


class DedupTable:
    """Every router id's window of one shard, as applied (and as written to
    the engine through the apply batch)."""

    __slots__ = ("shard_id", "windows")  # thousands per store (issue #20)

    def __init__(self, shard_id: int, windows: dict[int, DedupWindow] | None = None) -> None:
        self.shard_id = shard_id
        self.windows: dict[int, DedupWindow] = windows if windows is not None else {}

    @classmethod
    def load(cls, reader: KvReader, shard_id: int) -> DedupTable:
        """The shard's windows as recorded in the engine."""
        windows: dict[int, DedupWindow] = {}
        prefix = keys.dedup_prefix(shard_id)
        for k, v in scan(reader, prefix, prefix + b"\xff" * 16 + b"\x00"):
            router_id, seq = keys.parse_dedup_key(k)
            w = windows.setdefault(router_id, DedupWindow())
            if seq is None:  # the router record sorts before its entries
                w.floor, legacy = keys.decode_dedup_router(v)
                if legacy is not None:
                    w.add(*legacy)
            elif seq >= w.floor:
                w.add(seq, keys.decode_dedup_entry(v))
        return cls(shard_id, windows)

    def last_seq(self, router_id: int) -> int:
        """The latest sequence applied for a router whose outcome is still
        kept (0: none)."""
        w = self.windows.get(router_id)
        return max(w.outcomes, default=0) if w is not None else 0

    def window(self, router_id: int) -> tuple[int, tuple[int, ...]]:
        """(floor, the seqs whose outcomes are kept, in order) of a router
        id; (0, ()) for one never seen."""
        w = self.windows.get(router_id)
        return (w.floor, tuple(sorted(w.outcomes))) if w is not None else (0, ())

    def admit(self, cmd: Command, view: StagedView) -> tuple[DedupWindow | None, Outcome | None]:
        """Raise the command's router's floor, then: (its window, None) for a
        command to apply (window None: no router id, not deduplicated), or
        (window, the outcome to answer instead) for one never to apply again."""
        if not cmd.router_id:
            return None, None
        window = self.windows.get(cmd.router_id)
        if window is None:
            window = self.windows[cmd.router_id] = DedupWindow()
        # No seq_floor: a router with one write in flight per router id.
        floor = cmd.seq_floor or cmd.seq
        if floor > window.floor:
            for seq in window.raise_floor(floor):
                view.delete(keys.dedup_seq_key(self.shard_id, cmd.router_id, seq))
            view.put(keys.dedup_key(self.shard_id, cmd.router_id), keys.encode_dedup_floor(floor))
        if cmd.seq < window.floor:
            return window, OutcomeUnknown()
        known = window.outcomes.get(cmd.seq)
        if known is not None:
            return window, decode_outcome(known)
        return window, None

    def record(self, window: DedupWindow, cmd: Command, outcome: Outcome, view: StagedView) -> None:
        """Keep the outcome of an applied command in its router's window."""
        encoded = encode_outcome(outcome)
        window.add(cmd.seq, encoded)
        view.put(keys.dedup_seq_key(self.shard_id, cmd.router_id, cmd.seq), keys.encode_dedup_entry(encoded))

    def copy_to(self, new_shard_id: int, view: StagedView) -> None:
        """Write these windows as a new shard's (a split: the new shard
        continues the same history)."""
        for router_id, w in sorted(self.windows.items()):
            view.put(keys.dedup_key(new_shard_id, router_id), keys.encode_dedup_floor(w.floor))
            for seq, outcome in sorted(w.outcomes.items()):
                view.put(keys.dedup_seq_key(new_shard_id, router_id, seq), keys.encode_dedup_entry(outcome))

    def absorb(self, theirs: DedupTable, view: StagedView) -> None:
        """Merge a merge source's windows into these. Seqs are router-wide,
        so a router's floor (every seq below has its answer at the router)
        holds for both shards: the merged floor is the larger. A seq kept by
        both (one request applies in one of them at most; the other refused
        it, SlotNotOwned, while the router's map was behind) keeps the
        outcome that is not that refusal."""
        for router_id, tw in sorted(theirs.windows.items()):
            mine = self.windows.get(router_id)
            if mine is None:
                mine = self.windows[router_id] = DedupWindow()
            floor = max(mine.floor, tw.floor)
            if floor > mine.floor:
                for seq in mine.raise_floor(floor):
                    view.delete(keys.dedup_seq_key(self.shard_id, router_id, seq))
            view.put(keys.dedup_key(self.shard_id, router_id), keys.encode_dedup_floor(floor))
            for seq, outcome in sorted(tw.outcomes.items()):
                if seq < floor:
                    continue
                known = mine.outcomes.get(seq)
                if known is not None and (
                    isinstance(decode_outcome(outcome), SlotNotOwned) or not isinstance(decode_outcome(known), SlotNotOwned)
                ):
                    continue
                if known is None:
                    mine.add(seq, outcome)
                else:
                    mine.outcomes[seq] = outcome
                view.put(keys.dedup_seq_key(self.shard_id, router_id, seq), keys.encode_dedup_entry(outcome))
