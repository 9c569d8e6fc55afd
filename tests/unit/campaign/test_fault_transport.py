"""raft/transport/faults.py: the rule file a nemesis writes (drop, delay with
jitter, clock offset) is applied to what a process sends, re-read when it
changes, and keeps the order of messages to a peer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from raft.core.types import Message, MessageType
from raft.runtime.clock import FakeClock
from raft.transport import LocalNetwork
from raft.transport.faults import FaultRules, FaultyTransport, OffsetClock, Rules, wrap_from_env, write_rules

TIMEOUT_S = 20.0


class Clock:
    """A monotonic reading the test moves (the rules' re-read interval)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.received: list[tuple[int, int, Message]] = []
        self.changed = asyncio.Event()

    def on_messages(self, from_node: int, messages: list[tuple[int, Message]]) -> None:
        self.received.extend((from_node, g, m) for g, m in messages)
        self.changed.set()

    def on_snapshot(self, from_node: int, group_id: int, msg: Message) -> None:
        pass

    def on_peer_down(self, node_id: int) -> None:
        pass

    def on_unreachable(self, to_node: int, group_id: int, to: int) -> None:
        pass

    def on_snapshot_status(self, to_node: int, group_id: int, to: int, ok: bool) -> None:
        pass

    async def wait_count(self, n: int) -> None:
        while len(self.received) < n:
            self.changed.clear()
            await self.changed.wait()


def run(body: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(body(), TIMEOUT_S)

    asyncio.run(bounded())


def msg(i: int) -> Message:
    return Message(type=MessageType.HEARTBEAT, to=2, from_=1, term=1, commit=i)


def _pair(path: Path, clock: Clock) -> tuple[FaultyTransport, Recorder, Recorder, list]:
    net = LocalNetwork()
    inner1, t2, t3 = net.transport(1), net.transport(2), net.transport(3)
    t1 = FaultyTransport(inner1, FaultRules(str(path), monotonic=clock))
    r1, r2, r3 = Recorder(), Recorder(), Recorder()
    for t, r in ((t1, r1), (t2, r2), (t3, r3)):
        t.set_handler(r)
    t1.set_peer(2, t2.address)
    t1.set_peer(3, t3.address)
    return t1, r2, r3, [t1, t2, t3]


def test_drop_applies_per_peer_and_heals_on_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    clock = Clock()

    async def body() -> None:
        t1, r2, r3, ts = _pair(path, clock)
        for t in ts:
            await t.start()
        write_rules(path, Rules(drop=frozenset({2})))
        assert t1.send(2, 5, msg(1)) is False  # refused: counted as dropped
        assert t1.send(3, 5, msg(2)) is True
        await r3.wait_count(1)
        assert not t1.connected(2) and r2.received == []
        # Healed: the file changes, seen after the re-read interval, not before.
        write_rules(path, Rules())
        assert t1.send(2, 5, msg(3)) is False
        clock.now += 0.2
        assert t1.send(2, 5, msg(4)) is True
        await r2.wait_count(1)
        assert [m.commit for _, _, m in r2.received] == [4]
        assert t1.dropped == 2
        for t in ts:
            await t.stop()

    run(body)


def test_delay_holds_messages_back_in_order(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    clock = Clock()
    write_rules(path, Rules(delay_ms={2: 300}, jitter_ms=200))

    async def body() -> None:
        t1, r2, r3, ts = _pair(path, clock)
        for t in ts:
            await t.start()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i in range(20):
            assert t1.send(2, 1, msg(i))
        t1.send(3, 1, msg(100))  # no rule for node 3: straight out
        await r3.wait_count(1)
        assert r2.received == [] and loop.time() - t0 < 0.3
        await r2.wait_count(20)
        assert loop.time() - t0 >= 0.3
        assert [m.commit for _, _, m in r2.received] == list(range(20))  # jitter never reorders
        # The delay removed: a new message still leaves after the held ones.
        write_rules(path, Rules())
        clock.now += 0.2
        for i in range(20, 25):
            t1.send(2, 1, msg(i))
        await r2.wait_count(25)
        assert [m.commit for _, _, m in r2.received] == list(range(25))
        assert t1.delayed >= 20
        for t in ts:
            await t.stop()

    run(body)


def test_bad_or_missing_file_means_last_good_or_no_rules(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    clock = Clock()
    rules = FaultRules(str(path), monotonic=clock)
    assert rules.current() == Rules()
    write_rules(path, Rules(drop=frozenset({7}), clock_offset_ms=-40))
    clock.now += 1
    assert rules.current().drop == {7}
    path.write_text("{not json")
    clock.now += 1
    assert rules.current().drop == {7}
    path.unlink()
    clock.now += 1
    assert rules.current() == Rules()


def test_offset_clock_shifts_wall_only(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    clock = Clock()
    base = FakeClock(start_s=5.0, wall_start_ms=1_000_000)
    c = OffsetClock(base, offset_ms=250, rules=FaultRules(str(path), monotonic=clock))
    assert c.wall_ms() == 1_000_250 and c.monotonic() == 5.0
    write_rules(path, Rules(clock_offset_ms=-2000))
    clock.now += 1
    assert c.wall_ms() == 1_000_250 - 2000 and c.monotonic() == 5.0


def test_wrap_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import random

    net = LocalNetwork()
    inner, base = net.transport(4), FakeClock(wall_start_ms=10)
    monkeypatch.delenv("FLOTILLA_FAULTS_FILE", raising=False)
    monkeypatch.delenv("FLOTILLA_CLOCK_OFFSET_MS", raising=False)
    assert wrap_from_env(inner, base, node_id=4, rng=random.Random(1)) == (inner, base)
    monkeypatch.setenv("FLOTILLA_CLOCK_OFFSET_MS", "-5")
    t, c = wrap_from_env(inner, base, node_id=4, rng=random.Random(1))
    assert t is inner and c.wall_ms() == 5
    monkeypatch.setenv("FLOTILLA_FAULTS_FILE", str(tmp_path / "f-{node_id}.json"))
    (tmp_path / "f-4.json").write_text(json.dumps({"drop": [9]}))
    t, c = wrap_from_env(inner, base, node_id=4, rng=random.Random(1))
    assert isinstance(t, FaultyTransport) and t.address == inner.address
    assert t.send(9, 1, msg(1)) is False
