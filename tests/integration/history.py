"""Load with a recorded history, for rebalancing and split tests against a
real cluster (flotilla/cluster.py): a background thread puts unique values
to a few keys and reads them back linearizably, through the shard leaders
the placement map names (refreshed on any routing error), and records every
operation with its invocation and response times. ``check()`` runs the
Wing-Gong checker (flotilla/campaign/linearizability.py) per key: every
acknowledged write is in the history, and no read returned a value older
than a write acknowledged before the read began (a stale read), nor one
never written.

A put whose answer did not arrive, or arrived as an error that does not
prove nothing was done, has an unknown outcome (complete = INF): the checker
may place it anywhere after its invocation, or drop it. Routing errors
(NotLeader, EpochNotMatch, WrongShard, ShardNotFound) prove nothing was done.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from flotilla.campaign.linearizability import INF, RegOp, check
from flotilla.cluster import Cluster
from flotillapb import placement_pb2 as ppb
from flotillapb import store_pb2 as spb
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from shard import slots

_ROUTER_IDS = itertools.count(770_001)
"""One router id per Load: a new Load's seqs start at 1 again, which the
shards' dedup windows of an earlier Load's router id would refuse."""

_NOTHING_DONE = ("not_leader", "epoch_not_match", "wrong_shard", "shard_not_found")


@dataclass
class Route:
    shard_id: int
    node_id: int
    epoch: spb.ShardEpoch


@dataclass
class Load:
    """Use as a context manager: the load runs inside the block."""

    c: Cluster
    keys: tuple[bytes, ...] = ()
    """Keys never written before (default: 8 named after the router id), so each starts absent."""
    router_id: int = field(default_factory=lambda: next(_ROUTER_IDS))
    pause_s: float = 0.01
    rpc_timeout_s: float = 5.0
    ops: dict[bytes, list[RegOp]] = field(default_factory=dict)
    stale_reads: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _seq: int = 0
    _map: ppb.ClusterMap | None = None
    _failure: BaseException | None = None

    def __post_init__(self) -> None:
        if not self.keys:
            self.keys = tuple(b"hist%d-%d" % (self.router_id, i) for i in range(8))

    # -- lifecycle --------------------------------------------------------------
    def __enter__(self) -> Load:
        self._thread = threading.Thread(target=self._run, name="history-load", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            assert not self._thread.is_alive(), "load thread did not stop"
            self._thread = None

    def _run(self) -> None:
        try:
            i = 0
            deadline = time.monotonic() + 900  # bounded even if nobody stops it
            while not self._stop.is_set() and time.monotonic() < deadline:
                key = self.keys[i % len(self.keys)]
                if i % 3 == 2:
                    self._get(key)
                else:
                    self._put(key, b"%s=%d" % (key, i))
                i += 1
                self._stop.wait(self.pause_s)
        except BaseException as exc:  # surfaced by check()
            self._failure = exc

    # -- routing ------------------------------------------------------------------
    def _route(self, key: bytes) -> Route | None:
        m = self._map
        if m is None:
            try:
                m = self._map = self.c.get_map(linearizable=False)
            except Exception:  # placement busy: try later
                return None
        slot = slots.slot_of(key, m.slot_count)
        for s in m.shards:
            d = s.descriptor
            if any(r.start <= slot < r.end for r in d.slots):
                if not d.leader_node_id or d.leader_node_id not in self.c.stores.live():
                    self._map = None
                    return None
                return Route(d.shard_id, d.leader_node_id, d.epoch)
        self._map = None
        return None

    def _call(self, fn: Callable[[Route], Any], key: bytes) -> tuple[str, Any]:
        """('ok', response) | ('nothing', None) | ('unknown', None)."""
        r = self._route(key)
        if r is None:
            return "nothing", None
        try:
            resp = fn(r)
        except grpc.RpcError as exc:
            self._count(f"rpc {exc.code().name}")  # type: ignore[attr-defined]
            self._map = None
            return "unknown", None
        if resp.header.HasField("error"):
            err = resp.header.error
            kind = (err.routing.WhichOneof("error") if err.HasField("routing") else "kv") or "error"
            self._count(kind)
            self._map = None
            return ("nothing" if kind in _NOTHING_DONE else "unknown"), None
        return "ok", resp

    def _count(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    def _header(self, r: Route, seq: int = 0) -> spb.RequestHeader:
        return spb.RequestHeader(shard_id=r.shard_id, epoch=r.epoch, router_id=self.router_id if seq else 0, seq=seq)

    def _put(self, key: bytes, value: bytes) -> None:
        self._seq += 1
        seq = self._seq
        invoke = time.monotonic()
        outcome, _ = self._call(
            lambda r: self.c.stores.store(r.node_id).Put(
                spb.ShardPutRequest(header=self._header(r, seq), request=epb.PutRequest(key=key, value=value)),
                timeout=self.rpc_timeout_s,
            ),
            key,
        )
        if outcome == "nothing":
            return
        complete = time.monotonic() if outcome == "ok" else INF
        self.ops.setdefault(key, []).append(RegOp("put", invoke, complete, arg=value))

    def _get(self, key: bytes) -> None:
        invoke = time.monotonic()
        outcome, resp = self._call(
            lambda r: self.c.stores.store(r.node_id).Range(
                spb.ShardRangeRequest(header=self._header(r), consistency=spb.READ_LINEARIZABLE, request=epb.RangeRequest(key=key)),
                timeout=self.rpc_timeout_s,
            ),
            key,
        )
        if outcome != "ok":
            return  # a read with no answer says nothing
        value = resp.response.kvs[0].value if resp.response.kvs else None
        self.ops.setdefault(key, []).append(RegOp("get", invoke, time.monotonic(), output=value))

    def read_all(self, timeout_s: float = 60.0) -> None:
        """After stop(): one answered linearizable read of every key, added
        to the history (every acknowledged write must still be readable)."""
        assert self._thread is None, "stop() first"
        deadline = time.monotonic() + timeout_s
        for key in self.keys:
            before = self.reads()
            while self.reads() == before:
                assert time.monotonic() < deadline, f"no answered read of {key!r} (errors {self.errors})"
                self._get(key)
                if self.reads() == before:
                    time.sleep(0.1)  # sleep-ok: backoff between retries of a refused read (leader moving)

    # -- checking -------------------------------------------------------------------
    def acked_puts(self) -> int:
        return sum(1 for ops in self.ops.values() for o in ops if o.kind == "put" and o.complete != INF)

    def reads(self) -> int:
        return sum(1 for ops in self.ops.values() for o in ops if o.kind == "get")

    def check(self, *, min_acked: int = 5, min_reads: int = 2) -> None:
        """Raise AssertionError unless every key's history is linearizable
        (so no read was stale) and the load did real work."""
        self.stop()
        if self._failure is not None:
            raise AssertionError("the load thread failed") from self._failure
        assert self.acked_puts() >= min_acked, f"only {self.acked_puts()} acknowledged puts (errors {self.errors})"
        assert self.reads() >= min_reads, f"only {self.reads()} reads answered (errors {self.errors})"
        for key, ops in sorted(self.ops.items()):
            for i, o in enumerate(ops):
                object.__setattr__(o, "id", i)
            res = check(ops, max_steps=5_000_000)
            assert res.ok, f"{key!r}: history not linearizable ({res.result.value}): {res.detail}"
            self.check_no_stale_read(key, ops)

    @staticmethod
    def check_no_stale_read(key: bytes, ops: list[RegOp]) -> None:
        """The simpler per-key rule, stated on its own: a read returns the
        value of a write that was invoked before the read answered, and
        that is not older than the last write acknowledged before the read
        began (the values of one key are written in order by one thread)."""
        order = {o.arg: n for n, o in enumerate(o for o in ops if o.kind == "put")}
        for r in (o for o in ops if o.kind == "get"):
            acked_before = [order[w.arg] for w in ops if w.kind == "put" and w.complete < r.invoke]
            floor = max(acked_before, default=-1)
            got = order.get(r.output, -1) if r.output is not None else -1
            assert r.output is None or r.output in order, f"{key!r}: read {r.output!r}, never written"
            assert got >= floor, f"{key!r}: stale read {r.output!r} at {r.invoke:.3f}, after a write acknowledged before it"
