"""QueueingTransport: what both transports (raft/transport/grpc_transport.py
and raft/transport/local.py) share, under the contract in
raft/transport/base.py: a bounded queue per peer, send(), snapshot
bookkeeping, reporting to the handler, counters, and the fail-stop
lifetime."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable

from raft.core.types import LOCAL_MESSAGES, Message, MessageType
from raft.transport.base import (
    SnapshotData,
    TransportError,
    TransportHandler,
    TransportStats,
    _Counters,
    _Peer,
)
from raft.transport.sender import drain_queue

__all__ = ["QueueingTransport"]

log = logging.getLogger(__name__)


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
