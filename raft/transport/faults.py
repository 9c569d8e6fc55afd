"""Fault injection in a server process: network faults on the outgoing side
of its Raft transport, and an offset on its wall clock (issue #8).

A process given FLOTILLA_FAULTS_FILE=<path> wraps its transport in
``FaultyTransport`` and its clock in ``OffsetClock``; both read the same
small JSON rule file, re-read at most every ``REFRESH_S`` when its mtime
changes (a harness writes it atomically: tmp file + rename):

    {"drop": [12, 13],              # messages to these node ids are dropped
     "delay_ms": {"11": 800},       # messages to node 11 leave 800 ms late...
     "jitter_ms": 200,              # ...plus uniform(0, 200) ms
     "clock_offset_ms": -1500}      # added to wall_ms() (monotonic unaffected)

A missing file, or an empty object, means no faults. Rules apply to what
this process sends; a partition between A and B is a drop rule in both
files, a one-way drop a rule in one. Delays keep the order of messages to
a peer (a message never leaves before one sent earlier to the same peer),
as the Transport contract promises. Snapshots are dropped (refused:
``send_snapshot`` returns False, as for a peer with too many in flight) but
never delayed. FLOTILLA_CLOCK_OFFSET_MS adds a fixed offset read once at
process start, on top of the file's.

This is test machinery in the runtime's layer: it reads clocks and files,
so it stays out of raft/core.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raft.core.types import Message
from raft.transport.base import SnapshotData, Transport, TransportHandler, TransportStats

__all__ = ["FaultRules", "FaultyTransport", "OffsetClock", "Rules", "write_rules", "wrap_from_env"]

log = logging.getLogger(__name__)

REFRESH_S = 0.1
FAULTS_ENV = "FLOTILLA_FAULTS_FILE"
CLOCK_OFFSET_ENV = "FLOTILLA_CLOCK_OFFSET_MS"


@dataclass(frozen=True, slots=True)
class Rules:
    drop: frozenset[int] = frozenset()
    delay_ms: dict[int, int] = field(default_factory=dict)
    jitter_ms: int = 0
    clock_offset_ms: int = 0

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Rules:
        return cls(
            drop=frozenset(int(n) for n in obj.get("drop", ())),
            delay_ms={int(k): int(v) for k, v in (obj.get("delay_ms") or {}).items()},
            jitter_ms=int(obj.get("jitter_ms", 0)),
            clock_offset_ms=int(obj.get("clock_offset_ms", 0)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "drop": sorted(self.drop),
            "delay_ms": {str(k): v for k, v in sorted(self.delay_ms.items())},
            "jitter_ms": self.jitter_ms,
            "clock_offset_ms": self.clock_offset_ms,
        }


def write_rules(path: str | os.PathLike[str], rules: Rules) -> None:
    """Replace the rule file atomically (a reader sees the old or the new one)."""
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "w") as f:
        json.dump(rules.to_json(), f)
    os.replace(tmp, path)


class FaultRules:
    """The rules of one file, re-read when its mtime changes, checked at most
    every REFRESH_S (callers are on hot paths: send, wall_ms)."""

    def __init__(self, path: str, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._monotonic = monotonic
        self._next_check = float("-inf")
        self._mtime_ns: int | None = None
        self._rules = Rules()

    def current(self) -> Rules:
        now = self._monotonic()
        if now >= self._next_check:
            self._next_check = now + REFRESH_S
            self._reload()
        return self._rules

    def _reload(self) -> None:
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            if self._mtime_ns is not None:
                log.warning("faults file %s removed: no faults", self.path)
            self._mtime_ns, self._rules = None, Rules()
            return
        if mtime == self._mtime_ns:
            return
        try:
            with open(self.path) as f:
                rules = Rules.from_json(json.load(f) or {})
        except (OSError, ValueError, TypeError) as exc:  # keep the last good rules
            log.warning("faults file %s unreadable (%r): rules unchanged", self.path, exc)
            return
        self._mtime_ns = mtime
        if rules != self._rules:
            log.warning("faults now %s", json.dumps(rules.to_json()))
        self._rules = rules


class FaultyTransport:
    """A Transport that applies FaultRules to what it sends, then hands the
    rest to the wrapped transport (which does everything else)."""

    def __init__(self, inner: Transport, rules: FaultRules, *, rng: random.Random | None = None) -> None:
        self._inner = inner
        self._rules = rules
        self._rng = rng or random.Random()
        self._not_before: dict[int, float] = {}  # peer -> loop time its last delayed message leaves
        self._held: dict[int, deque[tuple[int, Message]]] = {}  # peer -> messages held back, oldest first
        self.dropped = 0
        self.delayed = 0

    # -- faults -----------------------------------------------------------------------------
    def send(self, to_node: int, group_id: int, msg: Message) -> bool:
        rules = self._rules.current()
        if to_node in rules.drop:
            self.dropped += 1
            return False
        base_ms = rules.delay_ms.get(to_node, 0)
        if base_ms <= 0:
            if to_node in self._not_before:
                return self._send_delayed(to_node, group_id, msg, 0.0)  # after what is still held back
            return self._inner.send(to_node, group_id, msg)
        delay_s = (base_ms + self._rng.uniform(0, rules.jitter_ms)) / 1000
        return self._send_delayed(to_node, group_id, msg, delay_s)

    def _send_delayed(self, to_node: int, group_id: int, msg: Message, delay_s: float) -> bool:
        """Hold msg back delay_s, and past every message held for to_node.
        Each timer releases the oldest held message (timers due at the same
        instant fire in no fixed order), so the order to a peer is kept."""
        loop = asyncio.get_running_loop()
        at = max(loop.time() + delay_s, self._not_before.get(to_node, 0.0))
        self._not_before[to_node] = at
        self._held.setdefault(to_node, deque()).append((group_id, msg))
        self.delayed += 1
        loop.call_at(at, self._release, to_node)
        return True

    def _release(self, to_node: int) -> None:
        held = self._held[to_node]
        group_id, msg = held.popleft()
        if not held:
            del self._held[to_node]
            del self._not_before[to_node]  # nothing held: later sends go straight out
        self._inner.send(to_node, group_id, msg)

    def send_snapshot(self, to_node: int, group_id: int, msg: Message, data: SnapshotData | None = None) -> bool:
        if to_node in self._rules.current().drop:
            self.dropped += 1
            return False
        return self._inner.send_snapshot(to_node, group_id, msg, data)

    # -- the rest is the wrapped transport's ----------------------------------------------
    @property
    def node_id(self) -> int:
        return self._inner.node_id

    @property
    def address(self) -> str:
        return self._inner.address

    def set_handler(self, handler: TransportHandler) -> None:
        self._inner.set_handler(handler)

    def set_peer(self, node_id: int, address: str) -> None:
        self._inner.set_peer(node_id, address)

    def remove_peer(self, node_id: int) -> None:
        self._inner.remove_peer(node_id)

    def stats(self) -> TransportStats:
        return self._inner.stats()

    def connected(self, node_id: int) -> bool:
        return node_id not in self._rules.current().drop and self._inner.connected(node_id)

    async def start(self) -> None:
        await self._inner.start()

    async def stop(self) -> None:
        await self._inner.stop()

    async def join(self) -> None:
        await self._inner.join()

    def __getattr__(self, name: str) -> Any:
        """Anything else (e.g. GrpcTransport.add_to_server) is the inner one's."""
        return getattr(self._inner, name)


class OffsetClock:
    """A Clock whose wall_ms() is shifted by a fixed offset plus the rule
    file's clock_offset_ms; monotonic() and sleep() are the wrapped clock's
    (timeouts and ticks are not skewed, only HLC stamps, closed timestamps
    and lease times)."""

    def __init__(self, inner: Any, *, offset_ms: int = 0, rules: FaultRules | None = None) -> None:
        self._inner = inner
        self.offset_ms = offset_ms
        self._rules = rules

    def monotonic(self) -> float:
        return float(self._inner.monotonic())

    def wall_ms(self) -> int:
        extra = self._rules.current().clock_offset_ms if self._rules is not None else 0
        return int(self._inner.wall_ms()) + self.offset_ms + extra

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def wrap_from_env(transport: Transport, clock: Any, *, node_id: int, rng: random.Random) -> tuple[Any, Any]:
    """(transport, clock) of a server process, wrapped as its environment
    says: FLOTILLA_FAULTS_FILE (may hold "{node_id}"), FLOTILLA_CLOCK_OFFSET_MS.
    Unchanged when neither is set."""
    path = os.environ.get(FAULTS_ENV, "")
    offset_ms = int(os.environ.get(CLOCK_OFFSET_ENV, "0") or 0)
    rules = FaultRules(path.replace("{node_id}", str(node_id))) if path else None
    if rules is not None:
        log.warning("node=%d fault injection on: rules from %s", node_id, rules.path)
        transport = FaultyTransport(transport, rules, rng=rng)  # type: ignore[assignment]
    if rules is not None or offset_ms:
        log.warning("node=%d wall clock offset %+d ms (and the faults file's)", node_id, offset_ms)
        clock = OffsetClock(clock, offset_ms=offset_ms, rules=rules)
    return transport, clock
