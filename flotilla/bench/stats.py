"""Latency histograms for `flotilla bench`. Pure: no clock, no I/O.

A `Histogram` keeps counts in log-linear buckets (HdrHistogram's idea, in a
few lines): every latency in microseconds falls in a bucket whose width is at
most 1/`SUB_BUCKETS` of its lower bound, so a percentile read from the buckets
is within ~1.6% of the true value; the minimum and maximum are kept exactly.
Histograms of different client processes merge by adding counts, and travel
between processes as plain dicts (`to_dict`/`from_dict`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["SUB_BUCKETS", "Histogram", "Summary", "bucket_of", "bucket_bounds", "summarize"]

SUB_BUCKETS = 64
"""Buckets per power of two (above 2*SUB_BUCKETS us, where buckets are 1 us wide)."""

_SUB_BITS = SUB_BUCKETS.bit_length() - 1
assert 1 << _SUB_BITS == SUB_BUCKETS


def bucket_of(us: int) -> int:
    """The bucket index of a latency in whole microseconds (negative counts as 0).
    Values below 2*SUB_BUCKETS have a bucket each; above, each power of two
    [2^e, 2^(e+1)) is cut into SUB_BUCKETS equal buckets."""
    v = max(0, int(us))
    if v < 2 * SUB_BUCKETS:
        return v
    e = v.bit_length() - 1  # 2^e <= v < 2^(e+1), e >= _SUB_BITS + 1
    sub = (v >> (e - _SUB_BITS)) - SUB_BUCKETS  # 0 .. SUB_BUCKETS-1
    return 2 * SUB_BUCKETS + (e - _SUB_BITS - 1) * SUB_BUCKETS + sub


def bucket_bounds(index: int) -> tuple[int, int]:
    """[low, high) in microseconds of a bucket: bucket_of(v) == index iff low <= v < high."""
    if index < 2 * SUB_BUCKETS:
        return index, index + 1
    e, sub = divmod(index - 2 * SUB_BUCKETS, SUB_BUCKETS)
    e += _SUB_BITS + 1
    width = 1 << (e - _SUB_BITS)
    low = (SUB_BUCKETS + sub) * width
    return low, low + width


@dataclass(frozen=True, slots=True)
class Summary:
    count: int
    min_ms: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float

    def to_dict(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "min_ms": self.min_ms,
            "mean_ms": self.mean_ms,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "p99.9_ms": self.p999_ms,
            "max_ms": self.max_ms,
        }


@dataclass(slots=True)
class Histogram:
    counts: dict[int, int] = field(default_factory=dict)
    count: int = 0
    total_us: int = 0
    min_us: int = 0
    max_us: int = 0

    def record(self, us: int) -> None:
        v = max(0, int(us))
        b = bucket_of(v)
        self.counts[b] = self.counts.get(b, 0) + 1
        if self.count == 0 or v < self.min_us:
            self.min_us = v
        if v > self.max_us:
            self.max_us = v
        self.count += 1
        self.total_us += v

    def merge(self, other: Histogram) -> None:
        if other.count == 0:
            return
        for b, n in other.counts.items():
            self.counts[b] = self.counts.get(b, 0) + n
        self.min_us = other.min_us if self.count == 0 else min(self.min_us, other.min_us)
        self.max_us = max(self.max_us, other.max_us)
        self.count += other.count
        self.total_us += other.total_us

    def percentile_us(self, q: float) -> float:
        """The latency at quantile q (0..100): the midpoint of the bucket holding
        the ceil(q% * count)-th smallest value, clamped to [min, max]."""
        if not 0 <= q <= 100:
            raise ValueError(f"percentile {q} outside 0..100")
        if self.count == 0:
            return 0.0
        rank = max(1, -(-self.count * q // 100))  # ceil, at least the first value
        seen = 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= rank:
                low, high = bucket_bounds(b)
                mid = low if high - low == 1 else (low + high - 1) / 2
                return float(min(max(mid, self.min_us), self.max_us))
        return float(self.max_us)

    def summary(self) -> Summary:
        ms = 1000.0
        return Summary(
            count=self.count,
            min_ms=self.min_us / ms,
            mean_ms=(self.total_us / self.count / ms) if self.count else 0.0,
            p50_ms=self.percentile_us(50) / ms,
            p90_ms=self.percentile_us(90) / ms,
            p99_ms=self.percentile_us(99) / ms,
            p999_ms=self.percentile_us(99.9) / ms,
            max_ms=self.max_us / ms,
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "counts": {str(b): n for b, n in self.counts.items()},
            "count": self.count,
            "total_us": self.total_us,
            "min_us": self.min_us,
            "max_us": self.max_us,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Histogram:
        counts = d["counts"]
        assert isinstance(counts, Mapping)
        return cls(
            counts={int(b): int(n) for b, n in counts.items()},
            count=int(d["count"]),  # type: ignore[call-overload]
            total_us=int(d["total_us"]),  # type: ignore[call-overload]
            min_us=int(d["min_us"]),  # type: ignore[call-overload]
            max_us=int(d["max_us"]),  # type: ignore[call-overload]
        )


def summarize(histograms: Iterable[Histogram]) -> Summary:
    out = Histogram()
    for h in histograms:
        out.merge(h)
    return out.summary()
