"""The in-memory twin of GrpcTransport, for runtime tests (httpx's MockTransport).

    net = LocalNetwork()
    t1, t2 = net.transport(1), net.transport(2)
    t1.set_peer(2, t2.address); t2.set_peer(1, t1.address)
    await t1.start(); await t2.start()
    t1.send(2, group_id, msg)          # delivered by t1's sender task to t2's handler
    net.cut(1, 2)                      # now lost, reported through on_unreachable
    net.heal()

Same contract as GrpcTransport (base.py): bounded queue per peer with counted
drops, one sender task per peer delivering batches in order, unreachable
reports for what is lost, snapshots on their own task, fail-stop on a handler
exception. No sockets, no threads, no sleeps: everything happens on the loop.
Each call to ``LocalNetwork.transport`` gets a fresh address, as a restarted
process would get a new port.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from raft.core.types import Message
from raft.transport.base import SnapshotData, TransportError, _Peer
from raft.transport.queueing import QueueingTransport
from raft.transport.sender import iter_snapshot_pieces

__all__ = ["LocalNetwork", "LocalTransport"]

log = logging.getLogger(__name__)


class LocalNetwork:
    """Routes between LocalTransports by address, with links that can be cut."""

    def __init__(self) -> None:
        self._by_address: dict[str, LocalTransport] = {}
        self._cut: set[tuple[int, int]] = set()  # directed (from_node, to_node)
        self._isolated: set[int] = set()
        self._next_incarnation = 1

    def transport(self, node_id: int, **kwargs: int) -> LocalTransport:
        """A new transport for node_id, with an address no other transport had.
        kwargs: queue_size, max_batch_messages, max_batch_bytes, max_snapshots_in_flight."""
        address = f"local:{node_id}#{self._next_incarnation}"
        self._next_incarnation += 1
        return LocalTransport(self, node_id, address, **kwargs)

    def cut(self, a: int, b: int, *, one_way: bool = False) -> None:
        """Lose everything from a to b (and b to a unless one_way)."""
        self._cut.add((a, b))
        if not one_way:
            self._cut.add((b, a))

    def isolate(self, node_id: int) -> None:
        """Lose everything to and from node_id."""
        self._isolated.add(node_id)

    def heal(self) -> None:
        self._cut.clear()
        self._isolated.clear()

    def reachable(self, from_node: int, to_node: int) -> bool:
        return (
            (from_node, to_node) not in self._cut
            and from_node not in self._isolated
            and to_node not in self._isolated
        )

    def _route(self, from_node: int, to_node: int, address: str) -> LocalTransport | None:
        dest = self._by_address.get(address)
        if dest is None or dest.node_id != to_node or not dest._running:
            return None
        return dest if self.reachable(from_node, to_node) else None

    def _register(self, t: LocalTransport) -> None:
        self._by_address[t.address] = t

    def _unregister(self, t: LocalTransport) -> None:
        if self._by_address.get(t.address) is t:
            del self._by_address[t.address]

    def __iter__(self) -> Iterator[LocalTransport]:
        return iter(list(self._by_address.values()))


class LocalTransport(QueueingTransport):
    def __init__(self, network: LocalNetwork, node_id: int, address: str, **kwargs: int) -> None:
        super().__init__(node_id, **kwargs)
        self._network = network
        self._address = address

    @property
    def address(self) -> str:
        return self._address

    def connected(self, node_id: int) -> bool:
        peer = self._peers.get(node_id)
        return peer is not None and self._network._route(self._node_id, node_id, peer.address) is not None

    async def _start_impl(self) -> None:
        self._network._register(self)

    async def _stop_impl(self) -> None:
        self._network._unregister(self)

    async def _run_peer(self, peer: _Peer) -> None:
        while True:
            await self._wait_queued(peer)
            if peer.queue.empty():
                continue
            items = self._next_batch(peer, peer.queue.get_nowait())
            dest = self._network._route(self._node_id, peer.node_id, peer.address)
            if dest is None:
                if peer.connected:
                    log.info("node=%d link to peer=%d down", self._node_id, peer.node_id)
                peer.connected = False
                self._lost(peer, items)
                continue
            if not peer.connected:
                if self._counters.batches:
                    self._counters.reconnects += 1
                peer.connected = True
            self._batch_sent(items)
            # False only if dest's handler raised: dest recorded the bug and
            # dest.join() raises it; for this sender the batch was written.
            dest._deliver(self._node_id, items)

    async def _transfer_snapshot(self, peer: _Peer, group_id: int, msg: Message, data: SnapshotData) -> None:
        assert msg.snapshot is not None
        pieces = [piece async for piece in iter_snapshot_pieces(data)]
        dest = self._network._route(self._node_id, peer.node_id, peer.address)
        if dest is None:
            raise TransportError(f"peer {peer.node_id} at {peer.address} is unreachable")
        full = Message(
            type=msg.type,
            to=msg.to,
            from_=msg.from_,
            term=msg.term,
            log_term=msg.log_term,
            index=msg.index,
            entries=msg.entries,
            commit=msg.commit,
            snapshot=type(msg.snapshot)(metadata=msg.snapshot.metadata, data=b"".join(pieces)),
            reject=msg.reject,
            reject_hint=msg.reject_hint,
            context=msg.context,
        )
        if not dest._deliver_snapshot(self._node_id, group_id, full):
            raise TransportError(f"peer {peer.node_id} did not take the snapshot")
