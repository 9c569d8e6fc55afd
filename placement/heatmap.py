"""The key-space heat map (PURE): reads and writes per slot over time, as
TiDB's Key Visualizer draws them (x: time, y: the key space, colour: the
rate), kept by the placement leader for the dashboard (DESIGN.md,
"Dashboard").

The key space is cut into at most `max_rows` rows of equal width in slots
(all slots when there are fewer): row i holds slots
[i * slots // rows, (i + 1) * slots // rows). A sample gives each row the
mean rate per slot of its slots, from the shards' rates: the stores count
reads and writes per shard, not per slot, so a shard's rate is spread evenly
over its slots (the heat map's resolution is the shard, as the Key
Visualizer's is the region; a split sharpens it). Rates are per second, as
the heartbeats report them.

`HeatMap` is a bounded ring: the newest `max_samples` samples, numbered from
1 in the order taken (a reader asks for those after the last it has). Its
memory is rows x samples x 2 single floats: 256 x 600 x 2 x 4 bytes, 1.2 MB,
whatever the number of shards. No clocks: the caller passes the time.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shard.slots import SlotRanges

MAX_ROWS = 256
MAX_SAMPLES = 600


@dataclass(frozen=True, slots=True)
class HeatSample:
    seq: int
    wall_ms: int
    reads: array  # type: ignore[type-arg]  # array('f'): per row, reads per second per slot
    writes: array  # type: ignore[type-arg]  # array('f'): per row, writes per second per slot


def row_bounds(slot_count: int, max_rows: int = MAX_ROWS) -> tuple[tuple[int, int], ...]:
    """The rows' slot ranges [start, end): min(slot_count, max_rows) rows of equal width (±1 slot)."""
    rows = max(1, min(slot_count, max_rows))
    return tuple((i * slot_count // rows, (i + 1) * slot_count // rows) for i in range(rows))


class HeatMap:
    def __init__(self, slot_count: int, *, max_rows: int = MAX_ROWS, max_samples: int = MAX_SAMPLES) -> None:
        if slot_count < 1:
            raise ValueError("a heat map needs at least one slot")
        self.slot_count = slot_count
        self.rows = row_bounds(slot_count, max_rows)
        self._row_of = array("I", (0 for _ in range(slot_count)))
        for i, (lo, hi) in enumerate(self.rows):
            for s in range(lo, hi):
                self._row_of[s] = i
        self.samples: deque[HeatSample] = deque(maxlen=max_samples)
        self.next_seq = 1

    @property
    def first_seq(self) -> int:
        """The oldest sample kept (next_seq when there is none)."""
        return self.samples[0].seq if self.samples else self.next_seq

    def spread(self, loads: Iterable[tuple[SlotRanges, float]]) -> array:  # type: ignore[type-arg]
        """Each row's mean rate per slot, given (a shard's slot ranges, its rate) for every shard."""
        sums = [0.0] * len(self.rows)
        for ranges, rate in loads:
            width = sum(hi - lo for lo, hi in ranges)
            if width <= 0 or rate <= 0:
                continue
            per_slot = rate / width
            for lo, hi in ranges:
                lo, hi = max(lo, 0), min(hi, self.slot_count)
                if lo >= hi:
                    continue
                for r in range(self._row_of[lo], self._row_of[hi - 1] + 1):
                    rlo, rhi = self.rows[r]
                    sums[r] += per_slot * (min(hi, rhi) - max(lo, rlo))
        return array("f", (v / (hi - lo) for v, (lo, hi) in zip(sums, self.rows)))

    def record(self, wall_ms: int, shards: Iterable[tuple[SlotRanges, float, float]]) -> HeatSample:
        """Take a sample: (slot ranges, reads/s, writes/s) of every shard."""
        shards = list(shards)
        sample = HeatSample(
            self.next_seq,
            wall_ms,
            self.spread((ranges, reads) for ranges, reads, _ in shards),
            self.spread((ranges, writes) for ranges, _, writes in shards),
        )
        self.next_seq += 1
        self.samples.append(sample)
        return sample

    def since(self, seq: int) -> Sequence[HeatSample]:
        """The samples numbered seq and later (all that are kept if seq is older)."""
        if not self.samples or seq >= self.next_seq:
            return ()
        skip = max(0, seq - self.first_seq)
        return list(self.samples)[skip:]
