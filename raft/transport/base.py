"""The Transport seam between the multi-group runtime and the network.

The runtime hands the transport (to_node, group_id, message) triples and
never waits for the network; the transport hands back what arrives through a
``TransportHandler`` the runtime implements. Two implementations share this
contract and most of their code (``QueueingTransport``, raft/transport/queueing.py;
the sender's helpers are in raft/transport/sender.py): ``GrpcTransport``
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
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias, runtime_checkable

from raft.core.errors import RaftError
from raft.core.types import Message

__all__ = [
    "SnapshotData",
    "Transport",
    "TransportError",
    "TransportHandler",
    "TransportStats",
    "spool_token",
    "spooled_path",
]

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


# --- the per-peer state of a queueing transport (raft/transport/queueing.py) ---------


@dataclass(eq=False, slots=True)
class _Peer:
    """One peer's send queue and connection state (QueueingTransport's; its
    subclasses and test transports read it in ``_run_peer``)."""

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
