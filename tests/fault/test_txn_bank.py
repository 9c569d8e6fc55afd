"""Bank transfers by txns across shards, with the coordinating router killed
at each of its crash points (FLOTILLA_CRASH_AT: txn_after_prepare,
txn_after_decide, txn_during_commit) and a participant store killed with
SIGKILL mid-load: the total, read at one revision, never changes; every
acknowledged transfer is in both of its accounts and every transfer is in
both or in neither; and a key a dead coordinator left locked takes a write
again within a bounded time (printed: the note reports it)."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from flotilla.cluster import Cluster
from flotilla.procs import flotilla_argv, wait_until
from flotilla.router_main import RouterProcess
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc
from shard import slots

pytestmark = [pytest.mark.fault, pytest.mark.integration]

SHARDS = 4
ACCOUNTS = 8
START = 100
PREFIX = b"bank/"


def start_router(r: RouterProcess, env: dict[str, str] | None = None) -> None:
    assert r.ready_file is not None
    argv = ["--listen", "127.0.0.1:0", "--ready-file", str(r.ready_file), *r.args]
    r.spawn(flotilla_argv(*argv, module="flotilla.router_main", verbose=False), cwd=r.tmp, env=env)
    r.await_ready(timeout=60, what="router ready")


@dataclass
class Bank:
    c: Cluster
    checker: RouterProcess
    worker: RouterProcess
    accounts: list[bytes] = field(default_factory=list)
    acked: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)
    _ids: int = 0
    _mu: threading.Lock = field(default_factory=threading.Lock)

    def kv(self, r: RouterProcess) -> tuple[grpc.Channel, rpc_pb2_grpc.KVStub]:
        ch = grpc.insecure_channel(r.address)
        return ch, rpc_pb2_grpc.KVStub(ch)

    def next_id(self) -> str:
        with self._mu:
            self._ids += 1
            return f"t{self._ids}"

    def transfer(self, kv: rpc_pb2_grpc.KVStub, rng: random.Random) -> None:
        """One transfer as etcd's STM does it: read both accounts, then a txn
        guarded by their mod revisions that writes both."""
        a, b = rng.sample(self.accounts, 2)
        tid = self.next_id()
        for _ in range(50):
            got = [kv.Range(epb.RangeRequest(key=k), timeout=10).kvs[0] for k in (a, b)]
            va, vb = (json.loads(x.value) for x in got)
            amount = rng.randint(1, 10)
            va["bal"] -= amount
            vb["bal"] += amount
            va["tx"].append(tid)
            vb["tx"].append(tid)
            req = epb.TxnRequest(
                compare=[
                    epb.Compare(key=x.key, target=epb.Compare.MOD, result=epb.Compare.EQUAL, mod_revision=x.mod_revision) for x in got
                ],
                success=[
                    epb.RequestOp(request_put=epb.PutRequest(key=a, value=json.dumps(va).encode())),
                    epb.RequestOp(request_put=epb.PutRequest(key=b, value=json.dumps(vb).encode())),
                ],
            )
            try:
                resp = kv.Txn(req, timeout=10)
            except grpc.RpcError:
                with self._mu:
                    self.unknown.add(tid)  # applied or not: the check allows either, atomically
                raise
            if resp.succeeded:
                with self._mu:
                    self.acked.add(tid)
                return

    def check(self, kv: rpc_pb2_grpc.KVStub) -> tuple[int, dict[str, int]]:
        """Read every account at one revision; returns (revision, transfer id -> accounts it is in)."""
        resp = kv.Range(epb.RangeRequest(key=PREFIX, range_end=PREFIX[:-1] + bytes([PREFIX[-1] + 1])), timeout=30)
        assert len(resp.kvs) == ACCOUNTS
        values = [json.loads(x.value) for x in resp.kvs]
        assert sum(v["bal"] for v in values) == ACCOUNTS * START, "the total changed"
        seen: dict[str, int] = {}
        for v in values:
            for t in v["tx"]:
                seen[t] = seen.get(t, 0) + 1
        # every transfer is in both of its accounts, or in neither
        assert all(n == 2 for n in seen.values()), {t: n for t, n in seen.items() if n != 2}
        missing = self.acked - set(seen)
        assert not missing, f"acknowledged transfers lost: {sorted(missing)}"
        assert set(seen) <= self.acked | self.unknown
        return resp.header.revision, seen


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bank]:
    tmp: Path = tmp_path_factory.mktemp("bank")
    c = Cluster(tmp, initial_shards=SHARDS)
    routers: list[RouterProcess] = []
    try:
        c.start()
        c.wait_bootstrapped()
        paddr = ",".join(c.placement.nodes[n].address for n in c.placement_ids)
        for name in ("checker", "worker"):
            (tmp / name).mkdir()
            r = RouterProcess(tmp / name, ["--placement", paddr], name=name)
            routers.append(r)
        start_router(routers[0])
        b = Bank(c, routers[0], routers[1])
        m = c.get_map()

        def shard_of(key: bytes) -> int:
            slot = slots.slot_of(key, m.slot_count)
            return next(s.descriptor.shard_id for s in m.shards if any(r.start <= slot < r.end for r in s.descriptor.slots))

        per_shard: dict[int, list[bytes]] = {}
        for i in range(10_000):
            k = PREFIX + f"acct{i}".encode()
            per_shard.setdefault(shard_of(k), [])
            if len(per_shard[shard_of(k)]) < ACCOUNTS // SHARDS:
                per_shard[shard_of(k)].append(k)
            if sum(len(v) for v in per_shard.values()) == ACCOUNTS:
                break
        b.accounts = sorted(k for v in per_shard.values() for k in v)
        assert len({shard_of(k) for k in b.accounts}) == SHARDS
        ch, kv = b.kv(b.checker)
        for k in b.accounts:
            kv.Put(epb.PutRequest(key=k, value=json.dumps({"bal": START, "tx": []}).encode()), timeout=30)
        ch.close()
        yield b
    except BaseException:
        print(c.logs())
        for r in routers:
            print(r.log_tail(80))
        raise
    finally:
        for r in routers:
            r.stop()
        c.stop()


def run_clients(bank: Bank, router: RouterProcess, n: int, per_client: int, seed: int) -> list[BaseException]:
    """n clients doing up to per_client transfers each through router, until
    it dies or they are done; what they raised besides the router's death."""
    errors: list[BaseException] = []

    def client(i: int) -> None:
        ch, kv = bank.kv(router)
        rng = random.Random(seed * 100 + i)
        try:
            for _ in range(per_client):
                try:
                    bank.transfer(kv, rng)
                except grpc.RpcError as exc:
                    if not router.alive:
                        return  # the coordinator died mid-transfer: its outcome is unknown
                    if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                        errors.append(exc)
                        return
        finally:
            ch.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    return errors


def blocked_for(bank: Bank) -> float:
    """Through the checker router: the longest time a write to an account took
    right after the worker died (a lock it left behind is resolved first)."""
    ch, kv = bank.kv(bank.checker)
    worst = 0.0
    try:
        for k in bank.accounts:
            t0 = time.monotonic()
            got = kv.Range(epb.RangeRequest(key=k), timeout=30).kvs[0]
            kv.Txn(
                epb.TxnRequest(
                    compare=[epb.Compare(key=k, target=epb.Compare.MOD, result=epb.Compare.EQUAL, mod_revision=got.mod_revision)],
                    success=[epb.RequestOp(request_put=epb.PutRequest(key=k, value=got.value))],
                ),
                timeout=30,
            )
            worst = max(worst, time.monotonic() - t0)
    finally:
        ch.close()
    return worst


@pytest.mark.parametrize("point", ["txn_after_prepare", "txn_after_decide", "txn_during_commit"])
def test_a_coordinator_killed_at_a_crash_point_leaves_every_transfer_whole(bank: Bank, point: str) -> None:
    before = len(bank.acked)
    start_router(bank.worker, env={"FLOTILLA_CRASH_AT": f"{point}:6"})
    errors = run_clients(bank, bank.worker, n=3, per_client=15, seed=hash(point) % 1000)
    assert not errors, errors
    wait_until(lambda: not bank.worker.alive, timeout=60, what=f"the router to exit at {point}")
    assert "FLOTILLA_CRASH_AT: exiting at " + point in bank.worker.log_tail(400)
    assert len(bank.acked) > before, "no transfer was acknowledged before the crash"
    waited = blocked_for(bank)
    print(f"{point}: a key the dead coordinator left locked took a write after {waited:.2f} s at most")
    assert waited < 15
    ch, kv = bank.kv(bank.checker)
    try:
        bank.check(kv)
    finally:
        ch.close()


def test_a_participant_store_killed_mid_load_loses_no_transfer(bank: Bank) -> None:
    start_router(bank.worker)
    c = bank.c
    done = threading.Event()
    errors: list[BaseException] = []

    def load() -> None:
        try:
            errors.extend(run_clients(bank, bank.worker, n=3, per_client=15, seed=7))
        finally:
            done.set()

    t = threading.Thread(target=load)
    t.start()
    before = len(bank.acked)
    wait_until(lambda: len(bank.acked) >= before + 5 or done.is_set(), timeout=120, what="transfers under way")
    leaders = c.get_map().shards
    counts: dict[int, int] = {}
    for s in leaders:
        counts[s.descriptor.leader_node_id] = counts.get(s.descriptor.leader_node_id, 0) + 1
    victim = max((n for n in counts if n), key=lambda n: counts[n])
    c.stores.kill(victim)
    wait_until(lambda: len(bank.acked) >= before + 15 or done.is_set(), timeout=120, what="transfers after the kill")
    c.stores.restart(victim)
    t.join(timeout=240)
    assert not errors, errors
    ch, kv = bank.kv(bank.checker)
    try:
        bank.check(kv)
    finally:
        ch.close()
    bank.worker.stop()
