"""The client of tests/integration/test_netns_cluster.py, run on its own host
(`ip netns exec NS python -m tests.integration.netns_client ...`): etcd
clients against a router, recording a campaign History
(flotilla/campaign/history.py) for the campaign's checkers.

Concurrent clients put unique values, read linearizably and read with a
staleness bound (gRPC metadata `max-staleness-ms`) on a few keys. Every
half second the progress goes to --status (JSON: ops, acknowledged puts,
answered reads, errors by code). The run ends when --stop-file exists (or
after --max-seconds); then every key is read linearizably once more (the
final reads, retried until answered or --final-timeout passes) and the
history is written to --out.

    python -m tests.integration.netns_client --endpoint 10.77.0.4:2379 --prefix p/ \\
        --status st.json --stop-file stop --out history.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path

import grpc
import grpc.aio

from flotilla.campaign.history import History, OpKind, Outcome
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc as eg

BOUNDS_MS = (200, 500, 1000)


class Client:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.history = History()
        self.keys = [f"{args.prefix}k{i}".encode() for i in range(args.keys)]
        self.errors: dict[str, int] = {}
        self.seq = 0
        self.stop = asyncio.Event()

    def now(self) -> float:
        return time.monotonic()

    def acked_puts(self) -> int:
        return sum(1 for o in self.history.ops if o.kind is OpKind.PUT and o.outcome is Outcome.OK)

    def reads(self, kind: OpKind) -> int:
        return sum(1 for o in self.history.ops if o.kind is kind and o.outcome is Outcome.OK)

    def status(self) -> dict[str, object]:
        return {
            "ops": len(self.history.ops),
            "acked_puts": self.acked_puts(),
            "gets": self.reads(OpKind.GET),
            "stale_gets": self.reads(OpKind.STALE_GET),
            "errors": dict(self.errors),
            "done": False,
        }

    def write_status(self, **extra: object) -> None:
        path = Path(self.args.status)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**self.status(), **extra}))
        tmp.replace(path)

    async def client(self, cid: int, kv: eg.KVStub) -> None:
        rng = random.Random(self.args.seed * 1000 + cid)
        h, to = self.history, self.args.op_timeout
        while not self.stop.is_set():
            key = rng.choice(self.keys)
            r = rng.random()
            wall = int(time.time() * 1000)
            try:
                if r < 0.4:
                    self.seq += 1
                    v = f"{self.args.prefix}c{cid}-{self.seq}".encode()
                    op = h.invoke(cid, OpKind.PUT, key, self.now(), wall, value=v)
                    resp = await kv.Put(epb.PutRequest(key=key, value=v), timeout=to)
                    h.complete(op, self.now(), Outcome.OK, revision=resp.header.revision)
                elif r < 0.7:
                    op = h.invoke(cid, OpKind.GET, key, self.now(), wall)
                    resp = await kv.Range(epb.RangeRequest(key=key), timeout=to)
                    val, rev = (resp.kvs[0].value, resp.kvs[0].mod_revision) if resp.kvs else (None, 0)
                    h.complete(op, self.now(), Outcome.OK, output=val, revision=rev)
                else:
                    bound = rng.choice(BOUNDS_MS)
                    op = h.invoke(cid, OpKind.STALE_GET, key, self.now(), wall, bound_ms=bound)
                    resp = await kv.Range(epb.RangeRequest(key=key), timeout=to, metadata=(("max-staleness-ms", str(bound)),))
                    val, rev = (resp.kvs[0].value, resp.kvs[0].mod_revision) if resp.kvs else (None, 0)
                    h.complete(op, self.now(), Outcome.OK, output=val, revision=rev)
            except grpc.aio.AioRpcError as exc:
                h.complete(op, self.now(), Outcome.UNKNOWN, error=f"{exc.code().name}: {exc.details()}")
                self.errors[exc.code().name] = self.errors.get(exc.code().name, 0) + 1
                await asyncio.sleep(rng.uniform(0.1, 0.3))  # sleep-ok: a client's backoff after an error
                continue
            await asyncio.sleep(self.args.pause)  # sleep-ok: the client's pace between operations

    async def watch_stop(self) -> None:
        deadline = self.now() + self.args.max_seconds
        while not Path(self.args.stop_file).exists() and self.now() < deadline:
            self.write_status()
            await asyncio.sleep(0.5)  # sleep-ok: polling interval for the stop file (bounded by --max-seconds)
        self.stop.set()

    async def final_reads(self, kv: eg.KVStub) -> list[bytes]:
        """Read every key linearizably until answered; the keys never answered."""
        deadline = self.now() + self.args.final_timeout
        missing = []
        for key in self.keys:
            while True:
                try:
                    resp = await kv.Range(epb.RangeRequest(key=key), timeout=self.args.op_timeout)
                    self.history.final_reads[key] = (resp.kvs[0].value, resp.kvs[0].mod_revision) if resp.kvs else (None, 0)
                    break
                except grpc.aio.AioRpcError:
                    if self.now() > deadline:
                        missing.append(key)
                        break
                    await asyncio.sleep(0.2)  # sleep-ok: backoff between retries of a refused read
        return missing

    async def run(self) -> int:
        async with grpc.aio.insecure_channel(self.args.endpoint) as ch:
            kv = eg.KVStub(ch)
            await asyncio.gather(self.watch_stop(), *(self.client(c, kv) for c in range(self.args.clients)))
            missing = await self.final_reads(kv)
        Path(self.args.out).write_text(self.history.dump())
        self.write_status(done=True, final_missing=[k.decode() for k in missing])
        return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="netns_client", description=__doc__.splitlines()[0])
    p.add_argument("--endpoint", required=True, help="the router's host:port")
    p.add_argument("--prefix", required=True, help="key prefix of this run (keys never written before)")
    p.add_argument("--keys", type=int, default=12)
    p.add_argument("--clients", type=int, default=3)
    p.add_argument("--pause", type=float, default=0.01, help="seconds between a client's operations")
    p.add_argument("--op-timeout", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--status", required=True)
    p.add_argument("--stop-file", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--max-seconds", type=float, default=600.0)
    p.add_argument("--final-timeout", type=float, default=60.0)
    return asyncio.run(Client(p.parse_args(argv)).run())


if __name__ == "__main__":
    sys.exit(main())
