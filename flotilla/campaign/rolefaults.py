"""Faults of the placement servers and the router, for the nemesis
(flotilla/campaign/nemesis.py): kill -9 (restarted on its port) or pause of
the placement leader or a follower, of the router; a router restarted with
a crash point of a txn across shards armed (ROUTER_CRASH_POINTS, in
FLOTILLA_CRASH_AT: the router exits as a kill -9 would when its n-th such
txn passes the point), then restarted without it. Blocking calls."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from typing import Callable

import grpc

from flotilla.campaign.kinds import ROUTER_CRASH_POINTS
from flotilla.cluster import Cluster, wait_until
from flotilla.router_main import RouterProcess
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc as eg

CRASH_WINDOW_S = 8.0
"""How long a router with a crash point armed runs before the nemesis gives up on it firing."""

__all__ = ["RoleFaults"]


class RoleFaults:
    """Part of Nemesis: placement server and router faults. Nemesis supplies
    the attributes below and ``_router_serves``."""

    cluster: Cluster
    rng: random.Random
    election_timeout_s: float
    heal_timeout_s: float
    router: RouterProcess | None
    router_down: threading.Event
    _router_serves: Callable[[], bool]
    crashpoints_fired: int
    crashpoints_not_fired: int
    crashpoints_by_point: Counter
    log: Callable[[str], None]

    # -- placement servers and the router ------------------------------------------------------
    def _placement_fault(self, kind: str) -> tuple[list[int], str]:
        pl = self.cluster.placement
        leader = pl.wait_leader(timeout=self.heal_timeout_s)
        if kind == "kill_placement_leader":
            victim = leader
        elif kind == "kill_placement_follower":
            victim = self.rng.choice([n for n in pl.live() if n != leader])
        else:
            victim = self.rng.choice(sorted(pl.live()))
        role = "leader" if victim == leader else "follower"
        if kind == "pause_placement":
            p = pl.nodes[victim]
            p.send_signal(signal.SIGSTOP)
            try:
                hold = self.election_timeout_s * self.rng.uniform(1.5, 3.0)
                time.sleep(hold)  # sleep-ok: nemesis pause duration
            finally:
                p.send_signal(signal.SIGCONT)
            return [victim], f"placement {role} {victim} SIGSTOP {hold:.2f}s"
        pl.nodes[victim].kill()
        down = self.election_timeout_s * self.rng.uniform(0.5, 2.5)
        time.sleep(down)  # sleep-ok: nemesis pause duration (how long the node stays down)
        pl.restart(victim)
        return [victim], f"placement {role} {victim} killed, down {down:.2f}s"

    def _router_fault(self, kind: str) -> tuple[list[int], str]:
        r = self.router
        if r is None:
            raise ValueError(f"{kind}: the nemesis was given no router")
        if kind == "crashpoint_router":
            return [], self._router_crashpoint(r)
        hold = self.election_timeout_s * self.rng.uniform(1.0, 3.0)
        if kind == "pause_router":
            r.send_signal(signal.SIGSTOP)
            try:
                time.sleep(hold)  # sleep-ok: nemesis pause duration
            finally:
                r.send_signal(signal.SIGCONT)
            return [], f"router SIGSTOP {hold:.2f}s"
        port = r.port
        self.router_down.set()
        try:
            r.kill()
            time.sleep(hold)  # sleep-ok: nemesis pause duration (how long the router stays down)
            r.start(port=port)
            wait_until(self._router_serves, timeout=self.heal_timeout_s, what="the restarted router serving")
        finally:
            self.router_down.clear()
        return [], f"router killed, restarted on port {port} after {hold:.2f}s"

    def _restart_router(self, r: RouterProcess, port: int, crash_at: str | None = None) -> None:
        """Kill the router if it runs, start it on port (with FLOTILLA_CRASH_AT
        if given) and wait until it serves; clients hold their operations meanwhile."""
        self.router_down.set()
        try:
            if r.proc is not None and r.proc.poll() is None:
                r.kill()
            old = os.environ.get("FLOTILLA_CRASH_AT")
            if crash_at is not None:
                os.environ["FLOTILLA_CRASH_AT"] = crash_at
            try:
                r.start(port=port)
            finally:
                if crash_at is not None:
                    if old is None:
                        os.environ.pop("FLOTILLA_CRASH_AT", None)
                    else:
                        os.environ["FLOTILLA_CRASH_AT"] = old
            wait_until(self._router_serves, timeout=self.heal_timeout_s, what="the restarted router serving")
        finally:
            self.router_down.clear()

    def _router_crashpoint(self, r: RouterProcess) -> str:
        """Restart the router with a txn crash point armed; let the
        workload's txns (and, every 0.3 s, one of the nemesis's own over two
        shards, in case the workload sends none) reach it; then restart it
        without. A txn it coordinated when it died is left to the next
        request that meets its locks (DESIGN.md, "Transactions across shards")."""
        point = self.rng.choice(ROUTER_CRASH_POINTS)
        spec = f"{point}:{self.rng.randint(1, 4)}"
        port = r.port
        self._restart_router(r, port, crash_at=spec)
        assert r.proc is not None
        stores = self.cluster.stores
        keys: dict[int, bytes] = {}
        for i in range(10_000):
            k = f"nemesis/txn/{i}".encode()
            keys.setdefault(stores.shard_of(k), k)
            if len(keys) == 2:
                break
        txn = epb.TxnRequest(success=[epb.RequestOp(request_put=epb.PutRequest(key=k, value=b"x")) for k in keys.values()])
        ch = grpc.insecure_channel(r.address)
        deadline = time.monotonic() + CRASH_WINDOW_S
        try:
            while r.proc.poll() is None and time.monotonic() < deadline:
                try:
                    eg.KVStub(ch).Txn(txn, timeout=2)
                except grpc.RpcError:
                    pass  # the router died at the point (or the txn timed out)
                time.sleep(0.3)  # sleep-ok: pace of the nemesis's own txns while it waits for the crash point
        finally:
            ch.close()
        fired = r.proc.poll() == 137
        self.crashpoints_fired += fired
        self.crashpoints_not_fired += not fired
        self.crashpoints_by_point[f"router:{point}:{'fired' if fired else 'not_fired'}"] += 1
        self._restart_router(r, port)
        return f"router FLOTILLA_CRASH_AT={spec} {'fired' if fired else 'NOT fired (not reached in the window?)'}, restarted on port {port}"
