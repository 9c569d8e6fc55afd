"""The Transport over gRPC: one long-lived stream per peer, snapshots on their own.

Sending (per peer, one asyncio task):

    queue (bounded; send() drops when full)
      -> drain what is there (up to a batch limit)
      -> encode ONE MessageBatch (heartbeats coalesced, codec.py)
      -> write it to the RaftTransport.Stream call to that peer

A stream starts with the receiver's StreamAck naming its node id, so the
sender knows it reached the right process. When the stream breaks, or a
connection attempt fails, what was being written and what is queued is
reported unreachable (queueing.py), then the sender waits (exponential backoff,
50 ms to 2 s, jittered by the injected Random), discarding what is queued
meanwhile, and tries again. Each attempt uses a new channel with a local
subchannel pool, so gRPC's own connection backoff never delays it; a new
address given by set_peer() is tried at once.

Receiving: RaftTransport.Stream decodes each batch and hands it to the
handler, on the loop, before reading the next one. A malformed batch is
logged and ends that stream (INVALID_ARGUMENT); the process carries on.

Snapshots: send_snapshot() opens RaftTransport.SendSnapshot on a channel of
its own (its own TCP connection), streams the data in chunks
(SnapshotChunker, 1 MiB), and reports the outcome; the receiver reassembles
(SnapshotAssembler) and hands the whole message to on_snapshot; with
snapshot_spool_dir set, it writes the data to a file there as it comes and
hands on a message whose data is base.spool_token(path) (bounded memory).

Probing: while a stream to a peer is up, the sender calls RaftTransport.Probe
on the stream's channel (its connection) at once and then every
`probe_interval_s` (etcd's prober: 4 s), and records the round trip in
that peer's `RttHistogram` (`peer_rtt()`: etcd_network_peer_round_trip_time_seconds).

Every grpc.aio object is created and used on the one event loop.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import random
from collections.abc import AsyncIterator

import grpc
import grpc.aio

from flotillapb import raft_pb2 as pb
from flotillapb import raft_pb2_grpc
from raft.core.types import Message
from raft.transport.base import SnapshotData, TransportError, _Peer
from raft.transport.codec import (
    DEFAULT_CHUNK_SIZE,
    CodecError,
    SnapshotAssembler,
    SnapshotChunker,
    decode_batch,
    encode_batch,
)
from raft.transport.queueing import QueueingTransport
from raft.transport.sender import Backoff, iter_snapshot_pieces
from rpc import tls

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "RTT_BUCKETS_S", "GrpcTransport", "RaftTransportServicer", "RttHistogram"]

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 64 << 20
"""Largest MessageBatch or SnapshotChunk, both directions (gRPC's default is 4 MiB)."""


RTT_BUCKETS_S = tuple(0.0001 * 2**i for i in range(16))
"""etcd's buckets for the peer round trip time: 0.1 ms doubling up to 3.3 s."""


class RttHistogram:
    """Probe round trips to one peer: counts per bucket of RTT_BUCKETS_S
    (the last count: above them all), their sum and number."""

    __slots__ = ("counts", "sum_s", "count")

    def __init__(self) -> None:
        self.counts = [0] * (len(RTT_BUCKETS_S) + 1)
        self.sum_s = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(RTT_BUCKETS_S, seconds)] += 1
        self.sum_s += seconds
        self.count += 1


def _channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # A new channel is a new connection: gRPC's reconnect backoff (1 s up
        # to 120 s) does not carry over from a failed one; ours applies.
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.enable_retries", 0),
        # Find a dead peer behind a silent network within ~15 s.
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def _server_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_permit_without_calls", 1),
        # Accept the peers' keepalive pings (the default minimum is 5 min).
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ]


class GrpcTransport(QueueingTransport):
    """Transport over gRPC. See the module docstring; the contract is base.py's.

    With ``listen`` (default ``127.0.0.1:0``) the transport runs its own
    server and ``address`` is the bound address. With ``listen=None`` call
    ``add_to_server(server)`` on the process's server before it starts.
    """

    def __init__(
        self,
        node_id: int,
        *,
        listen: str | None = "127.0.0.1:0",
        rng: random.Random | None = None,
        queue_size: int = 4096,
        max_batch_messages: int = 4096,
        max_batch_bytes: int = 16 << 20,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        snapshot_chunk_bytes: int = DEFAULT_CHUNK_SIZE,
        max_snapshot_bytes: int = 4 << 30,
        max_snapshots_in_flight: int = 2,
        connect_timeout_s: float = 5.0,
        snapshot_timeout_s: float = 600.0,
        backoff_base_s: float = 0.05,
        backoff_max_s: float = 2.0,
        stop_grace_s: float | None = None,
        snapshot_spool_dir: str | None = None,
        probe_interval_s: float = 4.0,
    ) -> None:
        if max_batch_bytes >= max_message_bytes:
            raise ValueError("max_batch_bytes must be below max_message_bytes")
        if snapshot_chunk_bytes >= max_message_bytes:
            raise ValueError("snapshot_chunk_bytes must be below max_message_bytes")
        super().__init__(
            node_id,
            queue_size=queue_size,
            max_batch_messages=max_batch_messages,
            max_batch_bytes=max_batch_bytes,
            max_snapshots_in_flight=max_snapshots_in_flight,
        )
        self._listen = listen
        self._rng = rng if rng is not None else random.Random()
        self._channel_options = _channel_options(max_message_bytes)
        self._server_options = _server_options(max_message_bytes)
        self._snapshot_chunk_bytes = snapshot_chunk_bytes
        self._max_snapshot_bytes = max_snapshot_bytes
        self._connect_timeout_s = connect_timeout_s
        self._snapshot_timeout_s = snapshot_timeout_s
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._stop_grace_s = stop_grace_s
        self._snapshot_spool_dir = snapshot_spool_dir
        """Where received snapshots are spooled (None: reassembled in memory)."""
        self._server: grpc.aio.Server | None = None
        self._address = ""
        self._probe_interval_s = probe_interval_s
        self._rtt: dict[int, RttHistogram] = {}

    def peer_rtt(self) -> dict[int, RttHistogram]:
        """Probe round trips by peer id (peers probed at least once)."""
        return dict(self._rtt)

    @property
    def address(self) -> str:
        """host:port of this transport's own server, once started ("" with listen=None)."""
        return self._address

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Serve RaftTransport on an existing server (which must allow messages
        of max_message_bytes)."""
        raft_pb2_grpc.add_RaftTransportServicer_to_server(RaftTransportServicer(self), server)

    async def _start_impl(self) -> None:
        if self._listen is None:
            return
        server = grpc.aio.server(options=self._server_options)
        self.add_to_server(server)
        port = tls.add_peer_port(server, self._listen)
        await server.start()
        self._server = server
        self._address = f"{self._listen.rsplit(':', 1)[0]}:{port}"
        log.info("node=%d raft transport listening on %s", self._node_id, self._address)

    async def _stop_impl(self) -> None:
        if self._server is not None:
            await self._server.stop(self._stop_grace_s)

    # -- sending ------------------------------------------------------------------

    async def _run_peer(self, peer: _Peer) -> None:
        backoff = Backoff(self._rng, base_s=self._backoff_base_s, max_s=self._backoff_max_s)
        first_attempt = True
        while True:
            if not first_attempt:
                self._counters.reconnects += 1
            first_attempt = False
            peer.address_changed.clear()
            conn = asyncio.get_running_loop().create_task(
                self._connection(peer, peer.address, backoff), name=f"raft-stream-{self._node_id}-{peer.node_id}"
            )
            peer.conn_task = conn
            try:
                await asyncio.wait({conn})
            finally:
                peer.conn_task = None
                if not conn.done():  # we are being cancelled: let the connection close first
                    conn.cancel()
                    await asyncio.wait({conn})
            if not conn.cancelled():
                conn.result()  # a bug in the connection re-raises here
            if peer.address_changed.is_set():
                continue  # a new address: try it now, with what is queued
            self._discard_queued(peer)
            await self._discard_until(peer, backoff.next_delay_s())

    async def _connection(self, peer: _Peer, address: str, backoff: Backoff) -> None:
        """One stream to peer at address: open it, then write batches until it
        breaks. Returns when it failed or broke; raises only on bugs."""
        channel = tls.peer_aio_channel(address, self._channel_options)
        call: grpc.aio.StreamStreamCall[pb.MessageBatch, pb.StreamAck] | None = None
        in_hand: list[tuple[int, Message]] = []
        try:
            call = raft_pb2_grpc.RaftTransportStub(channel).Stream()
            try:
                async with asyncio.timeout(self._connect_timeout_s):
                    hello = await call.read()
            except grpc.aio.AioRpcError as exc:
                log.debug(
                    "node=%d peer=%d address=%s connect failed: %s",
                    self._node_id,
                    peer.node_id,
                    address,
                    exc.code().name,
                )
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    self._peer_refused(peer)
                return
            except TimeoutError:
                log.debug("node=%d peer=%d address=%s connect timed out", self._node_id, peer.node_id, address)
                return
            if not isinstance(hello, pb.StreamAck) or hello.node_id != peer.node_id:
                log.warning(
                    "node=%d peer=%d address=%s answered as node %s",
                    self._node_id,
                    peer.node_id,
                    address,
                    hello.node_id if isinstance(hello, pb.StreamAck) else None,
                )
                return
            backoff.reset()
            peer.connected = True
            peer.reported_down = False
            log.info("node=%d stream to peer=%d address=%s up", self._node_id, peer.node_id, address)
            ended = asyncio.ensure_future(self._until_ended(call))
            ended.add_done_callback(lambda _: peer.wakeup.set())
            probe = asyncio.ensure_future(self._probe(peer.node_id, channel))
            try:
                while True:
                    await self._wait_queued(peer)
                    if ended.done():
                        return  # the stream is gone: what is queued is lost
                    if peer.queue.empty():
                        continue
                    in_hand = self._next_batch(peer, peer.queue.get_nowait())
                    try:
                        await call.write(encode_batch(self._node_id, peer.node_id, in_hand))
                    except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
                        log.debug("node=%d peer=%d write failed: %r", self._node_id, peer.node_id, exc)
                        return
                    self._batch_sent(in_hand)
                    in_hand = []
            finally:
                ended.cancel()
                probe.cancel()
        finally:
            if peer.connected:
                log.info("node=%d stream to peer=%d address=%s down", self._node_id, peer.node_id, address)
            peer.connected = False
            self._lost(peer, in_hand)
            if call is not None:
                call.cancel()
            await channel.close()

    async def _probe(self, peer_id: int, channel: grpc.aio.Channel) -> None:
        """Time a Probe on the stream's connection now and every probe
        interval, until cancelled (the connection ended)."""
        stub = raft_pb2_grpc.RaftTransportStub(channel)
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            try:
                resp = await stub.Probe(pb.ProbeRequest(from_node=self._node_id), timeout=self._connect_timeout_s)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    return  # a peer of an older version
                log.debug("node=%d peer=%d probe failed: %s", self._node_id, peer_id, exc.code().name)
            else:
                if resp.node_id == peer_id:
                    self._rtt.setdefault(peer_id, RttHistogram()).observe(loop.time() - t0)
            await asyncio.sleep(self._probe_interval_s)

    @staticmethod
    async def _until_ended(call: grpc.aio.StreamStreamCall[pb.MessageBatch, pb.StreamAck]) -> None:
        """Read the response side until it ends: the stream is gone."""
        try:
            while await call.read() is not grpc.aio.EOF:
                pass
        except grpc.aio.AioRpcError:
            pass  # the stream is gone; the writer reports what it loses

    async def _transfer_snapshot(self, peer: _Peer, group_id: int, msg: Message, data: SnapshotData) -> None:
        chunker = SnapshotChunker(self._node_id, peer.node_id, group_id, msg, chunk_size=self._snapshot_chunk_bytes)
        channel = tls.peer_aio_channel(peer.address, self._channel_options)
        try:
            call = raft_pb2_grpc.RaftTransportStub(channel).SendSnapshot(timeout=self._snapshot_timeout_s)
            try:
                async for piece in iter_snapshot_pieces(data):
                    for chunk in chunker.add(piece):
                        await call.write(chunk)
                await call.write(chunker.finish())
                await call.done_writing()
                ack = await call
            except grpc.aio.AioRpcError as exc:
                raise TransportError(f"{exc.code().name}: {exc.details()}") from exc
            except asyncio.InvalidStateError as exc:  # the call ended: its status says why
                raise TransportError(f"{(await call.code()).name}: {await call.details()}") from exc
            finally:
                call.cancel()
            if ack.node_id != peer.node_id:
                raise TransportError(f"snapshot reached node {ack.node_id}, not {peer.node_id}")
            log.info(
                "node=%d group=%d sent snapshot index=%d to peer=%d bytes=%d",
                self._node_id,
                group_id,
                msg.snapshot.metadata.index if msg.snapshot else 0,
                peer.node_id,
                chunker.total_bytes,
            )
        finally:
            await channel.close()


class RaftTransportServicer(raft_pb2_grpc.RaftTransportServicer):
    """Decode, hand to the transport's handler, encode: nothing else."""

    def __init__(self, transport: GrpcTransport) -> None:
        self._t = transport

    async def Stream(  # noqa: N802 (gRPC method name)
        self,
        request_iterator: AsyncIterator[pb.MessageBatch],
        context: grpc.aio.ServicerContext[pb.MessageBatch, pb.StreamAck],
    ) -> AsyncIterator[pb.StreamAck]:
        t = self._t
        if not t._running:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"node {t.node_id} is not running")
        yield pb.StreamAck(node_id=t.node_id)
        async for batch in request_iterator:
            if batch.to_node != t.node_id:
                log.warning(
                    "node=%d batch from node=%d addressed to node=%d", t.node_id, batch.from_node, batch.to_node
                )
                await context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION, f"this is node {t.node_id}, not node {batch.to_node}"
                )
            try:
                items = decode_batch(batch)
            except CodecError as exc:
                log.warning(
                    "node=%d malformed batch from node=%d (%s): %s", t.node_id, batch.from_node, context.peer(), exc
                )
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed batch: {exc}")
            if not t._deliver(batch.from_node, items):
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"node {t.node_id} is not accepting messages")

    async def Probe(  # noqa: N802 (gRPC method name)
        self, request: pb.ProbeRequest, context: grpc.aio.ServicerContext[pb.ProbeRequest, pb.ProbeResponse]
    ) -> pb.ProbeResponse:
        return pb.ProbeResponse(node_id=self._t.node_id)

    async def SendSnapshot(  # noqa: N802 (gRPC method name)
        self,
        request_iterator: AsyncIterator[pb.SnapshotChunk],
        context: grpc.aio.ServicerContext[pb.SnapshotChunk, pb.SnapshotAck],
    ) -> pb.SnapshotAck:
        t = self._t
        asm = SnapshotAssembler(node_id=t.node_id, max_bytes=t._max_snapshot_bytes, spool_dir=t._snapshot_spool_dir)
        try:
            return await self._receive_snapshot(asm, request_iterator, context)
        finally:
            if not asm.delivered:
                asm.discard()

    async def _receive_snapshot(
        self,
        asm: SnapshotAssembler,
        request_iterator: AsyncIterator[pb.SnapshotChunk],
        context: grpc.aio.ServicerContext[pb.SnapshotChunk, pb.SnapshotAck],
    ) -> pb.SnapshotAck:
        t = self._t
        try:
            complete = False
            async for chunk in request_iterator:
                if asm.add(chunk):
                    complete = True
                    break
            if not complete:
                raise CodecError("snapshot stream ended before its last chunk")
            from_node, group_id, msg = asm.result()
        except CodecError as exc:
            log.warning(
                "node=%d bad snapshot from node=%d group=%d (%s): %s",
                t.node_id,
                asm.from_node,
                asm.group_id,
                context.peer(),
                exc,
            )
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad snapshot: {exc}")
        log.info(
            "node=%d group=%d received snapshot index=%d from node=%d bytes=%d",
            t.node_id,
            group_id,
            msg.snapshot.metadata.index if msg.snapshot else 0,
            from_node,
            asm.received_bytes,
        )
        if not t._deliver_snapshot(from_node, group_id, msg):
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"node {t.node_id} is not accepting snapshots")
        asm.delivered = True  # the spool file, if any, is the handler's now
        return pb.SnapshotAck(node_id=t.node_id, received_bytes=asm.received_bytes)

