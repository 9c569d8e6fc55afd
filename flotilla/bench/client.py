"""One client process of `flotilla bench` (flotilla/bench/workloads.py starts
them with the spawn method): its event loop, channels and the coroutines
that keep its share of requests in flight, then its results sent back to
the parent."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from flotilla.bench.stats import Histogram
from flotilla.bench.config import PAIRED, STALENESS_METADATA, BenchConfig, KeyGroups, key_of

__all__ = ["Share", "worker_main"]


@dataclass(frozen=True, slots=True)
class Share:
    """One client process's part of the run."""

    proc: int
    procs: int
    clients: int
    """requests it keeps in flight"""
    conns: int
    first_conn: int
    """the index of its first channel among all processes' (channels go round-robin over the endpoints)"""
    total: int
    """requests it sends (0: until the duration ends)"""


def worker_main(cfg: BenchConfig, share: Share, start: Any, results: Any, done_counts: Any, groups: KeyGroups | None = None) -> None:
    try:
        asyncio.run(_Worker(cfg, share, start, results, done_counts, groups).main())
    except BaseException as exc:  # report, then exit non-zero: the parent raises
        results.put({"kind": "failed", "proc": share.proc, "error": f"{type(exc).__name__}: {exc}"})
        raise


class _Token(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    """Adds the `token` metadata etcd clients send (once Authenticate gave one) to every call."""

    def __init__(self) -> None:
        self.value = ""

    def _with_token(self, details: Any) -> Any:
        if not self.value:
            return details
        md = [*(details.metadata or ()), ("token", self.value)]
        return details._replace(metadata=md)

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._with_token(client_call_details), request)

    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await continuation(self._with_token(client_call_details), request_iterator)


class _Worker:
    def __init__(self, cfg: BenchConfig, share: Share, start: Any, results: Any, done_counts: Any, groups: KeyGroups | None = None) -> None:
        proc = share.proc
        self.cfg = cfg
        self.groups = groups
        self.compare_failed = 0
        self.known_revisions: dict[bytes, int] = {}
        """txn-cross, txn-pair: each key's mod revision as this process last saw it (0: absent)"""
        self.proc = proc
        self.procs = share.procs
        self.clients = share.clients
        self.remaining = share.total
        self.start = start
        self.results = results
        self.done_counts = done_counts
        self.hist = Histogram()
        self.errors: Counter[str] = Counter()
        self.first_errors: list[str] = []
        self.ops = 0
        self.rng = random.Random(cfg.seed * 1_000_003 + proc)
        self.value = self.rng.randbytes(cfg.val_size)
        self.metadata: tuple[tuple[str, str], ...] | None = (
            ((STALENESS_METADATA, str(cfg.max_staleness_ms)),) if cfg.max_staleness_ms > 0 else None
        )
        self.conns = share.conns
        self.first_conn = share.first_conn
        from flotillapb.etcd.etcdserverpb import rpc_pb2

        self.pb = rpc_pb2

    def _connect(self) -> None:
        """Channels and stubs, on the running loop (grpc.aio objects belong to one loop)."""
        from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc

        # A local subchannel pool per channel: otherwise grpc shares one
        # connection among channels to the same target, and --conns means nothing.
        options = [("grpc.use_local_subchannel_pool", 1), ("grpc.enable_http_proxy", 0)]
        eps = [e.split("://", 1)[-1] for e in self.cfg.endpoints]
        self.token = _Token()
        interceptors = [self.token] if self.cfg.user else None
        creds = None
        if self.cfg.cacert:
            read = lambda path: open(path, "rb").read() if path else None  # noqa: E731
            creds = grpc.ssl_channel_credentials(read(self.cfg.cacert), read(self.cfg.key), read(self.cfg.cert))

        def channel(target: str) -> grpc.aio.Channel:
            if creds is not None:
                return grpc.aio.secure_channel(target, creds, options=options, interceptors=interceptors)
            return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)

        self.channels = [channel(eps[(self.first_conn + j) % len(eps)]) for j in range(self.conns)]
        self._auth_stub = rpc_pb2_grpc.AuthStub(self.channels[0])
        self.kv = [rpc_pb2_grpc.KVStub(ch) for ch in self.channels]
        self.watch = [rpc_pb2_grpc.WatchStub(ch) for ch in self.channels]

    def key(self, i: int) -> bytes:
        return key_of(i, self.cfg.key_size)

    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        self._connect()
        try:
            for ch in self.channels:
                await asyncio.wait_for(ch.channel_ready(), timeout=30)
            if self.cfg.user:  # as clientv3: one Authenticate, then the token in every call's metadata
                name, _, password = self.cfg.user.partition(":")
                resp = await self._auth_stub.Authenticate(self.pb.AuthenticateRequest(name=name, password=password), timeout=30)
                self.token.value = resp.token
            if self.cfg.prefill:
                await self._prefill()
            ops = [await self._make_op(i) for i in range(self.clients)]
            self.results.put({"kind": "ready", "proc": self.proc})
            await loop.run_in_executor(None, self.start.wait)
            deadline = loop.time() + self.cfg.duration_s
            start_ns = time.monotonic_ns()
            reporter = asyncio.create_task(self._report_progress())
            await asyncio.gather(*(self._client(op, deadline) for op in ops))
            end_ns = time.monotonic_ns()
            reporter.cancel()
            self.done_counts[self.proc] = self.ops + sum(self.errors.values())
        finally:
            for ch in self.channels:
                await ch.close()
        self.results.put(
            {
                "kind": "result",
                "proc": self.proc,
                "ops": self.ops,
                "errors": dict(self.errors),
                "first_errors": self.first_errors,
                "compare_failed": self.compare_failed,
                "hist": self.hist.to_dict(),
                "start_ns": start_ns,
                "end_ns": end_ns,
            }
        )

    async def _report_progress(self) -> None:
        while True:
            self.done_counts[self.proc] = self.ops + sum(self.errors.values())
            await asyncio.sleep(0.1)

    def _take(self, loop_time: float, deadline: float) -> bool:
        if self.cfg.total > 0:
            if self.remaining <= 0:
                return False
            self.remaining -= 1
            return True
        return loop_time < deadline

    async def _client(self, op: Callable[[], Awaitable[None]], deadline: float) -> None:
        loop = asyncio.get_running_loop()
        clock = time.perf_counter_ns
        while self._take(loop.time(), deadline):
            t0 = clock()
            try:
                await op()
            except grpc.aio.AioRpcError as exc:
                self._error(exc.code().name, exc.details() or "")
                continue
            except asyncio.TimeoutError:
                self._error("CLIENT_TIMEOUT", f"no answer in {self.cfg.timeout_s} s")
                continue
            except RuntimeError as exc:  # a watch stream ended or was canceled
                self._error("WATCH", str(exc))
                continue
            self.hist.record((clock() - t0) // 1000)
            self.ops += 1

    def _error(self, code: str, details: str) -> None:
        self.errors[code] += 1
        if len(self.first_errors) < 5:
            self.first_errors.append(f"{code}: {details}")

    async def _prefill(self) -> None:
        keys = [self.key(i) for i in range(self.proc, self.cfg.key_space, self.procs)]
        pb, timeout = self.pb, self.cfg.timeout_s

        async def fill(j: int) -> None:
            kv = self.kv[j % len(self.kv)]
            for k in keys[j :: max(1, self.clients)]:
                await kv.Put(pb.PutRequest(key=k, value=self.value), timeout=timeout)

        await asyncio.gather(*(fill(j) for j in range(max(1, self.clients))))

    async def _make_op(self, i: int) -> Callable[[], Awaitable[None]]:
        cfg, pb, timeout = self.cfg, self.pb, self.cfg.timeout_s
        kv = self.kv[i % len(self.kv)]
        # Each request of put, range and txn-put takes the next channel, so even one
        # client goes through every endpoint in turn, as clientv3's round-robin
        # balancer does (other workloads keep one channel per client).
        kvs, turn = self.kv, itertools.count(i)
        n_kv = len(kvs)
        rng = random.Random(self.rng.getrandbits(64))
        space, value, key = cfg.key_space, self.value, self.key

        if cfg.workload == "put":

            async def put() -> None:
                await kvs[next(turn) % n_kv].Put(pb.PutRequest(key=key(rng.randrange(space)), value=value), timeout=timeout)

            return put
        if cfg.workload == "range":
            serializable = cfg.consistency == "s"
            md = self.metadata

            async def range_() -> None:
                await kvs[next(turn) % n_kv].Range(
                    pb.RangeRequest(key=key(rng.randrange(space)), serializable=serializable), timeout=timeout, metadata=md
                )

            return range_
        if cfg.workload == "txn-put":

            async def txn_put() -> None:
                op = pb.RequestOp(request_put=pb.PutRequest(key=key(rng.randrange(space)), value=value))
                await kvs[next(turn) % n_kv].Txn(pb.TxnRequest(success=[op]), timeout=timeout)

            return txn_put
        if cfg.workload in PAIRED:
            return self._make_paired_txn(kv, rng)
        return await self._make_watch(i, kv)

    def _make_paired_txn(self, kv: Any, rng: random.Random) -> Callable[[], Awaitable[None]]:
        """txn-cross / txn-pair: If(mod(a) = ra, mod(b) = rb) Then(put a, put b)
        Else(get a, get b), with the revisions this process last saw; a
        failed compare teaches it the current ones."""
        assert self.groups is not None
        pb, timeout, value, known = self.pb, self.cfg.timeout_s, self.value, self.known_revisions
        cross = self.cfg.workload == "txn-cross"
        groups = [g for g in self.groups.groups if len(g) >= (1 if cross else 2)]
        weights = [len(g) for g in groups]
        eq = pb.Compare.EQUAL
        mod = pb.Compare.MOD

        idx = range(len(groups))
        others = [[j for j in idx if j != i] for i in idx]  # txn-cross: b's group given a's

        def pick() -> tuple[bytes, bytes]:
            ga = rng.choices(idx, weights=weights)[0]
            if cross:
                gb = rng.choices(others[ga], weights=[weights[j] for j in others[ga]])[0]
                return self.key(rng.choice(groups[ga])), self.key(rng.choice(groups[gb]))
            a, b = rng.sample(groups[ga], 2)
            return self.key(a), self.key(b)

        async def paired_txn() -> None:
            a, b = pick()
            req = pb.TxnRequest(
                compare=[
                    pb.Compare(key=a, target=mod, result=eq, mod_revision=known.get(a, 0)),
                    pb.Compare(key=b, target=mod, result=eq, mod_revision=known.get(b, 0)),
                ],
                success=[pb.RequestOp(request_put=pb.PutRequest(key=k, value=value)) for k in (a, b)],
                failure=[pb.RequestOp(request_range=pb.RangeRequest(key=k)) for k in (a, b)],
            )
            resp = await kv.Txn(req, timeout=timeout)
            if resp.succeeded:
                known[a] = known[b] = resp.header.revision
                return
            self.compare_failed += 1
            for k, r in zip((a, b), resp.responses):
                kvs = r.response_range.kvs
                known[k] = kvs[0].mod_revision if kvs else 0

        return paired_txn

    async def _make_watch(self, i: int, kv: Any) -> Callable[[], Awaitable[None]]:
        pb, timeout = self.pb, self.cfg.timeout_s
        wkey = b"bench-watch/%d/%d/" % (self.proc, i) + b"%0*d" % (self.cfg.key_size, i)
        call = self.watch[i % len(self.watch)].Watch()
        await call.write(pb.WatchRequest(create_request=pb.WatchCreateRequest(key=wkey)))
        created = await asyncio.wait_for(call.read(), timeout=timeout)
        if not created.created:
            raise RuntimeError(f"watch on {wkey!r} not created: {created}")
        value = self.value

        async def put_then_event() -> None:
            await kv.Put(pb.PutRequest(key=wkey, value=value), timeout=timeout)
            while True:
                resp = await asyncio.wait_for(call.read(), timeout=timeout)
                if resp is grpc.aio.EOF:
                    raise RuntimeError("watch stream ended")
                if resp.canceled:
                    raise RuntimeError(f"watch canceled: {resp.cancel_reason}")
                if resp.events:
                    return

        return put_then_event
