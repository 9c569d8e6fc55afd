"""The placement leader's report batches (placement/reports.py): reports that
arrive while one entry commits go into the next entry together, and every
caller gets its own report's result or the batch's error."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from placement.codec import decode_command, encode_command
from placement.commands import Command, ReportOutcome, ReportShard, ReportShards
from placement.reports import ReportBatcher
from placement.state import PlacementState
from tests.unit.placement.test_state import cluster


class Log:
    """A stand-in for the placement group's propose: each command is encoded,
    decoded and applied to one PlacementState in order, once `commit` lets
    it (the time a real entry takes to commit)."""

    def __init__(self, st: PlacementState) -> None:
        self.st = st
        self.proposed: list[Command] = []
        self.commit = asyncio.Event()
        self.fail: BaseException | None = None

    async def propose(self, cmd: Command) -> object:
        self.proposed.append(cmd)
        await self.commit.wait()
        if self.fail is not None:
            raise self.fail
        return self.st.apply(decode_command(encode_command(cmd))).result


async def until(pred, what: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(1000):
        if pred():
            return
        await asyncio.sleep(0)  # sleep-ok: yields to the event loop once (no time passes); bounded to 1,000 yields
    raise AssertionError(f"never: {what}")


def new_leader(st: PlacementState, sid: int, term: int) -> object:
    return dataclasses.replace(st.shards[sid], leader_node_id=2, leader_term=term)


async def test_reports_arriving_during_a_commit_share_the_next_entry() -> None:
    st = cluster(nodes=3, shards=8)
    log = Log(st)
    b = ReportBatcher(log.propose)
    first = asyncio.create_task(b.report(new_leader(st, 1, 3)))  # type: ignore[arg-type]
    await until(lambda: len(log.proposed) == 1, "the first report proposed")
    rest = [asyncio.create_task(b.report(new_leader(st, sid, 3))) for sid in range(2, 9)]  # type: ignore[arg-type]
    stale = asyncio.create_task(b.report(new_leader(st, 1, 2)))  # type: ignore[arg-type]
    await until(lambda: all(not t.done() for t in rest), "the others waiting")
    v = st.map_version
    log.commit.set()
    results = await asyncio.gather(first, *rest, stale)
    assert [type(c) for c in log.proposed] == [ReportShard, ReportShards]
    batch = log.proposed[1]
    assert isinstance(batch, ReportShards) and [s.shard_id for s in batch.shards] == [*range(2, 9), 1]
    assert st.map_version == v + 2  # one per entry, not per report
    for sid, r in zip(range(1, 9), results[:8], strict=True):
        assert r.outcome == ReportOutcome.ACCEPTED and r.current is not None and r.current.shard_id == sid
        assert st.shards[sid].leader_node_id == 2 and st.shards[sid].leader_term == 3
    assert results[8].outcome == ReportOutcome.STALE  # term 2 after term 3, in the same entry
    assert b.batches == 2


async def test_a_failed_entry_fails_each_of_its_reports_and_the_next_goes_on() -> None:
    st = cluster(nodes=3, shards=4)
    log = Log(st)
    b = ReportBatcher(log.propose)
    log.fail = TimeoutError("no commit")
    failing = [asyncio.create_task(b.report(new_leader(st, sid, 3))) for sid in (1, 2)]  # type: ignore[arg-type]
    await until(lambda: len(log.proposed) == 1, "the batch proposed")
    log.commit.set()
    for t in failing:
        with pytest.raises(TimeoutError):
            await t
    log.fail = None
    r = await b.report(new_leader(st, 3, 4))  # type: ignore[arg-type]
    assert r.outcome == ReportOutcome.ACCEPTED and st.shards[3].leader_term == 4
    assert st.shards[1].leader_term != 3  # the failed entry changed nothing here
