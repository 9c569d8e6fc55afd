"""StoreNode.changes: what the agent's report loop waits on instead of
looking every 200 ms (shard/agent/reports.py). It returns once a shard
changed since the last take_changed (here: a put applied), and an idle node
gives it nothing to return for."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.unit.runtime.loopwait import settle
from tests.unit.runtime.storenodes import NODES, Nodes, key_in


async def test_changes_returns_when_a_shard_changes(tmp_path: Path) -> None:
    c = Nodes(tmp_path)
    for n in NODES:
        await c.start(n, fresh=True)
    try:
        lead = await c.until(lambda: c.leader(1), what="a leader of shard 1")
        node = c.nodes[lead]
        key = key_in(((0, 8),), 0)
        await c.put(key, b"v0")
        await settle(c.stores.values())
        node.take_changed()

        waiter = asyncio.create_task(node.changes(timeout_s=600))
        await settle(c.stores.values())
        assert not waiter.done(), "nothing changed since take_changed: it waits"
        await c.put(key, b"v1")
        await asyncio.wait_for(waiter, timeout=30)  # long before its own 600 s
        assert 1 in node.take_changed()

        # Changed before the call: it returns at once.
        await c.put(key, b"v2")
        await asyncio.wait_for(node.changes(timeout_s=600), timeout=30)
        assert 1 in node.take_changed()
    finally:
        await c.stop_all()
