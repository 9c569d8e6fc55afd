"""GrpcTransport over real gRPC on 127.0.0.1 (port 0), two nodes in one process.

No sleeps for synchronization: tests wait on the handlers' reports (an
asyncio.Event poked on every callback) or poll a predicate, always against a
deadline; every test runs under asyncio.wait_for.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import grpc
import grpc.aio
import pytest

from flotillapb import raft_pb2 as pb
from flotillapb import raft_pb2_grpc
from raft.core.types import ConfState, Entry, Message, MessageType, Snapshot, SnapshotMetadata
from raft.transport import GrpcTransport, Transport, TransportHandler
from raft.transport.codec import encode_batch

TEST_TIMEOUT_S = 30.0
WAIT_S = 10.0


def run(body: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(body(), TEST_TIMEOUT_S)

    asyncio.run(bounded())


class Recorder:
    """A TransportHandler that records every report and wakes waiters."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, list[tuple[int, Message]]]] = []
        self.snapshots: list[tuple[int, int, Message]] = []
        self.unreachable: list[tuple[int, int, int]] = []
        self.snapshot_status: list[tuple[int, int, int, bool]] = []
        self.peers_down: list[int] = []
        self.fail_with: Exception | None = None
        self._changed = asyncio.Event()

    @property
    def messages(self) -> list[tuple[int, Message]]:
        return [item for _, items in self.batches for item in items]

    def on_messages(self, from_node: int, messages: list[tuple[int, Message]]) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.batches.append((from_node, messages))
        self._changed.set()

    def on_snapshot(self, from_node: int, group_id: int, msg: Message) -> None:
        self.snapshots.append((from_node, group_id, msg))
        self._changed.set()

    def on_unreachable(self, to_node: int, group_id: int, to: int) -> None:
        self.unreachable.append((to_node, group_id, to))
        self._changed.set()

    def on_snapshot_status(self, to_node: int, group_id: int, to: int, ok: bool) -> None:
        self.snapshot_status.append((to_node, group_id, to, ok))
        self._changed.set()

    def on_peer_down(self, node_id: int) -> None:
        self.peers_down.append(node_id)
        self._changed.set()

    async def wait_for(self, predicate: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                while not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            pytest.fail(
                f"timed out after {timeout_s}s waiting for {what}; batches={len(self.batches)} "
                f"messages={len(self.messages)} unreachable={self.unreachable[-5:]} "
                f"snapshots={len(self.snapshots)} snapshot_status={self.snapshot_status}"
            )


async def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    """Poll a predicate with no event to wait on (connection state)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.01)  # sleep-ok: polling interval of a deadline-bounded wait


def app(group_id: int, index: int, payload: bytes = b"") -> Message:
    return Message(
        type=MessageType.APP,
        to=2,
        from_=1,
        term=3,
        log_term=3,
        index=index - 1,
        entries=(Entry(term=3, index=index, data=payload or f"g{group_id}-{index}".encode()),),
        commit=index - 1,
    )


def heartbeat(group_id: int, to: int = 2, from_: int = 1) -> Message:
    return Message(type=MessageType.HEARTBEAT, to=to, from_=from_, term=5, commit=1000 + group_id)


@asynccontextmanager
async def two_nodes(**kwargs: float) -> AsyncIterator[tuple[GrpcTransport, Recorder, GrpcTransport, Recorder]]:
    t1 = GrpcTransport(1, rng=random.Random(1), **kwargs)  # type: ignore[arg-type]
    t2 = GrpcTransport(2, rng=random.Random(2), **kwargs)  # type: ignore[arg-type]
    r1, r2 = Recorder(), Recorder()
    t1.set_handler(r1)
    t2.set_handler(r2)
    try:
        await t1.start()
        await t2.start()
        t1.set_peer(2, t2.address)
        t2.set_peer(1, t1.address)
        yield t1, r1, t2, r2
    finally:
        await t1.stop()
        await t2.stop()


def test_implements_the_protocols() -> None:
    assert isinstance(GrpcTransport(1), Transport)
    assert isinstance(Recorder(), TransportHandler)


def test_batches_are_delivered_in_order() -> None:
    async def body() -> None:
        async with two_nodes() as (t1, _, t2, r2):
            sent: list[tuple[int, Message]] = []
            for burst in range(20):
                for k in range(100):
                    item = (k % 10, app(k % 10, burst * 100 + k + 1, payload=bytes([k]) * k))
                    assert t1.send(2, *item)
                    sent.append(item)
                if burst % 5 == 4:  # some bursts wait for delivery, others pile up behind them
                    await r2.wait_for(lambda: len(r2.messages) == len(sent), f"{len(sent)} messages")
            assert r2.messages == sent
            assert {from_node for from_node, _ in r2.batches} == {1}
            # The sender counts a batch when its write returns, which may be
            # after the receiver has it.
            await wait_until(lambda: t1.stats().sent == 2000, "node 1 to count what it sent")
            s1 = t1.stats()
            assert (s1.sent, s1.dropped) == (2000, 0)
            assert 4 <= s1.batches < 2000
            assert s1.batches == len(r2.batches)
            assert t2.stats().received == 2000

    run(body)


def test_heartbeats_of_500_groups_travel_in_one_small_batch() -> None:
    async def body() -> None:
        async with two_nodes() as (t1, _, _t2, r2):
            assert t1.send(2, 1, app(1, 1))
            await r2.wait_for(lambda: len(r2.batches) == 1, "the first batch")
            beats = [(gid, heartbeat(gid)) for gid in range(1, 501)]
            for gid, msg in beats:
                assert t1.send(2, gid, msg)
            await r2.wait_for(lambda: len(r2.messages) == 501, "500 heartbeats")
            assert len(r2.batches) == 2
            assert r2.batches[-1] == (1, beats)
            await wait_until(lambda: t1.stats().sent == 501, "node 1 to count what it sent")
            assert t1.stats().batches == 2
            wire = encode_batch(1, 2, beats)
            assert (len(wire.heartbeats), len(wire.messages)) == (500, 0)
            assert wire.ByteSize() < 500 * 16

    run(body)


def test_a_full_queue_drops_and_counts_without_blocking() -> None:
    async def body() -> None:
        async with two_nodes(queue_size=8) as (t1, _, _t2, r2):
            accepted = [t1.send(2, 7, app(7, i + 1)) for i in range(100)]  # no await: the sender cannot drain
            assert accepted == [True] * 8 + [False] * 92
            assert not t1.send(99, 7, app(7, 1))  # unknown peer
            assert t1.stats().dropped == 93
            await r2.wait_for(lambda: len(r2.messages) == 8, "the 8 queued messages")
            assert [m.entries[0].index for _, m in r2.messages] == list(range(1, 9))
            assert t1.send(2, 7, app(7, 9))  # room again
            await r2.wait_for(lambda: len(r2.messages) == 9, "one more")

    run(body)


def test_peer_restart_reports_unreachable_then_delivery_resumes() -> None:
    async def body() -> None:
        async with two_nodes() as (t1, r1, t2, r2):
            assert t1.send(2, 3, heartbeat(3))
            await r2.wait_for(lambda: len(r2.messages) == 1, "delivery before the restart")
            await t2.stop()
            await wait_until(lambda: not t1.connected(2), "node 1 to see the stream to node 2 end")
            assert t1.send(2, 3, heartbeat(3))
            assert t1.send(2, 4, app(4, 1))
            await r1.wait_for(lambda: {(2, 3, 2), (2, 4, 2)} <= set(r1.unreachable), "unreachable reports")
            assert t1.stats().dropped >= 2

            t2b = GrpcTransport(2, rng=random.Random(3))
            r2b = Recorder()
            t2b.set_handler(r2b)
            try:
                await t2b.start()
                assert t2b.address != t2.address
                t2b.set_peer(1, t1.address)
                t1.set_peer(2, t2b.address)
                assert t1.send(2, 3, heartbeat(3))
                await r2b.wait_for(lambda: len(r2b.messages) == 1, "delivery to the restarted node")
                assert r2b.messages == [(3, heartbeat(3))]
                assert t1.connected(2)
                assert t1.stats().reconnects >= 1
            finally:
                await t2b.stop()

    run(body)


def test_a_peer_whose_process_is_gone_is_reported_down_once_until_it_is_back() -> None:
    """A connection refused after the stream ended: the handler hears
    on_peer_down(2) once (the host makes the groups node 2 led elect anew),
    not again on every refused retry; once node 2 is back and up, a second
    loss is reported again."""

    async def body() -> None:
        async with two_nodes(backoff_max_s=0.1) as (t1, r1, t2, r2):  # type: ignore[arg-type]
            assert t1.send(2, 3, heartbeat(3))
            await r2.wait_for(lambda: len(r2.messages) == 1, "delivery before the stop")
            assert r1.peers_down == []
            await t2.stop()
            await r1.wait_for(lambda: r1.peers_down == [2], "node 2 reported down")
            await wait_until(lambda: t1.stats().reconnects >= 4, "several refused reconnects")
            assert r1.peers_down == [2]
            t2b = GrpcTransport(2, listen=t2.address)
            t2b.set_handler(Recorder())
            await t2b.start()
            try:
                await wait_until(lambda: t1.connected(2), "node 1 to reconnect")
            finally:
                await t2b.stop()
            await r1.wait_for(lambda: r1.peers_down == [2, 2], "node 2 reported down again")

    run(body)


def test_a_peer_back_on_the_same_address_is_reconnected_by_backoff() -> None:
    async def body() -> None:
        async with two_nodes(backoff_max_s=0.2) as (t1, r1, t2, r2):  # type: ignore[arg-type]
            assert t1.send(2, 3, heartbeat(3))
            await r2.wait_for(lambda: len(r2.messages) == 1, "delivery before the restart")
            await t2.stop()
            await wait_until(lambda: not t1.connected(2), "node 1 to see the stream to node 2 end")
            t2b = GrpcTransport(2, listen=t2.address)
            r2b = Recorder()
            t2b.set_handler(r2b)
            try:
                await t2b.start()
                assert t2b.address == t2.address
                # No set_peer: the sender's own retries find the node again.
                await wait_until(lambda: t1.connected(2), "node 1 to reconnect")
                assert t1.send(2, 3, heartbeat(3))
                await r2b.wait_for(lambda: len(r2b.messages) == 1, "delivery to the restarted node")
                assert t1.stats().reconnects >= 1
            finally:
                await t2b.stop()

    run(body)


def test_a_different_node_at_the_address_is_not_a_connection() -> None:
    async def body() -> None:
        async with two_nodes() as (t1, r1, t2, r2):
            t1.set_peer(3, t2.address)  # node 2 answers there, not node 3
            assert t1.send(3, 8, heartbeat(8, to=3))
            await r1.wait_for(lambda: (3, 8, 3) in r1.unreachable, "unreachable for the wrong node")
            assert not t1.connected(3)
            assert r2.messages == []

    run(body)


def _snapshot_message(index: int) -> Message:
    return Message(
        type=MessageType.SNAP,
        to=2,
        from_=1,
        term=6,
        snapshot=Snapshot(SnapshotMetadata(index=index, term=6, conf_state=ConfState(voters=(1, 2, 3)))),
    )


def test_a_5_mib_snapshot_goes_in_chunks_while_heartbeats_flow() -> None:
    async def body() -> None:
        # 2 MiB messages at most: the 5 MiB snapshot can only arrive in chunks.
        limits = dict(max_message_bytes=2 << 20, max_batch_bytes=1 << 20, snapshot_chunk_bytes=1 << 20)
        async with two_nodes(**limits) as (t1, r1, t2, r2):
            data = random.Random(7).randbytes(5 << 20)
            halfway = asyncio.Event()
            gate = asyncio.Event()

            async def pieces() -> AsyncIterator[bytes]:
                yield data[: 3 << 20]
                halfway.set()  # the first chunks are written; the stream stays open
                await gate.wait()
                yield data[3 << 20 :]

            msg = _snapshot_message(500)
            assert t1.send_snapshot(2, 9, msg, pieces())
            await asyncio.wait_for(halfway.wait(), WAIT_S)
            beats = [(gid, heartbeat(gid)) for gid in range(1, 51)]
            for gid, hb in beats:
                assert t1.send(2, gid, hb)
            await r2.wait_for(lambda: len(r2.messages) == 50, "heartbeats during the snapshot")
            assert r2.snapshots == [] and r1.snapshot_status == []
            gate.set()
            await r1.wait_for(lambda: bool(r1.snapshot_status), "the snapshot's status")
            assert r1.snapshot_status == [(2, 9, 2, True)]
            assert msg.snapshot is not None
            assert r2.snapshots == [(1, 9, dataclasses.replace(msg, snapshot=Snapshot(msg.snapshot.metadata, data)))]
            assert (t1.stats().snapshots_sent, t2.stats().snapshots_received) == (1, 1)

    run(body)


def test_a_snap_message_given_to_send_goes_as_a_snapshot() -> None:
    async def body() -> None:
        async with two_nodes() as (t1, r1, _t2, r2):
            state = Snapshot(SnapshotMetadata(index=7, term=6), b"state")
            msg = dataclasses.replace(_snapshot_message(7), snapshot=state)
            assert t1.send(2, 4, msg)
            await r1.wait_for(lambda: bool(r1.snapshot_status), "the snapshot's status")
            assert r1.snapshot_status == [(2, 4, 2, True)]
            assert r2.snapshots == [(1, 4, msg)]

    run(body)


def test_a_snapshot_to_a_dead_peer_fails() -> None:
    async def body() -> None:
        async with two_nodes() as (t1, r1, t2, _r2):
            await t2.stop()
            assert t1.send_snapshot(2, 5, _snapshot_message(9), b"x" * 1000)
            await r1.wait_for(lambda: bool(r1.snapshot_status), "the snapshot's status")
            assert r1.snapshot_status == [(2, 5, 2, False)]
            assert t1.stats().snapshots_failed == 1
            assert not t1.send_snapshot(99, 5, _snapshot_message(9), b"")  # unknown peer

    run(body)


def test_malformed_input_ends_the_stream_not_the_process() -> None:
    async def body() -> None:
        async with two_nodes() as (t1, _, t2, r2):
            async with grpc.aio.insecure_channel(t2.address) as channel:
                stub = raft_pb2_grpc.RaftTransportStub(channel)
                bad_batches = {
                    grpc.StatusCode.INVALID_ARGUMENT: pb.MessageBatch(
                        from_node=9, to_node=2, messages=[pb.GroupMessage(group_id=1, msg=pb.Message(type=pb.MSG_HUP))]
                    ),
                    grpc.StatusCode.FAILED_PRECONDITION: pb.MessageBatch(from_node=9, to_node=5),
                }
                for code, batch in bad_batches.items():
                    call = stub.Stream()
                    assert (await call.read()).node_id == 2
                    await call.write(batch)
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await call.read()
                    assert err.value.code() == code
                # Bytes that are no MessageBatch at all.
                raw = channel.stream_stream("/flotillapb.raft.RaftTransport/Stream")
                raw_call = raw()
                await raw_call.read()
                await raw_call.write(b"\xff\xff\xff")
                with pytest.raises(grpc.aio.AioRpcError):
                    await raw_call.read()
                # A snapshot stream that starts without its header.
                snap = stub.SendSnapshot()
                await snap.write(pb.SnapshotChunk(from_node=9, to_node=2, group_id=1, data=b"x", last=True))
                await snap.done_writing()
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await snap
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert r2.messages == []
            assert t1.send(2, 1, heartbeat(1))
            await r2.wait_for(lambda: len(r2.messages) == 1, "delivery after the bad streams")

    run(body)


def test_a_handler_exception_is_fail_stop() -> None:
    async def body() -> None:
        async with two_nodes() as (t1, _, t2, r2):
            r2.fail_with = RuntimeError("bug in the runtime")
            assert t1.send(2, 1, heartbeat(1))
            with pytest.raises(RuntimeError, match="bug in the runtime"):
                await asyncio.wait_for(t2.join(), WAIT_S)

    run(body)
