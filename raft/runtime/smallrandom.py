"""SmallRandom: the randomness of one hosted group in 8 bytes of state.

Each group draws its randomized election timeouts from its own generator,
seeded from the host's, so one group's draws do not depend on another's
activity and a seeded simulation replays exactly. ``random.Random`` keeps
the Mersenne Twister's 2.5 KB of state per instance, which with 1,000
groups on a store was the largest single item of an idle replica's memory
(issue #20). SplitMix64 (Steele, Lea and Flood, "Fast splittable
pseudorandom number generators", 2014) keeps one 64-bit word; an election
timeout needs nothing better."""

from __future__ import annotations

__all__ = ["SmallRandom"]

_MASK = (1 << 64) - 1


class SmallRandom:
    """A SplitMix64 generator: what the Raft core needs of randomness
    (``RandomSource.randrange``)."""

    __slots__ = ("_state",)

    def __init__(self, seed: int) -> None:
        self._state = seed & _MASK

    def _next(self) -> int:
        self._state = z = (self._state + 0x9E3779B97F4A7C15) & _MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return z ^ (z >> 31)

    def randrange(self, n: int, /) -> int:
        """A uniform integer in [0, n) (n below 2**32: the bias of the
        multiply-shift reduction is then below 2**-32)."""
        if n <= 0:
            raise ValueError(f"empty range for randrange({n})")
        return (self._next() * n) >> 64
