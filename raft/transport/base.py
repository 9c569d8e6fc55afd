"""The Transport seam between the multi-group runtime and the network.

The runtime hands the transport (to_node, group_id, message) triples and
never waits for the network; the transport hands back what arrives through a
``TransportHandler`` the runtime implements. Two implementations share this
contract and most of their code (``QueueingTransport``): ``GrpcTransport``
(raft/transport/grpc_transport.py, one long-lived stream per peer) and
``LocalTransport`` (raft/transport/local.py, in memory, for runtime tests), as
httpx pairs its transports with ``MockTransport``.

Contract (both implementations):

- ``send`` never blocks and never raises for network reasons. It returns
  False, counted in ``stats().dropped``, when the peer is unknown, its queue
  is full or the transport is not running; Raft retries on its own. It
  raises ValueError for a message that must never be sent (a local type, or
  snapshot data on a message that is not MSG_SNAP): a bug in the caller.
- A message handed over (True) may still be lost. ``on_unreachable`` then
  tells the runtime, once per distinct (to_node, group_id, to) of each lost
  batch, and the runtime calls ``RawNode.report_unreachable(to)``. While a
  peer is down, whatever is queued for it is discarded this way, so Raft
  learns at once rather than when a queue overflows.
- Messages to one node arrive in the order they were sent, in batches that
  mix all groups.
- A MSG_SNAP message passed to ``send`` goes through ``send_snapshot``.
  Exactly one ``on_snapshot_status`` follows every ``send_snapshot`` that
  returned True, unless the transport is stopped first; the runtime calls
  ``RawNode.report_snapshot(to, ok)``.
- Handler callbacks run on the event loop, synchronously, one at a time; they
  must not block or await. An exception raised by a handler is a bug: the
  transport stops delivering, logs it, and ``join()`` raises it (fail-stop).
  No callback is made once ``stop()`` has begun.
"""

from __future__ import annotations

import asyncio
import logging
import random
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias, runtime_checkable

from raft.core.errors import RaftError
from raft.core.types import LOCAL_MESSAGES, Message, MessageType

__all__ = [
    "Backoff",
    "QueueingTransport",
    "SnapshotData",
    "Transport",
    "TransportError",
    "TransportHandler",
    "TransportStats",
    "drain_queue",
    "iter_snapshot_pieces",
    "spool_token",
    "spooled_path",
]

log = logging.getLogger(__name__)

SnapshotData: TypeAlias = bytes | Iterable[bytes] | AsyncIterable[bytes]
"""A snapshot's data: all of it, or its pieces (of any size) in order. A
synchronous iterable is read on the event loop: pass an async iterable when
producing a piece may block (a RocksDB read), so it can use the executor."""


SPOOL_TOKEN_PREFIX = b"\xff\x00flotilla-spooled-snapshot:"
"""A received snapshot whose data a transport spooled to a file (instead of
holding it in memory) reaches the handler with ``spool_token(path)`` as its
data; the receiver reads the file (``spooled_path``) and removes it once the
snapshot is installed."""


def spool_token(path: str) -> bytes:
    return SPOOL_TOKEN_PREFIX + path.encode()


def spooled_path(data: bytes) -> str | None:
    """The spool file a snapshot's data names, or None for inline data."""
    if data.startswith(SPOOL_TOKEN_PREFIX):
        return data[len(SPOOL_TOKEN_PREFIX) :].decode()
    return None


class TransportError(RaftError):
    """A peer could not be reached, or broke off: an expected outcome that
    the transport reports as unreachable / snapshot failure."""


@runtime_checkable
class TransportHandler(Protocol):
    """What the runtime does with what the transport reports. Called on the loop."""

    def on_messages(self, from_node: int, messages: list[tuple[int, Message]]) -> None:
        """A batch from from_node: (group_id, message) pairs, in send order."""

    def on_snapshot(self, from_node: int, group_id: int, msg: Message) -> None:
        """A MSG_SNAP message whose snapshot carries its full data."""

    def on_unreachable(self, to_node: int, group_id: int, to: int) -> None:
        """A message of group_id for Raft peer `to` on to_node was lost."""

    def on_snapshot_status(self, to_node: int, group_id: int, to: int, ok: bool) -> None:
        """The outcome of a send_snapshot that returned True."""

    def on_peer_down(self, node_id: int) -> None:
        """node_id's process is gone: a connection to it was refused (after
        it was up, or from the start). Reported once until it is up again."""


@dataclass(frozen=True, slots=True)
class TransportStats:
    sent: int = 0  # messages written to a peer
    dropped: int = 0  # messages refused by send(), or lost after it
    batches: int = 0  # batches written
    reconnects: int = 0  # connection attempts after a failed or lost connection
    received: int = 0  # messages received from all peers
    snapshots_sent: int = 0
    snapshots_failed: int = 0  # includes snapshots refused by send_snapshot()
    snapshots_received: int = 0


@runtime_checkable
class Transport(Protocol):
    @property
    def node_id(self) -> int: ...

    @property
    def address(self) -> str:
        """Where peers reach this node (known once started)."""
        ...

    def set_handler(self, handler: TransportHandler) -> None:
        """Where received messages and delivery reports go. Set before start()."""

    def set_peer(self, node_id: int, address: str) -> None:
        """Add a peer, or change its address (the old connection is dropped and
        the new address tried at once; queued messages are kept)."""

    def remove_peer(self, node_id: int) -> None:
        """Forget a peer; messages still queued for it are dropped."""

    def send(self, to_node: int, group_id: int, msg: Message) -> bool:
        """Queue msg for to_node without blocking; False (and counted) if dropped."""

    def send_snapshot(self, to_node: int, group_id: int, msg: Message, data: SnapshotData | None = None) -> bool:
        """Send a MSG_SNAP message and its data (msg.snapshot.data when data is
        None) on its own stream; False when the peer is unknown, the transport
        is not running or the peer has its maximum of snapshots in flight. The
        outcome comes to on_snapshot_status."""

    def stats(self) -> TransportStats: ...

    def connected(self, node_id: int) -> bool:
        """Whether messages to node_id would go out now (for status pages and tests)."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def join(self) -> None:
        """Return once the transport is stopped; raise what a handler raised."""


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


@dataclass(eq=False, slots=True)
class _Peer:
    node_id: int
    address: str
    queue: asyncio.Queue[tuple[int, Message]]
    # Set by send() after each put and by set_peer(): the sender waits on it
    # (no task per get).
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    address_changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None  # the sender
    conn_task: asyncio.Task[None] | None = None  # the current connection, if any
    connected: bool = False
    reported_down: bool = False  # on_peer_down was called since it was last up
    snapshots_in_flight: int = 0


@dataclass(slots=True)
class _Counters:
    sent: int = 0
    dropped: int = 0
    batches: int = 0
    reconnects: int = 0
    received: int = 0
    snapshots_sent: int = 0
    snapshots_failed: int = 0
    snapshots_received: int = 0


class QueueingTransport(ABC):
    """What both transports share: the bounded queue per peer, send(),
    snapshot bookkeeping, reporting to the handler, counters, and the
    fail-stop lifetime. Subclasses supply the connection (``_run_peer``) and
    the snapshot transfer (``_transfer_snapshot``)."""

    def __init__(
        self,
        node_id: int,
        *,
        queue_size: int = 4096,
        max_batch_messages: int = 4096,
        max_batch_bytes: int = 16 << 20,
        max_snapshots_in_flight: int = 2,
    ) -> None:
        if queue_size <= 0 or max_batch_messages <= 0 or max_batch_bytes <= 0:
            raise ValueError("queue_size, max_batch_messages and max_batch_bytes must be positive")
        self._node_id = node_id
        self._queue_size = queue_size
        self._max_batch_messages = max_batch_messages
        self._max_batch_bytes = max_batch_bytes
        self._max_snapshots_in_flight = max_snapshots_in_flight
        self._handler: TransportHandler | None = None
        self._peers: dict[int, _Peer] = {}
        self._snapshot_tasks: set[asyncio.Task[None]] = set()
        self._counters = _Counters()
        self._started = False
        self._stopping = False
        self._failure: BaseException | None = None
        self._closed = asyncio.Event()

    # -- the Transport protocol ----------------------------------------------------

    @property
    def node_id(self) -> int:
        return self._node_id

    def set_handler(self, handler: TransportHandler) -> None:
        self._handler = handler

    def set_peer(self, node_id: int, address: str) -> None:
        peer = self._peers.get(node_id)
        if peer is None:
            peer = _Peer(node_id=node_id, address=address, queue=asyncio.Queue(maxsize=self._queue_size))
            self._peers[node_id] = peer
            if self._started and not self._stopping:
                self._start_sender(peer)
            return
        if peer.address == address:
            return
        log.info("node=%d peer=%d address %s -> %s", self._node_id, node_id, peer.address, address)
        peer.address = address
        peer.address_changed.set()
        peer.wakeup.set()
        if peer.conn_task is not None:
            peer.conn_task.cancel()

    def remove_peer(self, node_id: int) -> None:
        peer = self._peers.pop(node_id, None)
        if peer is None:
            return
        if peer.task is not None:
            peer.task.cancel()
        self._counters.dropped += peer.queue.qsize()

    def send(self, to_node: int, group_id: int, msg: Message) -> bool:
        if msg.type == MessageType.SNAP:
            return self.send_snapshot(to_node, group_id, msg)
        if msg.type in LOCAL_MESSAGES:
            raise ValueError(f"group={group_id} local message {msg.type.name} cannot be sent")
        if msg.snapshot is not None and msg.snapshot.data:
            raise ValueError(f"group={group_id} {msg.type.name} carries snapshot data")
        peer = self._peers.get(to_node)
        if peer is None or self._stopping or self._failure is not None:
            self._counters.dropped += 1
            return False
        try:
            peer.queue.put_nowait((group_id, msg))
        except asyncio.QueueFull:
            self._counters.dropped += 1
            return False
        peer.wakeup.set()
        return True

    def send_snapshot(self, to_node: int, group_id: int, msg: Message, data: SnapshotData | None = None) -> bool:
        if msg.type != MessageType.SNAP or msg.snapshot is None:
            raise ValueError(f"group={group_id} send_snapshot of a {msg.type.name} without a snapshot")
        peer = self._peers.get(to_node)
        if (
            peer is None
            or not self._started
            or self._stopping
            or self._failure is not None
            or peer.snapshots_in_flight >= self._max_snapshots_in_flight
        ):
            self._counters.snapshots_failed += 1
            return False
        if data is None:
            data = msg.snapshot.data
        peer.snapshots_in_flight += 1
        task = asyncio.get_running_loop().create_task(
            self._snapshot_task(peer, group_id, msg, data), name=f"snapshot-{self._node_id}-{to_node}-{group_id}"
        )
        self._snapshot_tasks.add(task)
        task.add_done_callback(self._snapshot_tasks.discard)
        task.add_done_callback(self._task_done)
        return True

    def stats(self) -> TransportStats:
        c = self._counters
        return TransportStats(
            sent=c.sent,
            dropped=c.dropped,
            batches=c.batches,
            reconnects=c.reconnects,
            received=c.received,
            snapshots_sent=c.snapshots_sent,
            snapshots_failed=c.snapshots_failed,
            snapshots_received=c.snapshots_received,
        )

    def connected(self, node_id: int) -> bool:
        """Whether the stream to node_id is up now (for status pages and tests)."""
        peer = self._peers.get(node_id)
        return peer is not None and peer.connected

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("transport already started")
        await self._start_impl()
        self._started = True
        for peer in self._peers.values():
            self._start_sender(peer)

    async def stop(self) -> None:
        if self._stopping:
            await self._closed.wait()
            return
        self._stopping = True
        tasks = [p.task for p in self._peers.values() if p.task is not None]
        tasks += list(self._snapshot_tasks)
        for t in tasks:
            t.cancel()
        try:
            await self._stop_impl()
            # Sender and snapshot tasks report their own failures (_task_done);
            # here we only wait for them to be gone.
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._closed.set()

    async def join(self) -> None:
        await self._closed.wait()
        if self._failure is not None:
            raise self._failure

    # -- for subclasses -------------------------------------------------------------

    @abstractmethod
    async def _start_impl(self) -> None: ...

    @abstractmethod
    async def _stop_impl(self) -> None: ...

    @abstractmethod
    async def _run_peer(self, peer: _Peer) -> None:
        """Send peer.queue to the peer until cancelled, reconnecting as needed."""

    @abstractmethod
    async def _transfer_snapshot(self, peer: _Peer, group_id: int, msg: Message, data: SnapshotData) -> None:
        """Deliver one snapshot; raise TransportError if it did not get there."""

    @property
    def _running(self) -> bool:
        return self._started and not self._stopping and self._failure is None

    def _next_batch(self, peer: _Peer, first: tuple[int, Message]) -> list[tuple[int, Message]]:
        return drain_queue(
            peer.queue, first, max_messages=self._max_batch_messages, max_bytes=self._max_batch_bytes
        )

    async def _wait_queued(self, peer: _Peer) -> None:
        """Return once something is queued for peer, or peer.wakeup is set
        for another reason (check what you wait for after it returns)."""
        if peer.queue.empty():
            peer.wakeup.clear()
            await peer.wakeup.wait()

    def _batch_sent(self, items: list[tuple[int, Message]]) -> None:
        self._counters.sent += len(items)
        self._counters.batches += 1

    def _lost(self, peer: _Peer, items: list[tuple[int, Message]]) -> None:
        """items (taken from peer's queue) did not get there: count them and
        report each distinct (group, Raft peer) unreachable."""
        if not items:
            return
        self._counters.dropped += len(items)
        if not self._running or self._handler is None:
            return
        seen: set[tuple[int, int]] = set()
        for group_id, msg in items:
            key = (group_id, msg.to)
            if key not in seen:
                seen.add(key)
                self._call_handler(self._handler.on_unreachable, peer.node_id, group_id, msg.to)

    def _discard_queued(self, peer: _Peer) -> None:
        """The peer is down: everything queued for it is lost."""
        while not peer.queue.empty():
            first = peer.queue.get_nowait()
            self._lost(peer, self._next_batch(peer, first))

    async def _discard_until(self, peer: _Peer, delay_s: float) -> None:
        """Wait delay_s, or until the peer's address changes, discarding what
        is queued meanwhile: the peer is known to be down."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay_s
        while not peer.address_changed.is_set():
            self._discard_queued(peer)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            peer.wakeup.clear()
            try:
                await asyncio.wait_for(peer.wakeup.wait(), remaining)
            except TimeoutError:
                pass  # the backoff is over

    def _deliver(self, from_node: int, items: list[tuple[int, Message]]) -> bool:
        """Hand a received batch to the handler. False when this transport is
        not running, or when the handler raised (a bug: recorded by _fail,
        and join() raises it)."""
        if not self._running or self._handler is None:
            return False
        self._counters.received += len(items)
        return self._call_handler(self._handler.on_messages, from_node, items)

    def _deliver_snapshot(self, from_node: int, group_id: int, msg: Message) -> bool:
        """Hand a received snapshot to the handler; False as for _deliver."""
        if not self._running or self._handler is None:
            return False
        self._counters.snapshots_received += 1
        return self._call_handler(self._handler.on_snapshot, from_node, group_id, msg)

    def _peer_refused(self, peer: _Peer) -> None:
        """A connection to peer was refused: its process is not there."""
        if peer.reported_down or not self._running or self._handler is None:
            return
        peer.reported_down = True
        self._call_handler(self._handler.on_peer_down, peer.node_id)

    def _call_handler(self, fn: Callable[..., None], *args: object) -> bool:
        """Call a handler callback. If it raises, that is a bug: the transport
        fails (stops delivering; join() raises it) and this returns False."""
        if self._failure is not None:
            return False
        try:
            fn(*args)
        except Exception as exc:
            self._fail(exc)
            return False
        return True

    def _fail(self, exc: BaseException) -> None:
        """A bug (a handler or an internal task raised): stop delivering and
        let join() raise it."""
        if self._failure is None:
            log.error("node=%d transport failed", self._node_id, exc_info=exc)
            self._failure = exc
            self._closed.set()

    def _start_sender(self, peer: _Peer) -> None:
        task = asyncio.get_running_loop().create_task(
            self._run_peer(peer), name=f"raft-sender-{self._node_id}-{peer.node_id}"
        )
        task.add_done_callback(self._task_done)
        peer.task = task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._fail(exc)

    async def _snapshot_task(self, peer: _Peer, group_id: int, msg: Message, data: SnapshotData) -> None:
        ok = False
        try:
            await self._transfer_snapshot(peer, group_id, msg, data)
            ok = True
        except TransportError as exc:
            log.warning(
                "node=%d group=%d snapshot index=%d to peer=%d failed: %s",
                self._node_id,
                group_id,
                msg.snapshot.metadata.index if msg.snapshot else 0,
                peer.node_id,
                exc,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug, or the snapshot's data could not be read
            self._fail(exc)
        finally:
            peer.snapshots_in_flight -= 1
            if ok:
                self._counters.snapshots_sent += 1
            else:
                self._counters.snapshots_failed += 1
            if self._running and self._handler is not None:
                self._call_handler(self._handler.on_snapshot_status, peer.node_id, group_id, msg.to, ok)
