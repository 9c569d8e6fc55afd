"""The HLC floor (shard/node/closedts.py): a node vouches for a timestamp
(publishes a side-channel round at it, or acknowledges a peer's) only once a
floor at or above it is stored, so its HLC is above that timestamp after a
restart too. The floor is written in a worker thread, off the event loop:
while a write is slow, rounds stop at the stored floor and the loop goes on
serving; once it is stored, rounds go on above it."""

from __future__ import annotations

import threading
from pathlib import Path

from shard.node.closedts import HLC_FLOOR_KEY, _persist
from tests.unit.runtime.loopwait import settle
from tests.unit.runtime.storenodes import NODES, TICK, Nodes

TICKS_PAST_FLOOR = 40
"""4 s of virtual time: past FLOOR_AHEAD_MS (2 s) above any floor stored before."""


async def test_rounds_wait_for_the_floor_and_the_loop_does_not(tmp_path: Path) -> None:
    c = Nodes(tmp_path)
    for n in NODES:
        await c.start(n, fresh=True)
    gate = threading.Event()
    try:
        await c.until(lambda: c.leader(1) and c.leader(2), what="leaders")
        closed = {n: c.nodes[n]._closed for n in NODES}  # noqa: SLF001 - the node's side channel
        await c.until(lambda: all(ct.publisher.round > 0 for ct in closed.values()), what="rounds published")

        blocked: set[int] = set()

        def slow(engine: object, value: int) -> None:
            blocked.add(id(engine))
            gate.wait(60)
            _persist(engine, value)

        for ct in closed.values():
            ct.persist_floor = slow

        await c.until(lambda: len(blocked) == len(NODES), what="every node writing a floor (blocked)")
        stored = {n: ct._floor for n, ct in closed.items()}  # noqa: SLF001 - what is stored now, and stays
        before = {n: ct.publisher.ts for n, ct in closed.items()}
        for _ in range(TICKS_PAST_FLOOR):
            c.clock.advance(TICK)
            await settle(c.stores.values())  # the loop runs on meanwhile: rounds, ticks, transport
        assert all(ct._raising is not None for ct in closed.values()), "a higher floor is being written"  # noqa: SLF001
        for n, ct in closed.items():
            assert ct._floor == stored[n]  # noqa: SLF001 - not stored yet
            assert before[n] <= ct.publisher.ts <= stored[n], "no round above the stored floor"
            assert int.from_bytes(c.dbs[n].get(HLC_FLOOR_KEY), "big") == stored[n]

        gate.set()
        await c.until(lambda: all(ct.publisher.ts > stored[n] for n, ct in closed.items()), what="rounds above the old floor")
        for n, ct in closed.items():
            on_disk = int.from_bytes(c.dbs[n].get(HLC_FLOOR_KEY), "big")
            assert ct.publisher.ts <= on_disk, "every round is at or below the floor on disk"
    finally:
        gate.set()
        await c.stop_all()
