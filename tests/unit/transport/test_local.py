"""LocalTransport / LocalNetwork: the in-memory twin keeps GrpcTransport's contract."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from raft.core.types import Entry, Message, MessageType, Snapshot, SnapshotMetadata
from raft.transport import LocalNetwork, LocalTransport, Transport

TIMEOUT_S = 10.0


def run(body: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(body(), TIMEOUT_S)

    asyncio.run(bounded())


class Recorder:
    def __init__(self) -> None:
        self.batches: list[tuple[int, list[tuple[int, Message]]]] = []
        self.snapshots: list[tuple[int, int, Message]] = []
        self.unreachable: list[tuple[int, int, int]] = []
        self.snapshot_status: list[tuple[int, int, int, bool]] = []
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

    def on_peer_down(self, node_id: int) -> None:
        pass

    def on_unreachable(self, to_node: int, group_id: int, to: int) -> None:
        self.unreachable.append((to_node, group_id, to))
        self._changed.set()

    def on_snapshot_status(self, to_node: int, group_id: int, to: int, ok: bool) -> None:
        self.snapshot_status.append((to_node, group_id, to, ok))
        self._changed.set()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            self._changed.clear()
            await self._changed.wait()


def hb(group_id: int) -> Message:
    return Message(type=MessageType.HEARTBEAT, to=2, from_=1, term=2, commit=group_id)


def app(index: int) -> Message:
    return Message(type=MessageType.APP, to=2, from_=1, term=2, index=index - 1, entries=(Entry(2, index, data=b"v"),))


@asynccontextmanager
async def two_nodes(
    **kwargs: int,
) -> AsyncIterator[tuple[LocalNetwork, LocalTransport, Recorder, LocalTransport, Recorder]]:
    net = LocalNetwork()
    t1, t2 = net.transport(1, **kwargs), net.transport(2, **kwargs)
    r1, r2 = Recorder(), Recorder()
    t1.set_handler(r1)
    t2.set_handler(r2)
    t1.set_peer(2, t2.address)
    t2.set_peer(1, t1.address)
    await t1.start()
    await t2.start()
    try:
        yield net, t1, r1, t2, r2
    finally:
        await t1.stop()
        await t2.stop()


def test_implements_the_transport_protocol() -> None:
    assert isinstance(LocalNetwork().transport(1), Transport)


def test_delivers_in_order_in_batches() -> None:
    async def body() -> None:
        async with two_nodes() as (_, t1, _r1, t2, r2):
            sent = [(g % 3, app(i + 1)) for i, g in enumerate(range(50))] + [(g, hb(g)) for g in range(10)]
            for item in sent:
                assert t1.send(2, *item)
            await r2.wait_for(lambda: len(r2.messages) == len(sent))
            assert r2.messages == sent
            assert r2.batches[0][0] == 1
            assert len(r2.batches) == 1  # queued in one go: drained in one batch
            assert (t1.stats().sent, t1.stats().batches, t2.stats().received) == (60, 1, 60)
            assert t1.connected(2)

    run(body)


def test_a_full_queue_drops_and_counts() -> None:
    async def body() -> None:
        async with two_nodes(queue_size=4) as (_, t1, _r1, _t2, r2):
            assert [t1.send(2, 1, app(i + 1)) for i in range(6)] == [True] * 4 + [False] * 2
            assert not t1.send(7, 1, app(1))  # unknown peer
            assert t1.stats().dropped == 3
            await r2.wait_for(lambda: len(r2.messages) == 4)

    run(body)


def test_cut_links_report_unreachable_and_heal() -> None:
    async def body() -> None:
        async with two_nodes() as (net, t1, r1, _t2, r2):
            net.cut(1, 2)
            assert not t1.connected(2)
            for item in [(5, hb(5)), (5, app(1)), (6, hb(6))]:
                assert t1.send(2, *item)  # taken: lost later, and reported
            await r1.wait_for(lambda: len(r1.unreachable) == 2)
            assert r1.unreachable == [(2, 5, 2), (2, 6, 2)]  # once per (group, peer) per batch
            assert t1.stats().dropped == 3
            net.heal()
            assert t1.send(2, 5, hb(5))
            await r2.wait_for(lambda: len(r2.messages) == 1)
            assert t1.stats().reconnects == 0  # never delivered before the cut
            net.isolate(2)
            assert t1.send(2, 5, hb(5))
            await r1.wait_for(lambda: len(r1.unreachable) == 3)
            net.heal()
            assert t1.send(2, 5, hb(5))
            await r2.wait_for(lambda: len(r2.messages) == 2)
            assert t1.stats().reconnects == 1

    run(body)


def test_one_way_cut() -> None:
    async def body() -> None:
        async with two_nodes() as (net, t1, r1, t2, r2):
            net.cut(1, 2, one_way=True)
            assert t1.send(2, 1, hb(1))
            assert t2.send(1, 1, dataclasses.replace(hb(1), type=MessageType.HEARTBEAT_RESP, to=1, from_=2))
            await r1.wait_for(lambda: bool(r1.unreachable) and bool(r1.messages))
            assert r2.messages == []

    run(body)


def test_a_restarted_peer_has_a_new_address() -> None:
    async def body() -> None:
        async with two_nodes() as (net, t1, r1, t2, _r2):
            await t2.stop()
            assert t1.send(2, 1, hb(1))
            await r1.wait_for(lambda: r1.unreachable == [(2, 1, 2)])
            t2b = net.transport(2)
            r2b = Recorder()
            t2b.set_handler(r2b)
            await t2b.start()
            try:
                assert t2b.address != t2.address
                assert t1.send(2, 1, hb(1))  # still the old address: lost
                await r1.wait_for(lambda: len(r1.unreachable) == 2)
                t1.set_peer(2, t2b.address)
                assert t1.send(2, 1, hb(1))
                await r2b.wait_for(lambda: len(r2b.messages) == 1)
            finally:
                await t2b.stop()

    run(body)


def test_snapshots() -> None:
    async def body() -> None:
        async with two_nodes() as (net, t1, r1, _t2, r2):
            meta = SnapshotMetadata(index=10, term=2)
            msg = Message(type=MessageType.SNAP, to=2, from_=1, term=2, snapshot=Snapshot(meta))

            async def pieces() -> AsyncIterator[bytes]:
                yield b"ab"
                yield b"cd"

            assert t1.send_snapshot(2, 3, msg, pieces())
            await r1.wait_for(lambda: len(r1.snapshot_status) == 1)
            assert r1.snapshot_status == [(2, 3, 2, True)]
            assert r2.snapshots == [(1, 3, dataclasses.replace(msg, snapshot=Snapshot(meta, b"abcd")))]
            full = dataclasses.replace(msg, snapshot=Snapshot(meta, b"xyz"))
            assert t1.send(2, 4, full)  # MSG_SNAP through send() goes as a snapshot
            await r1.wait_for(lambda: len(r1.snapshot_status) == 2)
            assert r2.snapshots[-1] == (1, 4, full)
            net.cut(1, 2)
            assert t1.send_snapshot(2, 3, msg, [b"ef"])
            await r1.wait_for(lambda: len(r1.snapshot_status) == 3)
            assert r1.snapshot_status[-1] == (2, 3, 2, False)
            assert (t1.stats().snapshots_sent, t1.stats().snapshots_failed) == (2, 1)

    run(body)


def test_snapshots_in_flight_are_bounded() -> None:
    async def body() -> None:
        async with two_nodes(max_snapshots_in_flight=1) as (_, t1, r1, _t2, _r2):
            gate = asyncio.Event()

            async def slow() -> AsyncIterator[bytes]:
                await gate.wait()
                yield b"x"

            msg = Message(type=MessageType.SNAP, to=2, from_=1, snapshot=Snapshot(SnapshotMetadata(index=1, term=1)))
            assert t1.send_snapshot(2, 1, msg, slow())
            assert not t1.send_snapshot(2, 2, msg, b"y")
            gate.set()
            await r1.wait_for(lambda: len(r1.snapshot_status) == 1)
            assert t1.send_snapshot(2, 2, msg, b"y")

    run(body)


def test_messages_that_must_never_be_sent_are_bugs() -> None:
    t = LocalNetwork().transport(1)
    t.set_peer(2, "local:2#9")
    with pytest.raises(ValueError):
        t.send(2, 1, Message(type=MessageType.HUP))
    with pytest.raises(ValueError):
        t.send(2, 1, Message(type=MessageType.APP, snapshot=Snapshot(SnapshotMetadata(index=1), b"data")))


def test_a_handler_exception_is_fail_stop() -> None:
    async def body() -> None:
        async with two_nodes() as (_, t1, _r1, t2, r2):
            r2.fail_with = RuntimeError("bug")
            assert t1.send(2, 1, hb(1))
            with pytest.raises(RuntimeError, match="bug"):
                await t2.join()
            assert not t2.send(1, 1, hb(1))  # a failed transport sends nothing more

    run(body)


def test_join_returns_after_stop() -> None:
    async def body() -> None:
        async with two_nodes() as (_, t1, _r1, _t2, _r2):
            joiner = asyncio.ensure_future(t1.join())
            await t1.stop()
            await joiner
            assert not t1.send(2, 1, hb(1))

    run(body)
