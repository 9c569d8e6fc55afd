"""Faults of the placement servers and the router, for the nemesis
(flotilla/campaign/nemesis.py): kill -9 (restarted on its port) or pause of
the placement leader or a follower, of the router. Blocking calls."""

from __future__ import annotations

import random
import signal
import threading
import time
from typing import Callable

from flotilla.cluster import Cluster, wait_until
from flotilla.router_main import RouterProcess

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
