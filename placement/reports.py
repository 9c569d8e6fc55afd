"""The leader's shard reports, batched: the reports that arrive while one
batch is being committed go into the log together, as one ReportShards
entry (one map change, one map version), instead of one entry each. A new
cluster's 1,000 shards elect their first leaders within seconds and each
reports: one entry, one apply, one map delta to every watcher per shard
otherwise. One report alone is still a ReportShard.

Each caller gets its own report's result (as if it had proposed alone), or
the batch's error (not leader, timeout: the outcome is then unknown, as for
any proposal; stores report again)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from placement.commands import Command, ReportResult, ReportShard, ReportShards
from placement.model import Shard

MAX_BATCH = 256
"""Reports in one entry at most (about 200 bytes each in the log)."""


class ReportBatcher:
    def __init__(self, propose: Callable[[Command], Awaitable[object]]) -> None:
        self._propose = propose
        self._pending: list[tuple[Shard, asyncio.Future[ReportResult]]] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        """Entries proposed (for tests and metrics)."""

    async def report(self, shard: Shard) -> ReportResult:
        fut: asyncio.Future[ReportResult] = asyncio.get_running_loop().create_future()
        self._pending.append((shard, fut))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="placement-report-batches")
        return await fut

    async def _run(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            batch = [(s, f) for s, f in batch if not f.done()]  # callers gone (cancelled RPCs)
            if not batch:
                continue
            self.batches += 1
            try:
                if len(batch) == 1:
                    results: tuple[object, ...] = (await self._propose(ReportShard(batch[0][0])),)
                else:
                    out = await self._propose(ReportShards(tuple(s for s, _ in batch)))
                    assert isinstance(out, tuple) and len(out) == len(batch)
                    results = out
            except Exception as exc:  # noqa: BLE001 - every caller of the batch gets the proposal's error
                for _, f in batch:
                    if not f.done():
                        f.set_exception(exc)
                continue
            for (_, f), r in zip(batch, results, strict=True):
                assert isinstance(r, ReportResult)
                if not f.done():
                    f.set_result(r)
