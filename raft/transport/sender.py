"""What a peer's sender uses (raft/transport/queueing.py and its subclasses):
``Backoff`` between connection attempts, ``drain_queue`` to take one batch
off a peer's queue, and ``iter_snapshot_pieces`` to read a snapshot's data
in whatever form it came."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterable, AsyncIterator

from raft.core.types import Message
from raft.transport.base import SnapshotData

__all__ = ["Backoff", "drain_queue", "iter_snapshot_pieces"]


class Backoff:
    """Exponential backoff with jitter: base_s, 2*base_s, ... up to max_s, each
    scaled by a factor in [0.5, 1) drawn from the injected rng."""

    def __init__(self, rng: random.Random, *, base_s: float = 0.05, max_s: float = 2.0) -> None:
        self._rng = rng
        self._base_s = base_s
        self._max_s = max_s
        self._attempt = 0

    def next_delay_s(self) -> float:
        delay = min(self._max_s, self._base_s * (1 << min(self._attempt, 32)))
        self._attempt += 1
        return delay * (0.5 + 0.5 * self._rng.random())

    def reset(self) -> None:
        self._attempt = 0


def _approx_size(msg: Message) -> int:
    return 64 + len(msg.context) + sum(16 + len(e.data) for e in msg.entries)


def drain_queue(
    queue: asyncio.Queue[tuple[int, Message]],
    first: tuple[int, Message],
    *,
    max_messages: int,
    max_bytes: int,
) -> list[tuple[int, Message]]:
    """first, then as many queued items as are there now, up to max_messages
    and (roughly) max_bytes of payload."""
    batch = [first]
    size = _approx_size(first[1])
    while len(batch) < max_messages and size < max_bytes and not queue.empty():
        item = queue.get_nowait()
        batch.append(item)
        size += _approx_size(item[1])
    return batch


async def iter_snapshot_pieces(data: SnapshotData) -> AsyncIterator[bytes]:
    """The pieces of a snapshot's data, whatever form it came in."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        yield bytes(data) if not isinstance(data, bytes) else data
    elif isinstance(data, AsyncIterable):
        async for piece in data:
            yield piece
    else:
        for piece in data:
            yield piece
