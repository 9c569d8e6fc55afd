"""What a `flotilla bench` run is (BenchConfig), and the key space's names
and groupings: shared by the parent (flotilla/bench/workloads.py) and its
client processes (flotilla/bench/client.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["WORKLOADS", "PAIRED", "DEFAULT_SLOTS", "STALENESS_METADATA", "BenchConfig", "KeyGroups", "key_of"]

WORKLOADS = ("put", "range", "txn-put", "txn-cross", "txn-pair", "watch")
PAIRED = ("txn-cross", "txn-pair")
DEFAULT_SLOTS = 1024
STALENESS_METADATA = "max-staleness-ms"


@dataclass(frozen=True)
class BenchConfig:
    workload: str
    endpoints: tuple[str, ...]
    clients: int = 1
    conns: int = 1
    procs: int = 0
    """client processes; 0: one per 64 clients, at most os.cpu_count()"""
    total: int = 0
    """requests to make; 0: run for duration_s instead"""
    duration_s: float = 10.0
    key_size: int = 8
    val_size: int = 256
    key_space: int = 10_000
    consistency: str = "l"
    max_staleness_ms: int = 0
    prefill: bool = False
    """put every key of the key space once before measuring (for range)"""
    timeout_s: float = 10.0
    seed: int = 1
    cacert: str = ""
    """etcdctl's --cacert: TLS to the endpoints, trusting this CA (https:// endpoints need it)"""
    cert: str = ""
    key: str = ""
    """etcdctl's --cert/--key: the client certificate (a server with --client-cert-auth asks for it)"""
    user: str = ""
    """etcdctl's --user name:password: Authenticate once per client process, then send the token on every call"""

    def __post_init__(self) -> None:
        if self.workload not in WORKLOADS:
            raise ValueError(f"workload {self.workload!r}: one of {', '.join(WORKLOADS)}")
        if not self.endpoints:
            raise ValueError("no endpoints")
        if self.clients < 1 or self.conns < 1 or self.key_space < 1 or self.key_size < 1 or self.val_size < 0:
            raise ValueError("--clients, --conns, --key-space, --key-size must be >= 1 (--val-size >= 0)")
        if self.total <= 0 and self.duration_s <= 0:
            raise ValueError("give --total N or --duration S")
        if self.consistency not in ("l", "s"):
            raise ValueError("--consistency is l or s")
        if self.user and ":" not in self.user:
            raise ValueError("--user wants name:password")
        if bool(self.cert) != bool(self.key):
            raise ValueError("--cert and --key go together")

    def process_count(self) -> int:
        n = self.procs or min(os.cpu_count() or 1, -(-self.clients // 64))
        return max(1, min(n, self.clients))


@dataclass(frozen=True)
class KeyGroups:
    """The key space's indices grouped by shard (or slot quarter): txn-cross
    pairs keys of different groups, txn-pair keys of one group."""

    groups: tuple[tuple[int, ...], ...]
    pairing: str

    def usable(self, workload: str) -> str | None:
        """Why this grouping cannot run workload, or None."""
        if workload == "txn-cross" and len([g for g in self.groups if g]) < 2:
            return f"txn-cross needs keys on two shards; the key space's keys are all on one ({self.pairing})"
        if workload == "txn-pair" and not any(len(g) >= 2 for g in self.groups):
            return f"txn-pair needs two keys on one shard; give a larger --key-space ({self.pairing})"
        return None


def key_of(i: int, key_size: int) -> bytes:
    return b"%0*d" % (key_size, i)
