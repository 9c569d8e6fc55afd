"""Failover under load (issue #13): kill -9 of the store leading the most
shards while several clients write through the router. A write may fail
only while its shard has no leader: none that starts 3 s after the kill
fails (the shards elect within about 2 election timeouts; the router
routes around the dead node; placement moves no leadership onto it while
it is still "up" in the map), and nothing acknowledged is lost.

placement runs with --down-after 20 s, longer than the measured window, so
the dead store stays "up" in placement's map throughout, as it does for
30 s by default."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from flotilla.cluster import Cluster, running, wait_until
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from tests.integration.routerproc import Router

pytestmark = [pytest.mark.fault, pytest.mark.integration]

WRITERS = 6
KEYS_PER_WRITER = 4
BEFORE_KILL_S = 2.0
AFTER_KILL_S = 8.0
MUST_SUCCEED_AFTER_S = 3.0


@dataclass
class Attempt:
    writer: int
    key: bytes
    value: int
    start: float
    end: float
    error: str = ""


@dataclass
class Writers:
    """WRITERS threads, each putting increasing values to its own keys, one
    put at a time, through the router; every attempt is recorded."""

    router: Router
    attempts: list[Attempt] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Writers:
        for w in range(WRITERS):
            t = threading.Thread(target=self._run, args=(w,), name=f"writer-{w}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def _run(self, w: int) -> None:
        keys = [b"failover/%d/%d" % (w, i) for i in range(KEYS_PER_WRITER)]
        value = 0
        while not self._stop.is_set():
            value += 1
            key = keys[value % KEYS_PER_WRITER]
            start = time.monotonic()
            error = ""
            try:
                self.router.kv.Put(epb.PutRequest(key=key, value=b"%d" % value), timeout=10)
            except grpc.RpcError as exc:
                error = f"{exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
            with self._lock:
                self.attempts.append(Attempt(w, key, value, start, time.monotonic(), error))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Path]]:
    tmp = tmp_path_factory.mktemp("failover")
    with running(Cluster(tmp, down_after_s=20.0)) as c:
        yield c, tmp


def test_no_write_started_after_the_new_leaders_fails_and_nothing_acknowledged_is_lost(cluster: tuple[Cluster, Path]) -> None:
    c, tmp = cluster
    router = Router(c, tmp / "router")
    try:
        leaders = wait_until(c.stores.all_shards_led, timeout=60, what="every shard led")
        assert leaders is not None
        wait_until(lambda: router.put(b"failover/ready", b"1") or True, timeout=60, what="the router writes")
        with Writers(router) as writers:
            wait_until(lambda: len(writers.attempts) >= 50, timeout=BEFORE_KILL_S * 10, what="writes before the kill")
            leaders = c.stores.all_shards_led() or leaders
            victim = max(sorted(set(leaders.values())), key=lambda n: Counter(leaders.values())[n])
            killed_at = time.monotonic()
            c.stores.kill(victim)
            wait_until(lambda: time.monotonic() - killed_at >= AFTER_KILL_S, timeout=AFTER_KILL_S * 3, what="writes after the kill",
                       interval=0.1)
        attempts = list(writers.attempts)

        late_failures = [a for a in attempts if a.error and a.start >= killed_at + MUST_SUCCEED_AFTER_S]
        after = [a for a in attempts if a.start >= killed_at + MUST_SUCCEED_AFTER_S]
        assert after, "no write started 3 s after the kill"
        assert not late_failures, (
            f"{len(late_failures)} of {len(after)} writes started {MUST_SUCCEED_AFTER_S} s after the kill of store {victim} failed; "
            f"first: {late_failures[0]}"
        )

        # Nothing acknowledged is lost: each key holds its last acknowledged
        # value, or a later one whose put's outcome was unknown.
        last_acked: dict[bytes, int] = {}
        for a in attempts:
            if not a.error:
                last_acked[a.key] = max(last_acked.get(a.key, 0), a.value)
        for key, value in sorted(last_acked.items()):
            got = router.get(key)
            assert got is not None and int(got) >= value, f"{key!r}: acknowledged {value}, read {got!r}"
    except BaseException:
        print(router.proc.log_tail(80))
        raise
    finally:
        router.stop()
